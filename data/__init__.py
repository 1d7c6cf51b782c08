"""Real data (datasets, on-disk formats, class batches, augmentation, keyed draws) and the synthetic set."""
