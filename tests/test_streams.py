"""Keyed draws: every class's random numbers are the same whichever other classes share its process."""
import torch

from data.augment import DiffAug
from data.datasets import Split
from data.sampler import ClassSampler
from data.streams import IterationDraws, KeyedGenerator, _splitmix64, host_uniform, key
from data.synthetic import SyntheticSet


def test_splitmix64_gives_the_published_sequence():
    # SplitMix64 from state 0 outputs 0xe220a8397b1dcdaf, then 0x6e789e6aa1b965f4 (Vigna's reference code)
    assert _splitmix64(0) == 0xE220A8397B1DCDAF and _splitmix64(0x9E3779B97F4A7C15) == 0x6E789E6AA1B965F4


def test_keys_are_functions_of_their_parts_only():
    assert key(0, "call", 3, 1) == key(0, "call", 3, 1)
    distinct = {key(s, p, *n) for s in (0, 1) for p in ("call", "real") for n in ((1, 2), (2, 1), (1,), (1, 2, 0))}
    assert len(distinct) == 16 and all(0 <= k < 2**64 for k in distinct)
    values = [host_uniform(7, "encoder", t, 0) for t in range(2000)]
    assert all(0 <= v < 1 for v in values) and abs(sum(values) / len(values) - 0.5) < 0.03
    g = KeyedGenerator(3, "cpu")
    first = torch.rand(4, generator=g("real", 1, 1))
    torch.rand(9, generator=g("real", 2, 1))  # another key in between changes nothing
    assert torch.equal(first, torch.rand(4, generator=g("real", 1, 1)))
    assert not torch.equal(first, torch.rand(4, generator=g("real", 1, 2)))


def draws_at(iteration, nclass=4):
    draws = IterationDraws(5, nclass, "cpu")
    draws.start(iteration)
    return draws


def test_a_class_is_augmented_alike_alone_or_beside_other_classes():
    x = torch.rand(6, 3, 16, 16)
    groups = torch.tensor([0, 0, 1, 1, 3, 3])
    for strategy in ("color_crop_cutout_flip", "scale_rotate", "translate"):
        dsa = DiffAug(strategy, batch=True)
        for iteration in range(1, 6):  # several op choices
            together = dsa(x, groups, draws_at(iteration))
            alone = dsa(x[2:4], groups[2:4], draws_at(iteration))
            assert torch.equal(together[2:4], alone), strategy
            assert torch.equal(dsa(x, groups, draws_at(iteration)), together)  # a pure function of the keys
    flipped = DiffAug("flip", batch=True)(x[:1].expand(40, -1, -1, -1), torch.arange(40), draws_at(1, 40))
    mirrored = sum(bool(torch.equal(f, x[0].flip(2))) for f in flipped)
    assert 8 < mirrored < 32  # each class draws its own flip, about half of them


def test_a_share_of_the_classes_draws_what_the_whole_set_draws_for_them():
    whole = SyntheticSet(4, 3, 1, 8, factor=2, seed=9)
    share = SyntheticSet(2, 3, 1, 8, factor=2, seed=9, first_class=1)
    assert torch.equal(whole.data[3:9], share.data) and share.targets.tolist() == [1, 1, 1, 2, 2, 2]
    subset_whole = whole.decoded_per_class(5, draws=draws_at(2))
    subset_share = share.decoded_per_class(5, draws=draws_at(2))
    assert subset_whole.shape == (4, 5, 1, 8, 8) and torch.equal(subset_whole[1:3], subset_share)
    assert torch.equal(whole.sample(2, 5, draws_at(3)), share.sample(1, 5, draws_at(3)))


def test_a_sampler_of_some_classes_draws_their_batches_as_one_of_all():
    labels = torch.arange(4).repeat_interleave(5)
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1).expand(20, 1, 2, 2).contiguous()
    split = Split(images, labels)
    whole, part = ClassSampler(split, 4, 2, "cpu", seed=1), ClassSampler(split, 4, 2, "cpu", seed=1, classes=[2, 3])
    for _ in range(4):  # two passes of 2 batches each (5 images, tail of 1 dropped)
        all_real, all_groups = whole.sample_all()
        real, groups = part.sample_all()
        assert torch.equal(all_real[4:], real) and groups.tolist() == [0, 0, 1, 1]
    assert {int(v) for v in (all_real[4:6] * 255).round().flatten()} <= set(range(10, 15))  # class 2's images
    state = whole.state_dict()
    assert state == {"passes": {0: [2, 4], 1: [2, 4], 2: [2, 4], 3: [2, 4]}}
    resumed = ClassSampler(split, 4, 2, "cpu", seed=1, classes=[3])
    resumed.load_state_dict(state)
    assert torch.equal(resumed.sample(0), whole.sample(3))
