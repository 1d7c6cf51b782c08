"""reports/plots.py: a run's curves from its metrics.jsonl, accuracy against IPC from a results file."""
import pytest
from PIL import Image

from reports.plots import method_label, plot_run, plot_summary
from utils import Logger, UserError


def png_size(path):
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        picture.load()
        return picture.size


def test_plot_run_draws_losses_and_accuracies_from_the_runs_metrics(tmp_path):
    log = Logger(str(tmp_path))
    for k in (1, 20, 40):
        log.metrics(iter=k, inner=1.0 / k, calibration=0.5, sec_per_iter=0.1)
    log.metrics(iter=40, select_acc=90.0, test_acc=88.0, test_std=1.5, test_best_check=89.0)
    log.metrics(iter=40, inner=0.02, calibration=0.4, sec_per_iter=0.1)  # a resumed run repeats an iteration
    path = plot_run(str(tmp_path))
    assert path == str(tmp_path / "curves.png")
    width, height = png_size(path)
    assert 800 <= width <= 1600 and 300 <= height <= 700
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp_")]


def test_plot_run_without_evaluations_or_metrics(tmp_path):
    Logger(str(tmp_path)).metrics(iter=1, inner=0.5, calibration=0.0, sec_per_iter=0.1)
    assert png_size(plot_run(str(tmp_path), str(tmp_path / "elsewhere.png")))[0] >= 800
    with pytest.raises(UserError, match="has no metrics.jsonl"):
        plot_run(str(tmp_path / "missing"))


def entry(name, ipc, finals, key, method=None, factor=1, labels="hard", dataset="digits"):
    e = {"set": name, "dataset": dataset, "ipc": ipc, "factor": factor, "network": "convnet-3", "final": finals,
         "key": key, "labels": labels}
    return {**e, "method": method} if method is not None else e


def test_plot_summary_draws_each_dataset_and_method(tmp_path):
    entries = [entry("a/data_200.pt", 1, [93.0, 94.0], "k1", {"num_premodel": 5}),
               entry("a/data_200.pt", 1, [93.5], "k1", {"num_premodel": 5}),  # the latest record of k1 wins
               entry("b/data_200.pt", 10, [96.0, 97.0], "k2", {"num_premodel": 5}),
               entry("c/data_200.pt", 1, [94.0], "k3", {"num_premodel": 0}),
               entry("score:random", 1, [75.0, 78.0], "k4"),
               entry("score:full", 134, [98.0, 99.0], "k5"),
               entry("baseline:herding", 50, [60.0], "k6", dataset="cifar10")]
    path = plot_summary(entries, str(tmp_path / "ipc.png"))
    width, height = png_size(path)
    assert 1000 <= width <= 1400 and 300 <= height <= 600  # two panels side by side


def test_method_labels():
    assert method_label(entry("x.pt", 1, [1.0], "k", {"num_premodel": 0}, factor=2, labels="soft")) == \
        "DM f2, soft labels, convnet-3"
    assert method_label(entry("x.pt", 1, [1.0], "k", {"num_premodel": 5})) == "DANCE, convnet-3"
    assert method_label(entry("x.pt", 1, [1.0], "k", {"num_premodel": 5, "align": "cf"})) == "DANCE (cf), convnet-3"
    assert method_label(entry("baseline:random", 1, [1.0], "k")) == "random (real), convnet-3"
    assert method_label(entry("x.pt", 1, [1.0], "k")) == "condensed, convnet-3"
