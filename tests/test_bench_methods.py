"""bench/methods.py: the per-seed record that makes the benchmark resumable, and the table's arithmetic on
hand-computed cases."""
import json
import sys

import pytest

import bench.methods as methods
from bench.methods import Record, markdown, paired
from utils import UserError

BUDGET = {"dataset": "digits", "runs": 1, "shared_experts": False, "flags": {"condense": ["--niter", "2"]}}


def test_paired_uses_the_seeds_both_rows_have():
    # seed 2 of a has no partner: differences 1 and 3, mean 2, sample std sqrt(2), standard error 1
    mean, se, n = paired({0: 91.0, 1: 95.0, 2: 80.0}, {0: 90.0, 1: 92.0})
    assert (mean, n) == (2.0, 2)
    assert se == pytest.approx(1.0)


def test_two_processes_add_their_rows_to_one_record(tmp_path):
    path = str(tmp_path / "report.json")
    ipc1, ipc10 = Record(path, BUDGET), Record(path, BUDGET)  # both opened before either wrote
    ipc1.add(1, "dm", 0, {"acc": 50.0})
    ipc10.add(10, "dm", 0, {"acc": 70.0})
    ipc1.add(1, "dance", 0, {"acc": 55.0})
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["figures"] == {"ipc1": {"dm": {"0": {"acc": 50.0}}, "dance": {"0": {"acc": 55.0}}},
                                  "ipc10": {"dm": {"0": {"acc": 70.0}}}}
    assert Record(path, BUDGET).get(10, "dm", 0) == {"acc": 70.0}  # no eval_epochs field: the flags' epochs


def test_a_record_of_another_budget_is_refused(tmp_path):
    path = str(tmp_path / "report.json")
    Record(path, BUDGET).add(1, "dm", 0, {"acc": 50.0, "eval_epochs": None})
    with pytest.raises(UserError, match="another budget.*--report"):
        Record(path, {**BUDGET, "flags": {"condense": ["--niter", "3"]}})


def test_a_figure_of_other_evaluation_epochs_is_not_reused(tmp_path):
    path = str(tmp_path / "report.json")
    Record(path, BUDGET).add(1, "dm", 0, {"acc": 50.0, "eval_epochs": None})
    Record(path, BUDGET).add(10, "dm", 0, {"acc": 70.0, "eval_epochs": None})
    longer = Record(path, BUDGET, lambda ipc: 1500 if ipc == 1 else None)
    assert longer.get(1, "dm", 0) is None  # measured at the flags' epochs, not the 1,500 now asked at IPC 1
    assert longer.get(10, "dm", 0) == {"acc": 70.0, "eval_epochs": None}
    assert longer.accuracies(1, "dm", [0]) == {}


def test_markdown_gives_means_per_seed_figures_and_paired_differences(tmp_path):
    record = Record(str(tmp_path / "r.json"), BUDGET)
    for seed, (random, dm, dance) in enumerate([(40.0, 50.0, 60.0), (42.0, 51.0, 63.0)]):
        for key, acc in (("random", random), ("dm", dm), ("dance", dance)):
            record.add(1, key, seed, {"acc": acc, "eval_epochs": None})
    lines = markdown(record, [1], [0, 1]).splitlines()
    assert "| random real subset | 41.0 +- 1.0 |" in lines
    assert "| DANCE | 61.5 +- 1.5 |" in lines
    assert "| DM | 50.00 / 51.00 |" in lines
    # DANCE - DM: 10, 12 -> 11 +- 1; DM - random: 10, 9 -> 9.5 +- 0.5
    assert "| DANCE - DM | +11.0 +- 1.0 (2) |" in lines
    assert "| DM - random real subset | +9.5 +- 0.5 (2) |" in lines


@pytest.mark.slow
def test_a_rerun_measures_only_what_the_record_lacks(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(methods.EMBEDDED, "digits", {
        "common": ["--eval_epochs", "2"], "pretrain": ["--pretrain_amount", "1", "--pretrain_epochs", "1"],
        "condense": ["--niter", "2", "--num_premodel", "1"]})
    argv = ["methods.py", "--out", str(tmp_path / "work"), "--report", str(tmp_path / "rep"), "--seeds", "0",
            "--ipcs", "1", "--skip_whole", "--device", "cpu"]
    monkeypatch.setattr(sys, "argv", argv + ["--methods", "random", "dance"])
    assert methods.main() == 0
    first = (tmp_path / "rep.json").read_text()
    assert (tmp_path / "work" / "seed0" / "ipc1_dance" / "data_2.pt").is_file()

    measured = []
    real = methods.measure_row
    monkeypatch.setattr(methods, "measure_row", lambda q, seed, ipc, key, experts, epochs: measured.append(key) or
                        real(q, seed, ipc, key, experts, epochs))
    monkeypatch.setattr(sys, "argv", argv + ["--methods", "random", "dm", "dance"])
    assert methods.main() == 0
    assert measured == ["dm"]  # random and DANCE come from the record
    record = json.loads((tmp_path / "rep.json").read_text())["figures"]["ipc1"]
    assert record["dance"] == json.loads(first)["figures"]["ipc1"]["dance"]
    assert "| DANCE - DM |" in (tmp_path / "rep.md").read_text()

    monkeypatch.setattr(sys, "argv", argv + ["--methods", "dm", "--runs", "2"])
    assert methods.main() == 2
    assert "another budget" in capsys.readouterr().err
