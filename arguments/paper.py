"""The paper's two recipes, defined once; each dataset's settings file names the one it uses under --reproduce.

Both are the official code's reproduce settings (arguments/reproduce_pretrain.py and reproduce_condense.py,
`set_arguments`). Keys are flags; "common" applies to pretrain.py, DANCE.py and evaluate.py alike. Both run in
fp32, the paper's arithmetic (the default, auto, would pick bf16 on devices that compute it natively).
"""

# Table 1 (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN, Tiny-ImageNet): 20 experts x ConvNet-3 x 60 epochs, then
# 10,000 iterations with lr_img = 0.01 x ipc; evaluation trains ConvNet-3 for 1500 epochs (the parser's default).
LOW_RESOLUTION = {
    "common": dict(net_type="convnet", depth=3, precision="fp32"),
    "pretrain": dict(pretrain_amount=20, pretrain_epochs=60),
    "condense": dict(niter=10000, lr_img_per_ipc=0.01),
}

# Table 2 (ImageNet subsets at 128x128): 5 experts x ConvNet-5 x 80 epochs in batches of 128, then 10,000
# iterations with lr_img = 0.1 x ipc.
IMAGENET_SUBSETS = {
    "common": dict(net_type="convnet", depth=5, precision="fp32"),
    "pretrain": dict(pretrain_amount=5, pretrain_epochs=80, batch_real=128),
    "condense": dict(niter=10000, lr_img_per_ipc=0.1, batch_real=128),
}

# The ImageNet subsets' settings with or without --reproduce: ConvNet-5, evaluation epochs from the ipc table
# (the official `ipc_epoch`), test checks every 500 epochs.
IMAGENET_SUBSET_SETTINGS = {
    "common": dict(depth=5, eval_epochs=None, eval_interval=500),
}
