"""scikit-learn's bundled digits (16x16 grayscale, 10 classes): the embedded quickstart dataset.

Sized for a 2-core CPU: 5 ConvNet-3 experts x 20 epochs, 200 condensation iterations, evaluation
networks trained for 300 epochs. --reproduce uses the same values.
"""
SETTINGS = {
    "common": dict(eval_epochs=300, eval_interval=100),
    "pretrain": dict(pretrain_amount=5, pretrain_epochs=20),
    "condense": dict(niter=200, eval_every=100, lr_img_per_ipc=0.01),
}

REPRODUCE = {}
