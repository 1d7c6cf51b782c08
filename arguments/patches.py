"""Patches of scikit-image's bundled colour images (16x16 RGB, 10 classes; data/photo_patches.py): the embedded
benchmark that separates methods (README, "A benchmark that separates methods"). Not in the paper's tables. Sized
for a 2-core CPU like digits: ConvNet-3 at width 0.25, 5 experts x 30 epochs, 200 condensation iterations,
evaluation networks trained for 300 epochs; multi-formation factor 2 (the paper's setting), so a real-image baseline
of the same budget tiles 4 patches per stored image too."""
SETTINGS = {
    "common": dict(width=0.25, eval_epochs=300, eval_interval=100),
    "pretrain": dict(pretrain_amount=5, pretrain_epochs=30),
    "condense": dict(niter=200, eval_every=100, lr_img_per_ipc=0.01, factor=2),
    "evaluate": dict(factor=2),
}
