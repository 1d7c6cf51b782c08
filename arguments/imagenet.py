"""ImageNet-10 / ImageNet-100 (224x224, classes from data/classes/class100.txt): not in the paper's tables.

The official code's settings (its reproduce settings and the dataset block after parsing): ResNetAP-10;
networks trained on a set use the torchvision ImageNet augmentation (random resized crop, flip, colour jitter,
lighting) instead of DSA, with CutMix on every batch (mix_p 1.0). `rules` holds what depends on other settings:
with 100 classes, lr 0.1, weight decay 1e-4 and batches of at least 128 (always, as the official dataset block);
under --reproduce, batch_real 128 for 10 classes and decode_type 'bound' when factor >= 3 and ipc >= 20.
"""
SETTINGS = {
    "common": dict(net_type="resnet_ap", depth=10, eval_epochs=None, eval_interval=500, eval_aug="imagenet",
                   mix_p=1.0),
}

REPRODUCE = {
    "common": dict(net_type="resnet_ap", depth=10, precision="fp32"),
    "pretrain": dict(pretrain_amount=5, pretrain_epochs=80, batch_real=128),
    "condense": dict(niter=10000),
}


def rules(script, a, reproduce):
    """Settings the official code derives from --nclass, --factor and --ipc; flags given by hand win."""
    out = {}
    if a.nclass >= 100:
        out.update(lr=0.1, weight_decay=1e-4, batch_size=max(128, a.batch_size))
        if script != "evaluate":
            out["batch_real"] = max(128, a.batch_real)
    if reproduce and script == "condense":
        if a.nclass == 10:
            out["batch_real"] = 128
        if a.factor >= 3 and a.ipc >= 20:
            out["decode_type"] = "bound"
    return out
