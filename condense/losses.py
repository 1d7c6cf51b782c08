"""The losses of DANCE's two views, each summed over classes.

Inner-class view: in the iteration's middle encoder, a discrepancy between the features of each class's real and
synthetic images (DANCE: the squared distance of their means). Inter-class view (calibration): the trained
expert's cross-entropy on the synthetic images.

Every loss is a sum of per-class terms, so one class alone, a chunk of classes or every class at once give the same
sum (up to float order): the per_class schedule calls a loss on one class, the joint schedule on several with
their class ids. An alignment takes (feat_real, feat_syn) of one class, or of several with `groups_real`,
`groups_syn` (class ids 0..nclass-1) and `nclass`. Adding one is a function here and its name in ALIGNMENTS.
"""
import torch.nn.functional as F


def class_means(features, groups, nclass):
    """Mean feature of each class: (nclass, D) from features (N, D) and class ids (N,)."""
    sums = features.new_zeros(nclass, features.shape[1]).index_add_(0, groups, features)
    counts = features.new_zeros(nclass).index_add_(0, groups, features.new_ones(len(groups)))
    return sums / counts.clamp(min=1)[:, None]


def inner_class_loss(feat_real, feat_syn, groups_real=None, groups_syn=None, nclass=1):
    """Sum over classes of ||mean phi(syn_c) - mean phi(real_c)||^2 (one class when no groups).

    DANCE's and DM's alignment (the official DANCE.py, `condense`): squared L2 of the mean difference, no square
    root, no normalisation by the feature size.
    """
    if groups_real is None:
        return ((feat_syn.mean(0) - feat_real.mean(0)) ** 2).sum()
    diff = class_means(feat_syn, groups_syn, nclass) - class_means(feat_real, groups_real, nclass)
    return (diff ** 2).sum()


# The inner-class discrepancies by name.
ALIGNMENTS = {"mean": inner_class_loss}


def calibration_loss(logits, labels):
    """The expert's cross-entropy, averaged within each class and summed over classes."""
    nclass = logits.shape[1]
    ce = F.cross_entropy(logits, labels, reduction="none")
    sums = ce.new_zeros(nclass).index_add_(0, labels, ce)
    counts = ce.new_zeros(nclass).index_add_(0, labels, ce.new_ones(len(ce)))
    return (sums / counts.clamp(min=1)).sum()
