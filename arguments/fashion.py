"""Fashion-MNIST: Table 1, FMNIST: 81.5 / 86.3 / 86.9 at IPC 1 / 10 / 50 (ConvNet-3).

Reproduce (REFERENCE.md 1.1.1, 1.2): 20 experts x ConvNet-3-IN x 60 epochs, then 10,000
iterations with lr_img = 0.01 x ipc; evaluation trains ConvNet-3 for 1500 epochs.
"""
SETTINGS = {}

REPRODUCE = {
    "common": dict(net_type="convnet", depth=3),
    "pretrain": dict(pretrain_amount=20, pretrain_epochs=60),
    "condense": dict(niter=10000, lr_img_per_ipc=0.01),
}
