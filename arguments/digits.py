"""scikit-learn's bundled digits (16x16 grayscale, 10 classes): the embedded quickstart dataset.

Sized for a 2-core CPU: ConvNet-3 at width 0.25 (32 channels), 5 experts x 30 epochs (about
1 minute), 200 condensation iterations (about 1 minute at IPC 10), evaluation networks trained
for 300 epochs. --reproduce uses the same values.
"""
SETTINGS = {
    "common": dict(width=0.25, eval_epochs=300, eval_interval=100),
    "pretrain": dict(pretrain_amount=5, pretrain_epochs=30),
    "condense": dict(niter=200, eval_every=100, lr_img_per_ipc=0.01),
}

REPRODUCE = {}
