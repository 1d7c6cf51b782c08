"""evaluate.py --score and --labels soft on a tiny CIFAR-10 fixture: records, the cached whole-set accuracy,
soft labels through grouped training, and --summarize with the scores and --plot."""
import re

import pytest
from PIL import Image

import evaluate
import pretrain
from arguments import parse
from data.synthetic import SyntheticSet
from reports.records import read_lines
from tests.fixtures import write_fixture

TINY = ["--eval_epochs", "1", "--eval_interval", "1", "--batch_size", "16", "--width", "0.0625", "--device", "cpu",
        "--runs", "2"]


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    """A CIFAR-10 fixture (4 training images per class), two condensed sets and a spy on what trains."""
    monkeypatch.chdir(tmp_path)
    data_dir = write_fixture("cifar10", str(tmp_path / "data"))
    for ipc in (1, 2):
        SyntheticSet(10, ipc, 3, 32).save(str(tmp_path / f"set_ipc{ipc}.pt"))
    trained = []
    real = evaluate.evaluate_set

    def spy(images, labels, *args, per_run=None, **kwargs):
        trained.append("per run" if per_run is not None else len(labels))
        return real(images, labels, *args, per_run=per_run, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_set", spy)
    return ["-d", "cifar10", "--data_dir", data_dir] + TINY, trained


def test_score_records_and_reuses_the_whole_training_set(cifar, tmp_path, capsys):
    argv, trained = cifar
    first, = evaluate.main(parse("evaluate", argv + ["--data", str(tmp_path / "set_ipc1.pt"), "--score"]))
    assert trained == [10, "per run", 40]  # the set, random subsets redrawn per run, the 40 training images
    score = first["score"]
    assert len(score["ior"]["runs"]) == 2 and 0 <= score["lrs"]["mean"] <= 1
    assert score["ior"]["runs"][0] == pytest.approx((first["final"][0] - score_runs(tmp_path, "score:random")[0]) / 100)
    out = capsys.readouterr().out
    assert "DD-Ranking: IOR" in out and "HLR" in out and "LRS" in out
    assert "3 evaluation(s) appended to " in out and "(1 of the sets, 2 of the references --score trained)" in out
    trained.clear()
    second, = evaluate.main(parse("evaluate", argv + ["--data", str(tmp_path / "set_ipc2.pt"), "--score"]))
    assert trained == [20, "per run"]  # the whole training set is not trained again
    out = capsys.readouterr().out
    assert "the whole training set (once per dataset, network and protocol): 2 run(s) recorded" in out
    assert "2 evaluation(s) appended to " in out  # the set and its random subsets; the whole set was reused
    assert second["score"]["acc"]["full"] == score["acc"]["full"]
    records = read_lines(str(tmp_path / "results" / "evaluations.jsonl"))
    assert [r["set"] for r in records].count("score:full") == 1
    assert [r["ipc"] for r in records if r["set"] == "score:random"] == [1, 2]
    capsys.readouterr()
    assert evaluate.main(parse("evaluate", ["--summarize", str(tmp_path / "results" / "evaluations.jsonl"),
                                            "--plot", str(tmp_path / "ipc.png")])) is None
    table = capsys.readouterr().out
    assert "DD-Ranking scores" in table and table.count("| hard | 2 |") == 2
    with Image.open(tmp_path / "ipc.png") as picture:
        assert picture.format == "PNG" and 400 <= picture.width <= 1200 and 300 <= picture.height <= 900


def score_runs(tmp_path, name):
    """The per-run final accuracies of the first record of `name` in the default results file."""
    return next(r for r in read_lines(str(tmp_path / "results" / "evaluations.jsonl")) if r["set"] == name)["final"]


def test_soft_labels_score_with_hard_label_hlr(cifar, tmp_path, capsys):
    argv, trained = cifar
    experts = str(tmp_path / "experts")
    pretrain.main(parse("pretrain", argv[:4] + ["--pretrain_amount", "1", "--pretrain_epochs", "1", "--width",
                                                "0.0625", "--device", "cpu", "--pretrain_dir", experts]))
    entry, = evaluate.main(parse("evaluate", argv + ["--data", str(tmp_path / "set_ipc1.pt"), "--score", "--labels",
                                                     "soft", "--temperature", "3", "--pretrain_dir", experts]))
    assert entry["labels"] == "soft" and entry["protocol"]["temperature"] == 3.0
    # the set on soft labels, the set on hard labels (HLR), random subsets on soft labels, the whole set on hard ones
    assert trained == [10, 10, "per run", 40]
    records = read_lines(str(tmp_path / "results" / "evaluations.jsonl"))
    assert [(r["set"].split("/")[-1], r["labels"]) for r in records] == [
        ("set_ipc1.pt", "hard"), ("score:random", "soft"), ("score:full", "hard"), ("set_ipc1.pt", "soft")]
    hard = records[0]["final"]
    assert entry["score"]["hlr"]["runs"] == pytest.approx([records[2]["mean"] / 100 - a / 100 for a in hard])
    assert entry["score"]["ior"]["runs"] == pytest.approx(
        [(a - b) / 100 for a, b in zip(entry["final"], records[1]["final"])])
    assert re.search(r"soft labels of \S*premodel0_trained.pth.tar at temperature 3", capsys.readouterr().out)
