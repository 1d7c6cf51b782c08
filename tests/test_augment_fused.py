"""DiffAug's fused call against its per-op reference: same output and input gradients from the same draws, with
fewer operators (CPU)."""
import collections
import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from data import augment
from data.augment import DiffAug, color_map, crop, cutout, flip
from data.streams import IterationDraws

STRATEGIES = ("color_crop_cutout", "color_crop_flip_scale_rotate", "color_crop_cutout_flip_scale_rotate", "flip",
              "color", "crop", "translate", "scale", "rotate", "cutout", "color_flip_translate_cutout")
SHAPES = ((1, 15, 15), (3, 32, 32), (3, 9, 14))
# (batch, groups): keyed draws need every sample's class; the stream also draws per batch or per sample
KEYED_MODES = ((True, "classes"), (False, "distinct"))
STREAM_MODES = ((True, "classes"), (False, None))
N = 12
ATOL = 1e-5


def group_ids(kind):
    """Class ids of the N samples: repeated classes, one class per sample, or none."""
    if kind == "classes":
        return torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 3, 5])
    return torch.arange(N) if kind == "distinct" else None


class OpCounter(TorchDispatchMode):
    """Counts the ATen operators dispatched while active (forward, and backward when run inside)."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self):
        return sum(self.ops.values())


def run(aug, method, x, weight, groups, keyed, iteration):
    """Output, the gradient of sum(weight * output) w.r.t. x, and the torch RNG state after the call."""
    if keyed:
        draws = IterationDraws(7, N, "cpu")
        draws.start(iteration)
    else:
        draws = None
        torch.manual_seed(iteration)
        random.seed(iteration)
    y = getattr(aug, method)(x, groups, draws)
    state = torch.get_rng_state()
    grad, = torch.autograd.grad((y * weight).sum(), x)
    return y.detach(), grad, state


def check_against_reference(monkeypatch, strategy, shape, batch, kind, keyed):
    """Every op the strategy holds is drawn at least once; fused == reference (output, gradient, draws consumed)."""
    chosen = set()
    real_columns = DiffAug._columns

    def spy(self, name, h, w):
        chosen.add(name)
        return real_columns(self, name, h, w)

    monkeypatch.setattr(DiffAug, "_columns", spy)
    aug = DiffAug(strategy, batch=batch)
    groups = group_ids(kind)
    for iteration in range(1, 40):
        gen = torch.Generator().manual_seed(iteration)
        x = torch.rand(N, *shape, generator=gen).requires_grad_(True)
        weight = torch.rand(N, *shape, generator=gen)
        y, grad, state = run(aug, "__call__", x, weight, groups, keyed, iteration)
        y_ref, grad_ref, state_ref = run(aug, "reference", x, weight, groups, keyed, iteration)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=ATOL)
        torch.testing.assert_close(grad, grad_ref, rtol=0, atol=ATOL)
        assert torch.equal(state, state_ref)  # the same torch draws, in number and kind
        if iteration >= 2 and chosen >= set(aug.ops or [None]):
            return
    pytest.fail(f"ops never drawn: {set(aug.ops) - chosen}")


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("batch, kind", KEYED_MODES)
def test_fused_equals_reference_keyed(monkeypatch, strategy, shape, batch, kind):
    check_against_reference(monkeypatch, strategy, shape, batch, kind, keyed=True)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("batch, kind", STREAM_MODES)
def test_fused_equals_reference_stream(monkeypatch, strategy, shape, batch, kind):
    check_against_reference(monkeypatch, strategy, shape, batch, kind, keyed=False)


def test_color_map_hand_computed_2x2():
    # channel 0 = [[0, .2], [.4, .6]], channel 1 = .2: m = [[.1, .2], [.3, .4]], M = .25
    x = torch.tensor([[[0.0, 0.2], [0.4, 0.6]], [[0.2, 0.2], [0.2, 0.2]]]).unsqueeze(0)
    s, k, q = (torch.tensor(v).view(1, 1, 1, 1) for v in (0.25, 0.5, 0.5))  # r_b = .75, r_s = .25, r_c = 0
    # q * k * (x - m) + q * (m - M) + M + s, with q * k = .25 and M + s = .5
    expected = torch.tensor([[[0.4, 0.475], [0.55, 0.625]], [[0.45, 0.475], [0.5, 0.525]]]).unsqueeze(0)
    torch.testing.assert_close(color_map(x, s, k, q), expected, rtol=0, atol=1e-6)
    sequential = augment.contrast(augment.saturation(augment.brightness(x, torch.tensor([0.75])),
                                                     torch.tensor([0.25])), torch.tensor([0.0]))
    torch.testing.assert_close(sequential, expected, rtol=0, atol=1e-6)
    # one channel: saturation is the identity, x3 = q * (x - M) + M + s = .5 * (x - 1.5) + 1.75
    gray = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    torch.testing.assert_close(color_map(gray, s, k, q), torch.tensor([[1.0, 1.5], [2.0, 2.5]]).view(1, 1, 2, 2))


def test_color_map_gradient_is_the_map_of_the_gradient():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    s, k, q = (torch.rand(4, 1, 1, 1, dtype=torch.float64) for _ in range(3))
    assert torch.autograd.gradcheck(lambda t: color_map(t, s, k, q), (x,))
    assert torch.autograd.gradgradcheck(lambda t: color_map(t, s, k, q), (x,))


def test_crop_index_is_crop_of_flip_for_every_shift():
    torch.manual_seed(1)
    for h, w in ((8, 8), (15, 15), (9, 14)):
        x = torch.rand(2, 3, h, w)
        sx, sy = augment._crop_shifts(h, w)
        for mirror in (True, False):
            mask = torch.tensor([mirror, not mirror])
            for tx in range(2 * sx + 1):
                for ty in range(2 * sy + 1):
                    offsets = [torch.full((2, 1, 1, 1), float(v)) for v in (ty, tx)]
                    index = augment._crop_index(offsets, mask.view(2, 1, 1, 1), h, w)
                    expected = crop(flip(x, mask), torch.full((2,), tx - sx), torch.full((2,), ty - sy))
                    assert torch.equal(augment._gather_padded(x, index), expected)


def test_cutout_window_is_cutout_for_every_drawn_centre():
    ones = torch.ones(1, 1, 1, 1)
    for h, w in ((8, 8), (15, 15), (7, 6), (2, 3)):
        ch, cw = augment._cutout_size(h, w)
        x = torch.ones(1, 1, h, w)
        for ox in range(h + 1 - ch % 2):
            for oy in range(w + 1 - cw % 2):
                window = augment._cutout_window(ones * ox, ones * oy, h, w)
                expected = cutout(x, torch.tensor([ox]), torch.tensor([oy]), ch, cw) == 0
                assert torch.equal(window, expected), (h, w, ox, oy)


def test_dense_group_ids_relabel_in_sorted_order():
    torch.manual_seed(2)
    for n in (1, 7, 300):
        groups = torch.randint(-5, 1000, (n,))
        assert torch.equal(augment._dense_group_ids(groups), torch.unique(groups, return_inverse=True)[1])


def test_fused_call_applies_one_op_to_the_whole_batch(monkeypatch):
    calls = []
    for name in ("_gather_padded", "_affine"):
        real = getattr(augment, name)

        def spy(x, arg, _real=real, _name=name):
            calls.append((_name, x.shape[0]))
            return _real(x, arg)

        monkeypatch.setattr(augment, name, spy)
    torch.manual_seed(4)
    random.seed(4)
    aug = DiffAug("color_crop_flip_scale_rotate")
    for _ in range(300):
        aug(torch.rand(5, 3, 8, 8))
    assert len(calls) == 300 and all(n == 5 for _, n in calls)
    crops = sum(name == "_gather_padded" for name, _ in calls)
    assert 60 < crops < 140  # one op in three is crop


def count_ops(method, strategy, keyed, n=138):
    """Operators of one call on an (n, 3, 32, 32) batch of one class: (forward, backward of the sum)."""
    torch.manual_seed(0)
    x = torch.rand(n, 3, 32, 32, requires_grad=True)
    groups = torch.full((n,), 3)
    aug = DiffAug(strategy, batch=True)
    counts = []
    for _ in range(2):  # the first call builds the cached constants
        draws = IterationDraws(0, 10, "cpu") if keyed else None
        if keyed:
            draws.start(1)
        else:
            torch.manual_seed(1)
            random.seed(1)
        with OpCounter() as forward:
            y = getattr(aug, method)(x, groups, draws)
        with OpCounter() as backward:
            y.sum().backward()
        counts = [forward.total, backward.total]
    return tuple(counts)


def test_fused_color_crop_cutout_operator_count():
    fused = count_ops("__call__", "color_crop_cutout", keyed=True)
    reference = count_ops("reference", "color_crop_cutout", keyed=True)
    # measured: 36 + 14 fused, 87 + 26 before fusing (the reference path)
    assert sum(fused) <= 54, fused
    assert sum(fused) < sum(reference) and fused[1] < reference[1], (fused, reference)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("keyed", (True, False), ids=("keyed", "stream"))
def test_fused_never_dispatches_more_operators(strategy, keyed):
    fused = count_ops("__call__", strategy, keyed, n=8)  # the count does not depend on the batch
    reference = count_ops("reference", strategy, keyed, n=8)
    assert sum(fused) <= sum(reference), (fused, reference)
