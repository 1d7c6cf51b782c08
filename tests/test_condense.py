"""The method's pieces against hand-computed cases: losses, interpolation, update schedules."""
import pytest
import torch
import torch.nn.functional as F

from condense.encoders import ExpertBank
from condense.expert_folder import checkpoint_path
from condense.losses import calibration_loss, inner_class_loss
from condense.updates import SCHEDULES, UpdateSettings
from data.datasets import Split
from data.sampler import ClassSampler
from data.synthetic import SyntheticSet
from models import make_network
from utils import UserError, atomic_save


def update(schedule, synset, sampler, encoder, expert, aug, optimizer, settings):
    """One iteration's steps of a schedule, as DANCE.py takes them: align, then calibrate when there is an expert."""
    align, calibrate = SCHEDULES[schedule]
    inner = align(synset, sampler, encoder, aug, optimizer, settings)
    return inner, 0.0 if expert is None else calibrate(synset, expert, aug, optimizer, settings)


def test_inner_class_loss_hand_case():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    syn = torch.tensor([[0.0, 0.0]])
    assert inner_class_loss(real, syn).item() == pytest.approx(13.0)


def test_joint_inner_loss_is_sum_of_per_class_losses():
    torch.manual_seed(0)
    real, syn = torch.randn(7, 5), torch.randn(6, 5)
    groups_real = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    groups_syn = torch.tensor([0, 0, 1, 1, 2, 2])
    joint = inner_class_loss(real, syn, groups_real, groups_syn, nclass=3)
    per_class = sum(inner_class_loss(real[groups_real == c], syn[groups_syn == c]) for c in range(3))
    torch.testing.assert_close(joint, per_class)


def test_calibration_loss_is_sum_of_per_class_means():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 0, 0, 2, 2, 1])
    expected = sum(F.cross_entropy(logits[labels == c], labels[labels == c]) for c in range(3))
    torch.testing.assert_close(calibration_loss(logits, labels), expected)
    one = torch.tensor([1, 1])
    torch.testing.assert_close(calibration_loss(logits[:2], one), F.cross_entropy(logits[:2], one))


NETWORK = {"net_type": "convnet", "config": dict(nclass=3, channels=1, size=8, depth=1, width=0.05,
                                                 norm_type="instance")}


def _write_experts(folder, count):
    for i in range(count):
        for stage in ("init", "trained"):
            atomic_save(make_network(NETWORK, "cpu").state_dict(), checkpoint_path(folder, i, stage))


def test_middle_encoder_interpolates_parameters(tmp_path):
    _write_experts(str(tmp_path), 2)
    bank = ExpertBank(str(tmp_path), 2, NETWORK, "cpu", "python pretrain.py ...")
    init = torch.load(checkpoint_path(str(tmp_path), 1, "init"), weights_only=True)
    trained = torch.load(checkpoint_path(str(tmp_path), 1, "trained"), weights_only=True)
    for lam in (0.0, 0.3, 1.0):
        encoder = bank.middle(1, lam)
        for name, p in encoder.named_parameters():
            torch.testing.assert_close(p, lam * init[name] + (1 - lam) * trained[name])
            assert not p.requires_grad
    for name, p in bank.expert(1).named_parameters():
        torch.testing.assert_close(p, trained[name])


def test_expert_bank_errors_name_the_fix(tmp_path):
    with pytest.raises(UserError, match="python pretrain.py -d x"):
        ExpertBank(str(tmp_path), 1, NETWORK, "cpu", "python pretrain.py -d x")
    _write_experts(str(tmp_path), 1)
    wider = {"net_type": "convnet", "config": dict(NETWORK["config"], width=0.1)}
    with pytest.raises(UserError, match="layers.conv.0.weight"):
        ExpertBank(str(tmp_path), 1, wider, "cpu", "")


class PixelNet(torch.nn.Module):
    """Features are the pixels themselves, so the inner loss is hand-computable."""

    def forward(self, x, return_features=False):
        f = x.flatten(1)
        return (f, f) if return_features else f


def _two_class_setup():
    # real class 0 is all zeros, class 1 all ones; synthetic starts at 0.5 everywhere
    images = torch.cat([torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 255.0)]).to(torch.uint8)
    sampler = ClassSampler(Split(images, torch.tensor([0, 0, 1, 1])), 2, 8, "cpu")
    synset = SyntheticSet(2, 1, 1, 2, data=torch.full((2, 1, 2, 2), 0.5))
    optimizer = torch.optim.SGD([synset.data], lr=0.1, momentum=0.5)
    return sampler, synset, optimizer, UpdateSettings(batch_syn_max=0, iter_calib=0)


def test_per_class_update_shares_momentum_across_classes():
    sampler, synset, optimizer, settings = _two_class_setup()
    update("per_class", synset, sampler, PixelNet(), None, lambda x, groups=None: x, optimizer, settings)
    # step 1 (class 0): grad 2*(0.5-0) = 1 -> class 0 at 0.4; buffer (1, 0)
    # step 2 (class 1): grad 2*(0.5-1) = -1; buffer (0.5, -1) -> class 0 at 0.35, class 1 at 0.6
    torch.testing.assert_close(synset.data[0].detach(), torch.full((1, 2, 2), 0.35))
    torch.testing.assert_close(synset.data[1].detach(), torch.full((1, 2, 2), 0.6))


def test_joint_update_takes_one_step_for_all_classes():
    sampler, synset, optimizer, settings = _two_class_setup()
    update("joint", synset, sampler, PixelNet(), None, lambda x, groups=None: x, optimizer, settings)
    torch.testing.assert_close(synset.data[0].detach(), torch.full((1, 2, 2), 0.4))
    torch.testing.assert_close(synset.data[1].detach(), torch.full((1, 2, 2), 0.6))


def test_calibration_step_is_sgd_on_the_expert_cross_entropy():
    sampler, synset, optimizer, _ = _two_class_setup()
    with torch.no_grad():  # synthetic = real class means, so the inner view has zero gradient
        synset.data.copy_(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1).expand(2, 1, 2, 2))
    settings = UpdateSettings(batch_syn_max=0, iter_calib=1)
    torch.manual_seed(0)
    expert = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    expert.requires_grad_(False)
    start = synset.data.detach().clone()
    grads = []
    for c in range(2):
        x = start[c:c + 1].clone().requires_grad_(True)
        F.cross_entropy(expert(x), torch.tensor([c])).backward()
        grads.append(x.grad[0])
    update("per_class", synset, sampler, PixelNet(), expert, lambda x, groups=None: x, optimizer, settings)
    # class 0: its own step, then momentum 0.5 of it during class 1's step
    torch.testing.assert_close(synset.data[0].detach(), start[0] - 0.1 * grads[0] * 1.5)
    torch.testing.assert_close(synset.data[1].detach(), start[1] - 0.1 * grads[1])
    assert all(p.grad is None for p in expert.parameters())


def test_joint_in_class_chunks_takes_the_same_step(tmp_path):
    """Chunks bound memory only: the loss and the step equal the all-at-once ones up to float order."""
    from data.augment import DiffAug, normalize
    from utils import seed_everything

    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(3).repeat_interleave(8)
    net = make_network(NETWORK, "cpu").requires_grad_(False)
    dsa = DiffAug("color_crop_cutout", batch=True)
    results = []
    for chunk in (0, 1, 2):
        seed_everything(1)
        sampler = ClassSampler(Split(images, labels), 3, 5, "cpu")
        start = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
        synset = SyntheticSet(3, 2, 1, 8, factor=2, data=start.clone())
        optimizer = torch.optim.SGD([synset.data], lr=0.1, momentum=0.5)
        settings = UpdateSettings(batch_syn_max=0, iter_calib=1, class_chunk=chunk)

        def aug(x, groups=None):
            return dsa(normalize(x, (0.5,), (0.25,)), groups)

        inner, inter = update("joint", synset, sampler, net, net, aug, optimizer, settings)
        results.append((synset.data.detach().clone(), inner, inter))
    for data, inner, inter in results[1:]:
        torch.testing.assert_close(data, results[0][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(inner, results[0][1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(inter, results[0][2], rtol=1e-5, atol=1e-6)
    assert not torch.equal(results[0][0], start)  # a step was taken


@pytest.mark.parametrize("schedule", ["per_class", "joint"])
def test_bf16_step_runs_and_stays_close_to_fp32(schedule):
    """bf16 autocast covers the network passes only: the step differs from fp32 by bf16 rounding, not more,
    and the synthetic pixels, their gradient and the losses stay fp32."""
    from data.augment import DiffAug, normalize
    from utils import seed_everything

    torch.manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(3).repeat_interleave(8)
    net = make_network(NETWORK, "cpu").requires_grad_(False)
    dsa = DiffAug("color_crop_cutout", batch=True)
    start = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    moved = {}
    for precision in ("fp32", "bf16"):
        seed_everything(1)
        sampler = ClassSampler(Split(images, labels), 3, 5, "cpu")
        synset = SyntheticSet(3, 2, 1, 8, factor=2, data=start.clone())
        optimizer = torch.optim.SGD([synset.data], lr=1.0, momentum=0.5)
        settings = UpdateSettings(batch_syn_max=0, iter_calib=1, class_chunk=0, precision=precision)
        inner, inter = update(schedule, synset, sampler, net, net, lambda x, groups=None: dsa(
            normalize(x, (0.5,), (0.25,)), groups), optimizer, settings)
        assert synset.data.dtype == torch.float32 and inner.dtype == torch.float32
        moved[precision] = synset.data.detach() - start
    assert torch.isfinite(moved["bf16"]).all() and not torch.equal(moved["bf16"], moved["fp32"])
    relative = (moved["bf16"] - moved["fp32"]).norm() / moved["fp32"].norm()
    assert relative < 0.05, relative  # bf16 keeps 8 bits of mantissa: ~0.4% per rounding


@pytest.mark.parametrize("schedule", ["per_class", "joint"])
def test_both_schedules_align_with_the_loss_they_are_given(schedule):
    """The alignment is a setting: each schedule calls it on each class's (joint: each chunk's) real and synthetic
    features, with the class ids in the joint case, and steps on what it returns."""
    sampler, synset, optimizer, _ = _two_class_setup()
    calls = []

    def spy(feat_real, feat_syn, groups_real=None, groups_syn=None, nclass=1, counts=None, classes=(0,), **kw):
        calls.append((len(feat_real), len(feat_syn), None if groups_real is None else groups_real.tolist(), nclass,
                      counts, list(classes)))
        return inner_class_loss(feat_real, feat_syn, groups_real, groups_syn, nclass)

    settings = UpdateSettings(batch_syn_max=0, iter_calib=0, class_chunk=0, align=spy)
    update(schedule, synset, sampler, PixelNet(), None, lambda x, groups=None: x, optimizer, settings)
    if schedule == "per_class":  # one call per class: its 2 real images and 1 synthetic one
        assert calls == [(2, 1, None, 1, None, [0]), (2, 1, None, 1, None, [1])]
    else:  # one call for both classes, with their ids and sizes
        assert calls == [(4, 2, [0, 0, 1, 1], 2, ([2, 2], [1, 1]), [0, 1])]
    # the same step as the built-in mean alignment (tests above): class 0 moved down, class 1 up
    assert synset.data[0].max() < 0.5 < synset.data[1].min()


def test_random_encoders_draw_a_fresh_network_per_iteration_keyed_by_seed():
    from condense.encoders import RandomEncoders

    state = torch.get_rng_state()
    a, b = RandomEncoders(NETWORK, "cpu", seed=3), RandomEncoders(NETWORK, "cpu", seed=3)
    first = {k: v.clone() for k, v in a.pick(1)[0].state_dict().items()}
    net, expert = a.pick(2)
    assert expert is None and not all(torch.equal(first[k], v) for k, v in net.state_dict().items())
    again = b.pick(1)[0].state_dict()  # another instance, same seed and iteration: the same network
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = RandomEncoders(NETWORK, "cpu", seed=4).pick(1)[0].state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert torch.equal(torch.get_rng_state(), state)  # the run's own random streams are left alone


def test_expert_bank_picks_keyed_experts_and_lambdas_in_range(tmp_path):
    _write_experts(str(tmp_path), 3)
    bank = ExpertBank(str(tmp_path), 3, NETWORK, "cpu", "", seed=5, lam_min=0.2, lam_max=0.4)
    picked = set()
    for t in range(1, 40):
        encoder, expert = bank.pick(t)
        k = next(i for i in range(3) if expert is bank.expert(i))
        picked.add(k)
        init = torch.load(checkpoint_path(str(tmp_path), k, "init"), weights_only=True)
        trained = dict(bank.expert(k).named_parameters())
        name, p = next(iter(encoder.named_parameters()))
        # p = lam * init + (1 - lam) * trained, so lam is recovered from any parameter
        lam = ((p - trained[name]) / (init[name] - trained[name])).median().item()
        assert 0.2 - 1e-4 <= lam <= 0.4 + 1e-4
    assert picked == {0, 1, 2}
    again = ExpertBank(str(tmp_path), 3, NETWORK, "cpu", "", seed=5, lam_min=0.2, lam_max=0.4)
    assert all(torch.equal(x, y) for x, y in zip(bank.pick(7)[0].parameters(), again.pick(7)[0].parameters()))


def test_seconds_per_iteration_leave_out_books_and_the_first_step(monkeypatch):
    from condense import bookkeeping
    now = iter([10.0, 10.5, 11.5, 20.0, 21.0])  # first step 10 s (compiling), then 1 s steps around an 8.5 s evaluation
    monkeypatch.setattr(bookkeeping.time, "time", lambda: next(now))
    clock = bookkeeping.StepClock()
    clock.start(0.0)
    clock.step_done(first=True)
    assert clock.per_step() == 10.0  # all there is after the first step
    clock.books_done()
    clock.step_done(first=False)
    clock.books_done()
    clock.step_done(first=False)
    assert clock.per_step() == 1.0
