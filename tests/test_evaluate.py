"""evaluate.py: several sets x architectures, baselines, records, summary, resumed runs, bad input."""
import json

import pytest
import torch

import evaluate
from arguments import parse
from data.synthetic import SyntheticSet
from reports.records import read_lines, runs_path
from tests.fixtures import write_fixture
from utils import UserError

TINY = ["--eval_epochs", "1", "--eval_interval", "1", "--batch_size", "16", "--width", "0.0625", "--device", "cpu"]


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    """A CIFAR-10 fixture, two condensed sets (ipc 1 and 2) and argv for evaluate.py."""
    monkeypatch.chdir(tmp_path)
    data_dir = write_fixture("cifar10", str(tmp_path / "data"))
    for ipc in (1, 2):
        SyntheticSet(10, ipc, 3, 32).save(str(tmp_path / f"set_ipc{ipc}.pt"))
    return ["-d", "cifar10", "--data_dir", data_dir] + TINY


def test_sets_by_architectures_records_and_summary(cifar, tmp_path, capsys):
    entries = evaluate.main(parse("evaluate", cifar + ["--data", str(tmp_path / "set_*.pt"), "--runs", "2",
                                                       "--eval_nets", "convnet,resnet_ap-10"]))
    assert [(e["set"][-11:], e["network"]) for e in entries] == [
        ("set_ipc1.pt", "convnet-3"), ("set_ipc1.pt", "resnet_ap-10"),
        ("set_ipc2.pt", "convnet-3"), ("set_ipc2.pt", "resnet_ap-10")]
    lines = read_lines(str(tmp_path / "results" / "evaluations.jsonl"))
    assert len(lines) == 4 and lines[2]["ipc"] == 2 and len(lines[3]["final"]) == 2
    assert lines[0]["protocol"]["epochs"] == 1 and lines[0]["protocol"]["dsa_strategy"]
    assert lines[1]["network_config"]["net_type"] == "resnet_ap"
    capsys.readouterr()
    assert evaluate.main(parse("evaluate", ["--summarize", str(tmp_path / "results" / "evaluations.jsonl")])) is None
    table = capsys.readouterr().out
    assert len([l for l in table.splitlines() if l.startswith("|")]) == 6 and "resnet_ap-10" in table and "+-" in table


def test_interrupted_evaluation_trains_only_missing_runs(cifar, tmp_path, capsys):
    argv = cifar + ["--data", str(tmp_path / "set_ipc1.pt"), "--parallel", "1"]  # each run reproducible alone
    first, = evaluate.main(parse("evaluate", argv + ["--runs", "1"]))
    capsys.readouterr()
    second, = evaluate.main(parse("evaluate", argv + ["--runs", "3"]))
    out = capsys.readouterr().out
    assert "run 1/3: final acc" in out and "recorded by an earlier call" in out
    assert second["final"][0] == first["final"][0] and len(second["final"]) == 3
    runs = [json.loads(line) for line in open(runs_path(str(tmp_path / "results" / "evaluations.jsonl")))]
    assert sorted(r["run"] for r in runs) == [0, 1, 2]
    # the runs are seeded one by one, so a fresh call gives the same numbers
    again, = evaluate.main(parse("evaluate", argv + ["--runs", "3", "--results", str(tmp_path / "other.jsonl")]))
    assert again["final"] == second["final"]


@pytest.mark.parametrize("extra, message", [
    (["--data", "nothing_*.pt"], "matches no file"),
    (["--data", "set_ipc1.pt", "--eval_nets", "vgg"], "unknown architecture 'vgg'"),
    (["--data", "set_ipc1.pt", "--eval_nets", "resnet-x"], "name-depth"),
    ([], "pass either --data"),
    (["--data", "set_ipc1.pt", "--baseline", "random"], "pass either --data"),
    (["--baseline", "herding", "--ipc", "1"], "expert 0"),
    (["--baseline", "random", "--ipc", "5"], "needs 5 real images per class, but class airplane has only 4"),
])
def test_bad_evaluation_input(cifar, extra, message):
    with pytest.raises(UserError, match=message):
        evaluate.main(parse("evaluate", cifar + extra))


def test_runs_zero_and_unknown_baseline_are_refused():
    with pytest.raises(UserError, match="--runs must be at least 1"):
        parse("evaluate", ["--runs", "0"])
    with pytest.raises(UserError, match="argument --baseline: invalid choice: 'bogus'.*see python evaluate.py --help"):
        parse("evaluate", ["--baseline", "bogus"])


def test_set_of_another_dataset_is_refused(cifar, tmp_path):
    torch.save([torch.rand(10, 1, 28, 28), torch.arange(10)], tmp_path / "mnist_set.pt")
    with pytest.raises(UserError, match="needs"):
        evaluate.main(parse("evaluate", cifar + ["--data", str(tmp_path / "mnist_set.pt")]))
