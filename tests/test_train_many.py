"""training/vectorised.py: N networks trained as one vectorised model against the sequential trainer (fit)."""
import copy
import io
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from training import vectorised
from data.augment import box_masks, cutmix, cutmix_draws, cutmix_many, cutmix_loss, cutmix_loss_many
from data.datasets import Split
from tests.fixtures import build_model
from training.recipe import Recipe, fit
from training.recipe import test_accuracy as accuracy_of
from models.convnet import ConvNet
from training.vectorised import CPU_GROUP_CHANNELS, StackedNetworks, can_vectorise, fit_many, group_size, groups_of
from training.vectorised import test_accuracy_many as accuracies_of
from utils import rng_state, seed_everything

MEAN, STD = (0.4, 0.45, 0.5), (0.25, 0.2, 0.3)
DSA = "color_crop_cutout_flip_scale_rotate"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: a second thread only adds scheduling noise on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def brightness_data(n, channels, size, nclass, seed, noise=40):
    """uint8 images whose brightness grows with the class, plus uniform noise: learnable by a tiny ConvNet."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % nclass
    base = (20 + 215 * labels / (nclass - 1)).view(n, 1, 1, 1)
    noise = torch.randint(-noise, noise + 1, (n, channels, size, size), generator=g)
    return (base + noise).clamp(0, 255).to(torch.uint8), labels


def quadrant_data(n, size, seed, noise):
    """1-channel images of 4 classes, class c brightening quadrant c under Gaussian noise (a harder problem)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    x = torch.randn(n, 1, size, size, generator=g) * noise
    h = size // 2
    for c in range(4):
        x[labels == c, :, (c // 2) * h:(c // 2 + 1) * h, (c % 2) * h:(c % 2 + 1) * h] += 1.0
    return (x * 50 + 100).clamp(0, 255).to(torch.uint8), labels


def networks(n, net="convnet", norm="instance", channels=3, size=16, nclass=4):
    """n tiny networks, network i built under seed i (as evaluate_set seeds its runs)."""
    out = []
    for i in range(n):
        seed_everything(i)
        if net == "convnet":
            out.append(build_model("convnet", nclass, channels, size, depth=2, width=1 / 16, norm_type=norm))
        else:
            out.append(build_model("resnet_ap", nclass, channels, size, depth=8, width=0.125, norm_type=norm,
                                   cifar_layout=True))
    return out


@pytest.fixture(scope="module")
def data():
    images, labels = brightness_data(40, 3, 16, 4, seed=0)
    return images, labels, Split(*brightness_data(45, 3, 16, 4, seed=1))


@pytest.mark.parametrize("net, eval_aug, precision", [("convnet", "dsa", "fp32"), ("convnet", "imagenet", "fp32"),
                                                      ("convnet", "dsa", "bf16"), ("resnet_ap", "dsa", "fp32")])
def test_one_network_makes_fits_draws_and_weights(data, net, eval_aug, precision, monkeypatch):
    images, labels, test = data
    mixes = []
    monkeypatch.setattr(vectorised, "cutmix_many", lambda *a: mixes.append(1) or cutmix_many(*a))
    recipe = Recipe(epochs=3, batch_size=16, dsa_strategy=DSA, mix_p=0.5, eval_interval=1, eval_aug=eval_aug,
                    precision=precision)
    seq, = networks(1, net)
    many = [copy.deepcopy(seq)]
    seq_progress, many_progress = [], []
    seed_everything(7)
    expected = fit(seq, images, labels, test, MEAN, STD, recipe, "cpu",
                   progress=lambda e, loss, acc: seq_progress.append((e, loss, acc)))
    seq_rng = rng_state()
    seed_everything(7)
    got, = fit_many(many, images, labels, test, MEAN, STD, recipe, "cpu",
                    progress=lambda e, losses, accs: many_progress.append((e, losses[0], accs[0])))
    # the same draws, in the same order: every stream ends where fit left it
    after = rng_state()
    assert torch.equal(after["torch"], seq_rng["torch"]) and after["python"] == seq_rng["python"]
    for (k, a), b in zip(seq.state_dict().items(), many[0].state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), k
    assert got["history"] == expected["history"] and got["final"] == expected["final"]
    assert 0 < len(mixes) < 9  # 9 batches: some were mixed, some not
    assert len(seq_progress) == len(many_progress) == 3
    for (e1, l1, a1), (e2, l2, a2) in zip(seq_progress, many_progress):
        assert e1 == e2 and l1 == pytest.approx(l2, rel=1e-5) and a1 == a2


def test_n_networks_keep_their_inits_and_learn_like_sequential_ones():
    images, labels = quadrant_data(40, 8, seed=0, noise=1.5)
    test = Split(*quadrant_data(200, 8, seed=1, noise=1.5))
    recipe = Recipe(epochs=10, batch_size=16, dsa_strategy="color_crop_scale_rotate", mix_p=0.5)
    seq = networks(4, channels=1, size=8)
    many = [copy.deepcopy(m) for m in seq]
    stacked = StackedNetworks(many, "cpu").state_dict()
    for i, m in enumerate(seq):  # network i starts from its sequential twin's initialisation
        assert all(torch.equal(stacked[k][i], v) for k, v in m.state_dict().items())
    seed_everything(0)
    seq_acc = [fit(m, images, labels, test, (0.4,), (0.2,), recipe, "cpu")["final"] for m in seq]
    seed_everything(0)
    many_acc = [r["final"] for r in fit_many(many, images, labels, test, (0.4,), (0.2,), recipe, "cpu")]
    # Other draws, same distribution: measured mean 84.1 (81-88) sequential vs 82.8 (76.5-88.5) vectorised.
    assert abs(statistics.mean(seq_acc) - statistics.mean(many_acc)) < 5
    assert min(many_acc) > 60  # chance is 25
    for a, b in zip(seq, many):  # trained, and apart from the sequential twin
        assert not torch.equal(a.classifier.weight, b.classifier.weight)


@pytest.mark.parametrize("norm", ["instance", "group", "layer", "none"])
def test_grouped_convnet_is_the_vmapped_one(norm):
    nets = networks(3, norm=norm)
    net = StackedNetworks(nets, "cpu")
    assert net.grouped
    x = torch.randn(3, 5, 3, 16, 16)
    for shared, inp in ((False, x), (True, x[0])):
        grouped, vmapped = net(inp, shared=shared), net(inp, shared=shared, vmap=True)
        assert torch.allclose(grouped, vmapped, atol=1e-5)
        for i, m in enumerate(nets):
            assert torch.allclose(grouped[i], m(inp if shared else inp[i]), atol=1e-5)


@pytest.mark.parametrize("net", ["convnet", "resnet_ap"])
def test_each_network_gets_its_own_gradient(net):
    nets = networks(3, net)
    stacked = StackedNetworks(nets, "cpu")
    x, y = torch.randn(3, 6, 3, 16, 16), torch.randint(0, 4, (3, 6))
    logits = stacked(x)
    F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(3, 6).mean(1).sum().backward()
    for i, m in enumerate(nets):
        F.cross_entropy(m(x[i]), y[i]).backward()
        for name, p in m.named_parameters():
            assert torch.allclose(stacked.params[name].grad[i], p.grad, atol=1e-5), name


def test_cutmix_masks_boxes_and_ratios():
    # hand-checked: network 0 pastes rows 1:3, columns 0:2 of its partner; network 1 keeps its batch
    boxes = torch.tensor([[1, 0, 3, 2], [0, 0, 0, 0]])
    masks = box_masks(boxes, 4, 4)
    assert masks[0].tolist() == [[False] * 4, [True, True, False, False], [True, True, False, False], [False] * 4]
    assert not masks[1].any()
    x = torch.arange(2 * 2 * 16, dtype=torch.float32).view(2, 2, 1, 4, 4)
    y = torch.tensor([[0, 1], [2, 3]])
    perm = torch.tensor([[1, 0], [0, 1]])
    mixed, y_b = cutmix_many(x, y, perm, boxes)
    assert y_b.tolist() == [[1, 0], [2, 3]] and torch.equal(mixed[1], x[1])
    assert torch.equal(mixed[0, 0, 0, 1:3, 0:2], x[0, 1, 0, 1:3, 0:2])
    assert torch.equal(mixed[0, 0, 0, 0], x[0, 0, 0, 0]) and torch.equal(mixed[0, 0, 0, 1:3, 2:], x[0, 0, 0, 1:3, 2:])
    assert mixed.data_ptr() != x.data_ptr()

    # draws: each mixing network draws exactly what `cutmix` draws, in network order; others draw nothing
    x = torch.randn(3, 8, 3, 12, 10)
    y = torch.randint(0, 5, (3, 8))
    torch.manual_seed(3)
    perm, boxes, ratio = cutmix_draws([True, False, True], 8, 12, 10, beta=1.0)
    mixed, y_b = cutmix_many(x, y, perm, boxes)
    torch.manual_seed(3)
    for i in (0, 2):
        expected, expected_b, expected_ratio = cutmix(x[i], y[i], 1.0)
        assert torch.equal(mixed[i], expected) and torch.equal(y_b[i], expected_b)
        assert ratio[i].item() == expected_ratio
        x1, y1, x2, y2 = boxes[i].tolist()
        assert expected_ratio == 1.0 - (x2 - x1) * (y2 - y1) / 120
    assert torch.equal(mixed[1], x[1]) and torch.equal(y_b[1], y[1]) and ratio[1].item() == 1.0
    logits = torch.randn(3, 8, 5)
    losses = cutmix_loss_many(logits, y, y_b, ratio.float(), (1.0 - ratio).float())
    for i in range(3):
        assert losses[i].item() == pytest.approx(cutmix_loss(logits[i], y[i], y_b[i], ratio[i].item()).item(), rel=1e-6)


@pytest.mark.parametrize("net", ["convnet", "resnet_ap"])
def test_test_pass_matches_test_accuracy(data, net):
    images, labels, test = data
    nets = networks(3, net)
    seed_everything(0)
    fit_many(nets, images, labels, test, MEAN, STD, Recipe(epochs=1, batch_size=16, mix_p=0.0), "cpu")
    expected = [accuracy_of(m, test, MEAN, STD, "cpu") for m in nets]
    assert accuracies_of(nets, test, MEAN, STD, "cpu") == expected
    assert accuracies_of(nets, test, MEAN, STD, "cpu", batch_size=16) == expected


def test_resume_continues_bit_for_bit(data):
    images, labels, test = data
    recipe = Recipe(epochs=3, batch_size=16, dsa_strategy=DSA, mix_p=0.5, eval_interval=1)
    straight = networks(2)
    resumed = [copy.deepcopy(m) for m in straight]
    saved = {}

    def keep(state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        saved[state["epoch"]] = buffer.getvalue()

    seed_everything(5)
    expected = fit_many(straight, images, labels, test, MEAN, STD, recipe, "cpu", on_epoch=keep)
    start = torch.load(io.BytesIO(saved[2]), weights_only=True)
    seed_everything(123)  # whatever the streams now hold, the state restores them
    got = fit_many(resumed, images, labels, test, MEAN, STD, recipe, "cpu", start=start)
    assert got == expected
    for a, b in zip(straight, resumed):
        assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))


def test_can_vectorise():
    assert all(can_vectorise(networks(1, norm=norm)[0]) for norm in ("instance", "group", "layer", "none"))
    assert can_vectorise(networks(1, "resnet_ap")[0]) and can_vectorise(networks(1, "resnet_ap", "none")[0])
    assert not can_vectorise(networks(1, norm="batch")[0])
    assert not can_vectorise(networks(1, "resnet_ap", "batch")[0])
    assert not can_vectorise(networks(1, "resnet_ap", "sn")[0])  # spectral norm updates buffers in its hook
    assert not can_vectorise(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()))
    images, labels = brightness_data(8, 3, 16, 4, seed=0)
    with pytest.raises(ValueError, match="cannot be vectorised"):
        fit_many(networks(2, norm="batch"), images, labels, None, MEAN, STD, Recipe(epochs=1), "cpu")
    with pytest.raises(ValueError, match="differs in architecture"):
        fit_many(networks(1) + networks(1, norm="layer"), images, labels, None, MEAN, STD, Recipe(epochs=1), "cpu")


def test_inputs_are_not_modified_and_models_are_updated_in_place(data):
    images, labels, test = data
    before = (images.clone(), labels.clone(), test.images.clone(), test.labels.clone())
    nets = networks(2)
    params = [list(m.parameters()) for m in nets]
    initial = [copy.deepcopy(m.state_dict()) for m in nets]
    seed_everything(0)
    recipe = Recipe(epochs=2, batch_size=16, dsa_strategy=DSA, mix_p=1.0)
    fit_many(nets, images, labels, test, MEAN, STD, recipe, "cpu")
    assert all(torch.equal(a, b) for a, b in zip(before, (images, labels, test.images, test.labels)))
    for m, ps, init in zip(nets, params, initial):
        assert all(p is q for p, q in zip(m.parameters(), ps))  # the same modules, trained weights loaded
        assert not torch.equal(m.classifier.weight, init["classifier.weight"])


def test_no_scalar_reads_in_the_training_loop(data):
    """`aten::_local_scalar_dense` is every read of a tensor's value into Python, a device wait on a GPU.

    Without CutMix, fit_many reads nothing scalar by scalar (each epoch's statistics and each test pass come
    back in one .tolist()). CutMix's draws (lambda, box centre) are scalar reads of CPU tensors, as in fit.
    """
    images, labels, test = data
    recipe = Recipe(epochs=2, batch_size=16, dsa_strategy=DSA, mix_p=0.0, eval_interval=1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fit_many(networks(2), images, labels, test, MEAN, STD, recipe, "cpu")
    assert not [e.key for e in prof.key_averages() if e.key == "aten::_local_scalar_dense"]


def test_group_size_follows_parallel_and_groups_on_the_cpu_only_narrow_convnets():
    narrow, wide = networks(1)[0], ConvNet(4, 3, 16, 2, 1.0)
    assert narrow.layers["conv"][0].out_channels <= CPU_GROUP_CHANNELS < wide.layers["conv"][0].out_channels
    assert group_size(0, narrow, "cpu", 5) == 5 and group_size(0, wide, "cpu", 5) == 1
    assert group_size(0, wide, "cuda", 5) == 5 and group_size(0, networks(1, "resnet_ap")[0], "cpu", 5) == 1
    assert group_size(2, wide, "cpu", 5) == 2 and group_size(3, networks(1, norm="batch")[0], "cuda", 5) == 1
    assert groups_of([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]
