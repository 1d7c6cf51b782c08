"""Real-image baselines: coreset selection by hand, and evaluate.py --baseline end to end."""
import json

import torch

import evaluate
import pretrain
from arguments import parse
from data.coreset import select_herding, select_kcenter, select_random
from tests.fixtures import write_fixture

FEATURES = torch.tensor([[0.0], [10.0], [4.0], [6.0]])


def test_herding_tracks_the_mean():
    # mean 5: first the point nearest 5 (4, index 2), then the one bringing the mean of two to 5 (6)
    assert select_herding(FEATURES, 2).tolist() == [2, 3]


def test_kcenter_picks_farthest_points():
    # start nearest the mean (index 2, value 4), then the farthest (10), then the farthest from {4, 10} (0)
    assert select_kcenter(FEATURES, 3).tolist() == [2, 1, 0]


def test_selection_cycles_when_the_class_is_small():
    assert select_herding(FEATURES, 6).tolist()[4:] == select_herding(FEATURES, 6).tolist()[:2]
    torch.manual_seed(0)
    chosen = select_random(3, 5)
    assert sorted(chosen[:3].tolist()) == [0, 1, 2] and chosen[3:].tolist() == chosen[:2].tolist()


def test_baselines_evaluate_and_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir = write_fixture("cifar10", str(tmp_path / "data"))
    common = ["-d", "cifar10", "--data_dir", data_dir, "--width", "0.0625", "--device", "cpu",
              "--pretrain_dir", str(tmp_path / "experts")]
    pretrain.main(parse("pretrain", common + ["--pretrain_amount", "1", "--pretrain_epochs", "1"]))
    tiny = ["--eval_epochs", "1", "--eval_interval", "1", "--runs", "2", "--batch_size", "16"]
    cases = (("random", "1", "2"), ("herding", "2", "1"), ("kcenter", "1", "2"), ("full", "2", "1"))
    for baseline, ipc, factor in cases:
        result, = evaluate.main(parse("evaluate", common + tiny + ["--baseline", baseline, "--ipc", ipc,
                                                                   "--factor", factor]))
        assert len(result["final"]) == 2
    lines = [json.loads(line) for line in open(tmp_path / "results" / "evaluations.jsonl")]
    assert [line["set"] for line in lines] == ["baseline:random", "baseline:herding", "baseline:kcenter",
                                               "baseline:full"]
    assert lines[0]["ipc"] == 1 and lines[0]["factor"] == 2 and lines[1]["ipc"] == 2 and lines[3]["ipc"] == 4
    assert lines[0]["protocol"]["epochs"] == 1 and len(lines[0]["final"]) == 2


def test_baseline_set_has_the_condensed_budget(tmp_path):
    data_dir = write_fixture("cifar10", str(tmp_path / "data"))
    args = parse("evaluate", ["-d", "cifar10", "--data_dir", data_dir, "--baseline", "random", "--ipc", "1",
                              "--factor", "2", "--device", "cpu"])
    from data.datasets import load_dataset
    train, _, info = load_dataset("cifar10", data_dir)
    baseline, = evaluate.real_sets(args, train, info, "cpu")
    images, labels = baseline.images, baseline.labels
    # one storage image per class holds 4 real images, decoded into 4 training images
    assert images.shape == (40, 3, 32, 32) and labels.tolist() == sorted(labels.tolist())


def test_random_subset_depends_on_the_seed_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir = write_fixture("cifar10", str(tmp_path / "data"))
    drawn, real = [], evaluate.real_subset
    monkeypatch.setattr(evaluate, "real_subset", lambda *a, **kw: drawn.append(real(*a, **kw)) or drawn[-1])
    argv = ["-d", "cifar10", "--data_dir", data_dir, "--baseline", "random", "--ipc", "2", "--width", "0.0625",
            "--eval_epochs", "1", "--runs", "1", "--device", "cpu"]
    for disturbance in (0, 1):  # whatever ran before in the process (the quickstart condenses first)
        torch.manual_seed(disturbance)
        torch.rand(disturbance + 3)
        evaluate.main(parse("evaluate", argv))
    assert torch.equal(drawn[0][0], drawn[1][0])
    evaluate.main(parse("evaluate", argv + ["--seed", "5"]))
    assert not torch.equal(drawn[0][0], drawn[2][0])
