"""--align: each inner-class discrepancy against hand-computed cases and a direct double-precision evaluation of its
formula, its gradient (gradcheck in float64), and its agreement across the schedules' ways of calling it."""
import cmath
import functools
import math

import pytest
import torch

from condense.losses import (ALIGNMENTS, cf_discrepancy, cf_loss, covariance_gap, gaussian_mmd, inner_class_loss,
                             moments_loss, squared_distances)
from condense.updates import SCHEDULES, UpdateSettings
from data.augment import DiffAug, normalize
from data.datasets import Split
from data.sampler import ClassSampler
from data.streams import IterationDraws
from data.synthetic import SyntheticSet
from models import make_network

NAMES = list(ALIGNMENTS)


def sets(seed=0, n=7, m=3, d=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=dtype), torch.randn(m, d, generator=g, dtype=dtype)


@pytest.mark.parametrize("name", NAMES)
def test_identical_feature_sets_give_zero(name):
    real, _ = sets(dtype=torch.float64)
    loss = ALIGNMENTS[name](real, real.clone(), classes=(0,), draws=None)
    # cf's phase term is clamped at 1e-12 (NCFM), so its floor is sqrt(0.5e-12) per frequency; in double precision
    # the rounding of |Phi|^2 against Re^2 + Im^2 stays below that
    assert loss.abs().item() < 1e-6, loss


def test_mean_and_moments_of_a_known_shift():
    real, _ = sets()
    shift = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0])  # ||shift||^2 = 5.25
    assert inner_class_loss(real, real + shift).item() == pytest.approx(5.25, rel=1e-5)
    # a shift moves the mean, not the covariance
    assert moments_loss(real, real + shift, mean_weight=2.0, cov_weight=7.0).item() == pytest.approx(10.5, rel=1e-4)


def test_covariance_gap_by_hand():
    real = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])  # covariance diag(1, 0, 0), mean 0
    syn = torch.zeros(2, 3)                                    # covariance 0, mean 0
    assert covariance_gap(real, syn).item() == pytest.approx(1.0)
    assert moments_loss(real, syn, mean_weight=1.0, cov_weight=1.0).item() == pytest.approx(1 / 3)  # / D
    other = torch.tensor([[0.0, 2.0, 0.0], [0.0, -2.0, 0.0]])  # covariance diag(0, 4, 0): gap 1 + 16
    assert covariance_gap(real, other).item() == pytest.approx(17.0)


def direct_mmd(real, syn, bandwidths):
    """The biased MMD^2 with the median heuristic, by explicit loops in double precision."""
    pooled = [list(map(float, x)) for x in torch.cat([real, syn])]
    d = [[sum((a - b) ** 2 for a, b in zip(x, y)) for y in pooled] for x in pooled]
    flat = sorted(v for row in d for v in row)
    h = flat[(len(flat) - 1) // 2]  # torch.median's lower median
    n, total = len(real), len(pooled)

    def k(i, j):
        return sum(math.exp(-d[i][j] / (w * h)) for w in bandwidths)

    def block(rows, cols):
        return sum(k(i, j) for i in rows for j in cols) / (len(rows) * len(cols))

    r, s = range(n), range(n, total)
    return block(r, r) + block(s, s) - 2 * block(r, s)


def test_mmd_equals_its_formula_evaluated_directly():
    real, syn = sets(1)
    for bandwidths in ((1.0,), (0.5, 1.0, 2.0)):
        got = gaussian_mmd(real.double(), syn.double(), bandwidths).item()
        assert got == pytest.approx(direct_mmd(real, syn, bandwidths), rel=1e-9, abs=1e-12)
    shifted = gaussian_mmd(real.double(), real.double() + 3.0).item()
    assert shifted > 0.1  # a shift of 3 standard deviations is seen


def direct_cf(real, syn, t, alpha, beta):
    """NCFM's discrepancy with complex arithmetic in double precision."""
    def normalised(x):
        return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in x.tolist()]

    real, syn, total = normalised(real), normalised(syn), 0.0
    for freq in t.tolist():
        phi_r = sum(cmath.exp(1j * sum(a * b for a, b in zip(freq, x))) for x in real) / len(real)
        phi_s = sum(cmath.exp(1j * sum(a * b for a, b in zip(freq, x))) for x in syn) / len(syn)
        amp = (abs(phi_r) - abs(phi_s)) ** 2
        phase = max(2 * (abs(phi_r) * abs(phi_s) - (phi_r * phi_s.conjugate()).real), 1e-12)
        total += math.sqrt(alpha * amp + beta * phase)
    return total / len(t)


def test_cf_equals_its_formula_evaluated_directly():
    real, syn = sets(2)
    t = torch.randn(16, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for alpha, beta in ((0.5, 0.5), (1.0, 0.0), (0.2, 0.9)):
        got = cf_discrepancy(real.double(), syn.double(), t, alpha, beta).item()
        assert got == pytest.approx(direct_cf(real, syn, t, alpha, beta), rel=1e-9)
    # the sampler, when given, supplies the frequencies of each class
    assert cf_loss(real.double(), syn.double(), sampler=lambda c, draws: t).item() == pytest.approx(
        direct_cf(real, syn, t, 0.5, 0.5), rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_match_finite_differences(name):
    real, syn = sets(4, n=5, m=3, d=4, dtype=torch.float64)
    syn.requires_grad_(True)
    t = torch.randn(8, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    align = functools.partial(ALIGNMENTS[name], sampler=lambda c, draws: t) if name == "cf" else ALIGNMENTS[name]
    if name == "mmd":  # the median bandwidth is detached by design: hold it at the point's value
        h = squared_distances(torch.cat([real, syn]), torch.cat([real, syn])).median().detach()
        align = functools.partial(gaussian_mmd, h=h)
    assert torch.autograd.gradcheck(lambda s: align(real, s), (syn,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["mmd", "cf", "moments"])
def test_a_grouped_call_is_the_sum_of_its_classes(name):
    real, syn = sets(6, n=9, m=6, d=5)
    counts, classes = ([4, 5], [3, 3]), (7, 8)
    g_real, g_syn = torch.tensor([0] * 4 + [1] * 5), torch.tensor([0] * 3 + [1] * 3)
    draws = IterationDraws(0, 10, "cpu")
    draws.start(3)
    grouped = ALIGNMENTS[name](real, syn, g_real, g_syn, 2, counts=counts, classes=classes, draws=draws)
    alone = sum(ALIGNMENTS[name](real[g_real == i], syn[g_syn == i], classes=(c,), draws=draws)
                for i, c in enumerate(classes))
    torch.testing.assert_close(grouped, alone)


def test_cf_frequencies_are_keyed_by_class_and_iteration():
    real, syn = sets(7)
    draws = IterationDraws(0, 10, "cpu")
    draws.start(1)
    a, b = (cf_loss(real, syn, classes=(2,), draws=draws) for _ in range(2))
    assert torch.equal(a, b)  # the same class in the same iteration: the same frequencies
    assert not torch.equal(a, cf_loss(real, syn, classes=(3,), draws=draws))
    draws.start(2)
    assert not torch.equal(a, cf_loss(real, syn, classes=(2,), draws=draws))


NETWORK = {"net_type": "convnet", "config": dict(nclass=3, channels=1, size=8, depth=1, width=0.05,
                                                 norm_type="instance")}


@pytest.mark.parametrize("name", NAMES)
def test_joint_in_class_chunks_takes_the_same_step_with_every_alignment(name):
    """Chunks bound memory only: the step equals the all-at-once one up to float order, for each alignment."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(3).repeat_interleave(8)
    net = make_network(NETWORK, "cpu").requires_grad_(False)
    dsa = DiffAug("color_crop_cutout", batch=True)
    align, _ = SCHEDULES["joint"]
    results = []
    for chunk in (0, 1, 2):
        sampler = ClassSampler(Split(images, labels), 3, 5, "cpu", seed=1)
        synset = SyntheticSet(3, 2, 1, 8, factor=2, data=torch.rand(6, 1, 8, 8, generator=torch.Generator()
                                                                         .manual_seed(2)))
        optimizer = torch.optim.SGD([synset.data], lr=0.1, momentum=0.5)
        draws = IterationDraws(1, 3, "cpu")
        draws.start(1)
        settings = UpdateSettings(batch_syn_max=0, iter_calib=0, class_chunk=chunk,
                                  align=functools.partial(ALIGNMENTS[name], frequencies=64) if name == "cf"
                                  else ALIGNMENTS[name])
        loss = align(synset, sampler, net, lambda x, groups: dsa(normalize(x, (0.5,), (0.25,)), groups, draws),
                     optimizer, settings, draws)
        results.append((synset.data.detach().clone(), loss))
    for data, loss in results[1:]:
        torch.testing.assert_close(data, results[0][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss, results[0][1], rtol=1e-5, atol=1e-6)


def test_the_sampling_network_ascends_the_discrepancy_it_feeds():
    from condense.frequency_network import LearnedFrequencies

    real, syn = sets(8, n=12, m=4, d=6)
    learned = LearnedFrequencies(6, 64, "cpu", lr=0.5, seed=3)
    draws = IterationDraws(0, 10, "cpu")
    draws.start(1)
    before = cf_loss(real, syn, classes=(2,), draws=draws, sampler=learned)
    learned.zero_grad()
    before.backward()
    learned.step()
    after = cf_loss(real, syn, classes=(2,), draws=draws, sampler=learned)  # the same noise, new weights
    assert after.item() > before.item()
    twin = LearnedFrequencies(6, 64, "cpu", lr=0.5, seed=3)  # the seed decides the initial weights
    assert not torch.equal(learned(2, draws), twin(2, draws))
    twin.load_state_dict(learned.state_dict())
    assert torch.equal(learned(2, draws), twin(2, draws))
    assert learned(2, draws).shape == (64, 6) and learned(2, draws).abs().max() <= 1  # Tanh output, repeated


@pytest.mark.parametrize("schedule", ["per_class", "joint"])
@pytest.mark.parametrize("name", NAMES)
def test_every_alignment_steps_in_bf16_with_fp32_pixels_and_losses(name, schedule):
    """Under bf16 autocast the network passes round, the alignment is computed on fp32 features: a finite step."""
    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8)
    sampler = ClassSampler(Split(images, torch.arange(3).repeat_interleave(8)), 3, 5, "cpu", seed=1)
    net = make_network(NETWORK, "cpu").requires_grad_(False)
    start = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    synset = SyntheticSet(3, 2, 1, 8, factor=2, data=start.clone())
    optimizer = torch.optim.SGD([synset.data], lr=1.0, momentum=0.5)
    draws = IterationDraws(1, 3, "cpu")
    draws.start(1)
    align = functools.partial(ALIGNMENTS[name], frequencies=64) if name == "cf" else ALIGNMENTS[name]
    settings = UpdateSettings(batch_syn_max=0, iter_calib=0, precision="bf16", align=align)
    loss = SCHEDULES[schedule][0](synset, sampler, net, lambda x, groups: normalize(x, (0.5,), (0.25,)), optimizer,
                                  settings, draws)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and synset.data.dtype == torch.float32
    assert torch.isfinite(synset.data).all() and not torch.equal(synset.data.detach(), start)
