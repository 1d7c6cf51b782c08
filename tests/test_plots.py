"""reports/plots.py: a run's curves from its metrics.jsonl, accuracy against IPC from a results file."""
import pytest
from PIL import Image

from reports.plots import method_label, plot_run, plot_summary, summary_series
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


def test_summary_series_never_pools_evaluations_that_differ():
    dance, no_calib = {"num_premodel": 5, "iter_calib": 1}, {"num_premodel": 5, "iter_calib": 0}
    short, long = {"epochs": 1, "lr": 0.01}, {"epochs": 20, "lr": 0.01}
    entries = [{**entry("s0.pt", 1, [20.0], "a", dance), "protocol": long, "condense_seed": 0},
               {**entry("s1.pt", 1, [22.0], "b", dance), "protocol": long, "condense_seed": 1},  # seeds pool
               {**entry("n.pt", 1, [30.0], "c", no_calib), "protocol": long},
               {**entry("s0.pt", 1, [5.0], "d", dance), "protocol": short},
               {**entry("t.pt", 10, [60.0], "e", dance), "protocol": {"epochs": 300, "lr": 0.01}},
               {**entry("score:full", 134, [98.0], "f"), "protocol": long},
               {**entry("score:full", 134, [90.0], "g"), "protocol": short}]
    series = summary_series(entries)["digits"]
    assert series["DANCE, convnet-3, epochs 20, iter_calib 1"] == {1: [20.0, 22.0]}
    assert series["DANCE, convnet-3, epochs 20, iter_calib 0"] == {1: [30.0]}
    assert series["DANCE, convnet-3, epochs 1, iter_calib 1"] == {1: [5.0]}
    # an ipc evaluated one way only does not split a line: its own settings name it
    assert series["DANCE, convnet-3, epochs 300, iter_calib 1"] == {10: [60.0]}
    assert series["whole training set, convnet-3, epochs 20"] == {None: [98.0]}
    assert series["whole training set, convnet-3, epochs 1"] == {None: [90.0]}
    assert len(series) == 6
    same = [{**entry("s0.pt", 1, [20.0], "a", dance), "protocol": long},
            {**entry("t.pt", 10, [60.0], "e", dance), "protocol": {"epochs": 300, "lr": 0.01}}]
    assert summary_series(same)["digits"] == {"DANCE, convnet-3": {1: [20.0], 10: [60.0]}}  # ipc-tied epochs: one line


def test_a_plots_format_follows_its_file_name(tmp_path):
    entries = [entry("a/data_200.pt", 1, [93.0], "k1", {"num_premodel": 5})]
    pdf = plot_summary(entries, str(tmp_path / "ipc.pdf"))
    assert open(pdf, "rb").read(5) == b"%PDF-"
    svg = plot_summary(entries, str(tmp_path / "ipc.svg"))
    assert b"<svg" in open(svg, "rb").read(2000)
    with pytest.raises(UserError, match=r"--plot .*ipc.jpg: the file name must end in .png, .pdf, .svg"):
        plot_summary(entries, str(tmp_path / "ipc.jpg"))
    assert not (tmp_path / "ipc.jpg").exists()


def test_summary_table_shows_what_tells_rows_apart():
    from reports.records import summary_table

    rows = [{**entry("a.pt", 1, [20.0], "a", {"num_premodel": 5}), "mean": 20.0, "std": 0.0, "best_mean": 20.0,
             "protocol": {"epochs": epochs}, "network_config": {"config": {"width": 0.25}}} for epochs in (1, 20)]
    table = summary_table(rows)
    assert "| convnet-3 w0.25 | 1 | 1 | 20.00" in table and "| convnet-3 w0.25 | 20 | 1 | 20.00" in table
