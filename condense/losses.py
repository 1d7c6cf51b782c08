"""The losses of DANCE's two views, each summed over classes.

Inner-class view: in the iteration's middle encoder, a discrepancy between the features of each class's real and
synthetic images (DANCE: the squared distance of their means; `--align` picks another). Inter-class view
(calibration): the trained expert's cross-entropy on the synthetic images.

Every loss is a sum of per-class terms, so one class alone, a chunk of classes or every class at once give the same
sum (up to float order): the per_class schedule calls an alignment on one class, the joint schedule on several. An
alignment is called as

    align(feat_real, feat_syn, groups_real=None, groups_syn=None, nclass=1, counts=None, classes=(0,), draws=None)

with the features of one class (no groups), or of `nclass` classes in class-major order with their class ids
(`groups_*`, 0..nclass-1, on the device) and their sizes (`counts` = (real sizes, synthetic sizes), host ints);
`classes` are the classes' ids in the dataset and `draws` the iteration's keyed draws (data/streams.py), for an
alignment that draws (the frequencies of `cf`). Adding one is a function here and its name in ALIGNMENTS; its
settings come in as keywords bound once (functools.partial).
"""
import torch
import torch.nn.functional as F

PHASE_FLOOR = 1e-12  # NCFM's clamp of the phase term, so the square root stays differentiable


def class_means(features, groups, nclass):
    """Mean feature of each class: (nclass, D) from features (N, D) and class ids (N,)."""
    sums = features.new_zeros(nclass, features.shape[1]).index_add_(0, groups, features)
    counts = features.new_zeros(nclass).index_add_(0, groups, features.new_ones(len(groups)))
    return sums / counts.clamp(min=1)[:, None]


def inner_class_loss(feat_real, feat_syn, groups_real=None, groups_syn=None, nclass=1, **_):
    """`mean`: sum over classes of ||mean phi(syn_c) - mean phi(real_c)||^2 (one class when no groups).

    DANCE's and DM's alignment (the official DANCE.py, `condense`): squared L2 of the mean difference, no square
    root, no normalisation by the feature size.
    """
    if groups_real is None:
        return ((feat_syn.mean(0) - feat_real.mean(0)) ** 2).sum()
    diff = class_means(feat_syn, groups_syn, nclass) - class_means(feat_real, groups_real, nclass)
    return (diff ** 2).sum()


def per_class(term, feat_real, feat_syn, counts=None, classes=(0,)):
    """Sum over the classes of term(real_c, syn_c, class id), the features split by `counts` (one class without)."""
    if counts is None:
        return term(feat_real, feat_syn, classes[0])
    total = 0.0
    for real, syn, c in zip(feat_real.split(counts[0]), feat_syn.split(counts[1]), classes):
        total = total + term(real, syn, c)
    return total


def squared_distances(a, b):
    """||a_i - b_j||^2 for all pairs, (n, m), clamped at 0 (the expansion can round below it)."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2 * a @ b.t()).clamp(min=0)


def gaussian_mmd(real, syn, bandwidths=(0.5, 1.0, 2.0), h=None):
    """Squared MMD of one class with a sum of Gaussian kernels, the biased (V-statistic) estimate:

        MMD^2 = mean_ij k(r_i, r_j) + mean_ij k(s_i, s_j) - 2 mean_ij k(r_i, s_j),
        k(x, y) = sum_b exp(-||x - y||^2 / (w_b * h)),  h = median of the pooled pairwise squared distances

    (Gretton et al. 2012, Lemma 6 with empirical means). M3D (Zhang et al., AAAI 2024) minimises this MMD between
    real and synthetic features in a Gaussian RKHS. The V-statistic keeps the i = j terms, so it is defined for one
    synthetic image (IPC 1 at factor 1) and never negative. The bandwidth follows the median heuristic (Gretton et
    al. 2012, Section 8), detached: the middle encoder's feature scale changes by orders of magnitude with lambda,
    where any fixed bandwidth would leave the kernel flat; the multiples `bandwidths` of it keep a scale that
    resolves the real-synthetic gap when the median is dominated by the within-class spread. `h` given: that
    bandwidth scale instead of the median.
    """
    pooled = torch.cat([real, syn])
    d = squared_distances(pooled, pooled)
    h = d.detach().median().clamp(min=1e-12) if h is None else h
    k = sum(torch.exp(-d / (w * h)) for w in bandwidths)
    n = len(real)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def mmd_loss(feat_real, feat_syn, groups_real=None, groups_syn=None, nclass=1, counts=None, classes=(0,),
             bandwidths=(0.5, 1.0, 2.0), **_):
    """`mmd`: sum over classes of `gaussian_mmd` of their real and synthetic features."""
    return per_class(lambda r, s, c: gaussian_mmd(r, s, bandwidths), feat_real, feat_syn, counts, classes)


def characteristic_function(features, t):
    """Real and imaginary parts of the empirical characteristic function at frequencies t (F, D):
    Phi(t) = mean_i exp(i <t, x_i>), each (F,)."""
    projection = t @ features.t()  # (F, N)
    return torch.cos(projection).mean(1), torch.sin(projection).mean(1)


def cf_discrepancy(real, syn, t, alpha=0.5, beta=0.5):
    """NCFM's characteristic-function discrepancy of one class at frequencies t (Wang et al., CVPR 2025):

        mean_t sqrt( alpha * (|Phi_r(t)| - |Phi_s(t)|)^2
                     + beta * 2 (|Phi_r(t)| |Phi_s(t)| - Re Phi_r(t) Re Phi_s(t) - Im Phi_r(t) Im Phi_s(t)) )

    the amplitude difference and the phase difference (2|Phi_r||Phi_s|(1 - cos of the phase gap)), the latter
    clamped at 1e-12 as NCFM does. Features are L2-normalised first, as NCFM's `match_loss` does.
    """
    real, syn = F.normalize(real, dim=1), F.normalize(syn, dim=1)
    re_r, im_r = characteristic_function(real, t)
    re_s, im_s = characteristic_function(syn, t)
    amp_r, amp_s = torch.sqrt(re_r ** 2 + im_r ** 2), torch.sqrt(re_s ** 2 + im_s ** 2)
    phase = (2 * (amp_r * amp_s - re_r * re_s - im_r * im_s)).clamp(min=PHASE_FLOOR)
    return torch.sqrt(alpha * (amp_r - amp_s) ** 2 + beta * phase).mean()


def cf_loss(feat_real, feat_syn, groups_real=None, groups_syn=None, nclass=1, counts=None, classes=(0,), draws=None,
            alpha=0.5, beta=0.5, frequencies=4096, sampler=None, **_):
    """`cf`: the sum over classes of `cf_discrepancy`, at frequencies t ~ N(0, I) drawn for each
    class and iteration from the keyed draws (so a class draws the same t on any process), or produced by the
    learned sampling network `sampler(class id, draws)` (NCFM's, condense/frequency_network.py)."""
    def term(real, syn, c):
        if sampler is not None:
            t = sampler(c, draws)
        elif draws is not None:
            t = draws.normal(frequencies, real.shape[1], "frequencies", c)
        else:
            t = torch.randn(frequencies, real.shape[1], device=real.device)
        return cf_discrepancy(real, syn, t.to(real.dtype), alpha, beta)

    return per_class(term, feat_real, feat_syn, counts, classes)


def covariance_gap(real, syn):
    """||Cov(real) - Cov(syn)||_F^2 with biased covariances, through n x n Gram matrices (no D x D matrix):
    tr(Cr^2) - 2 tr(Cr Cs) + tr(Cs^2), tr(Ca Cb) = ||A B^T||_F^2 / (n_a n_b) for centred A, B."""
    a, b = real - real.mean(0), syn - syn.mean(0)
    n, m = len(a), len(b)
    return ((a @ a.t()).pow(2).sum() / n ** 2 - 2 * (a @ b.t()).pow(2).sum() / (n * m)
            + (b @ b.t()).pow(2).sum() / m ** 2)


def moments_loss(feat_real, feat_syn, groups_real=None, groups_syn=None, nclass=1, counts=None, classes=(0,),
                 mean_weight=1.0, cov_weight=1.0, **_):
    """`moments`: sum over classes of mean_weight ||mu_r - mu_s||^2 + cov_weight ||Cov_r - Cov_s||_F^2 / D, DSDM's
    idea (match the covariance beside the mean) with the covariance gap normalised by the feature size D."""
    def term(real, syn, c):
        gap = ((syn.mean(0) - real.mean(0)) ** 2).sum()
        return mean_weight * gap + cov_weight * covariance_gap(real, syn) / real.shape[1]

    return per_class(term, feat_real, feat_syn, counts, classes)


# --align: the inner-class discrepancies by name
ALIGNMENTS = {"mean": inner_class_loss, "mmd": mmd_loss, "cf": cf_loss, "moments": moments_loss}
# --align_scale's defaults: the scale that gives an alignment the median pixel-gradient norm of mean's, measured at the
# start of condensation on digits (trained experts, random lambda, IPC 10, 12 draws: mmd 0.45x mean's, cf 0.046x,
# moments 1.0x). NCFM multiplies its loss by 300 but steps with AdamW, which ignores the scale; under DANCE's SGD
# that would be a 14x larger step than mean's.
DEFAULT_SCALES = {"mean": 1.0, "mmd": 2.0, "cf": 20.0, "moments": 1.0}


def scaled(align, scale):
    """`align` with its loss multiplied by `scale` (`align` itself at scale 1)."""
    if scale == 1:
        return align

    def scaled_align(*args, **kwargs):
        return scale * align(*args, **kwargs)

    return scaled_align


def calibration_loss(logits, labels):
    """The expert's cross-entropy, averaged within each class and summed over classes."""
    nclass = logits.shape[1]
    ce = F.cross_entropy(logits, labels, reduction="none")
    sums = ce.new_zeros(nclass).index_add_(0, labels, ce)
    counts = ce.new_zeros(nclass).index_add_(0, labels, ce.new_ones(len(ce)))
    return (sums / counts.clamp(min=1)).sum()
