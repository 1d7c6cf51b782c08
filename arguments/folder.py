"""Your own ImageFolder data (`--data_dir` holding train/ and val/ class folders, resized to --size).

No paper numbers; the small-dataset recipe of the paper is a reasonable start.
"""
SETTINGS = {}

REPRODUCE = {
    "common": dict(net_type="convnet", depth=3),
    "pretrain": dict(pretrain_amount=20, pretrain_epochs=60),
    "condense": dict(niter=10000, lr_img_per_ipc=0.01),
}
