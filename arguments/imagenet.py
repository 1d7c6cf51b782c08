"""ImageNet-10 / ImageNet-100 (224x224, classes from data/classes/class100.txt): not in the paper's tables.

The official code's settings: ResNetAP-10, 10,000 iterations, lr_img 5e-3. For ImageNet-100 it also
uses --lr 0.1 --weight_decay 1e-4 --batch_size 128, and --decode_type bound when factor >= 3 and
ipc >= 20; pass those flags yourself (a settings file holds values, not rules).
"""
SETTINGS = {
    "common": dict(net_type="resnet_ap", depth=10, eval_epochs=None, eval_interval=500),
}

REPRODUCE = {
    "common": dict(net_type="resnet_ap", depth=10),
    "pretrain": dict(pretrain_amount=5, pretrain_epochs=80, batch_real=128),
    "condense": dict(niter=10000),
}
