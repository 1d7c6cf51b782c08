"""ImageWoof (128x128): Table 2, 30.6 / 57.8 at IPC 1 / 10 (ConvNet-5).

Reproduce (REFERENCE.md 1.1.1, 1.2): 5 experts x ConvNet-5-IN x 80 epochs (batch 128), then
10,000 iterations with lr_img = 0.1 x ipc; evaluation epochs follow the ipc table.
"""
SETTINGS = {
    "common": dict(depth=5, eval_epochs=None, eval_interval=500),
}

REPRODUCE = {
    "common": dict(net_type="convnet", depth=5),
    "pretrain": dict(pretrain_amount=5, pretrain_epochs=80, batch_real=128),
    "condense": dict(niter=10000, lr_img_per_ipc=0.1, batch_real=128),
}
