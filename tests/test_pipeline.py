"""End to end: pretrain.py -> DANCE.py -> evaluate.py on every dataset's fixture, in process and by CLI."""
import json
import os
import subprocess
import sys

import pytest
import torch

import DANCE
import evaluate
import pretrain
from arguments import parse
from arguments.values import load_data
from data.datasets import DATASETS
from reports.records import read_lines
from tests.fixtures import write_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_NET = ["--width", "0.0625", "--seed", "1", "--device", "cpu"]
TINY_EVAL = ["--eval_epochs", "1", "--eval_interval", "1", "--batch_size", "16"]


def tiny_pipeline_args(name, tmp_path):
    """argv lists of the three scripts for a tiny run on `name`'s fixture."""
    data_dir = write_fixture(name, str(tmp_path / "data")) or str(tmp_path / "data")
    common = ["-d", name, "--data_dir", data_dir, "--pretrain_dir", str(tmp_path / "experts")] + TINY_NET
    if name == "folder":
        common += ["--size", "16"]
    pre = common + ["--pretrain_amount", "1", "--pretrain_epochs", "1", "--batch_real", "16"]
    cond = common + TINY_EVAL + ["--ipc", "1", "--factor", "2", "--niter", "2", "--eval_every", "1",
                                 "--num_premodel", "1", "--batch_real", "4", "--save_dir", str(tmp_path / "run")]
    ev = common + TINY_EVAL + ["--factor", "2", "--runs", "2", "--data", str(tmp_path / "run" / "data_best.pt")]
    return pre, cond, ev


# The fast tier runs three datasets (tensor files, image folders, the embedded digits); the full suite all of them.
FAST_PIPELINES = ("cifar10", "digits", "folder")


@pytest.mark.parametrize("name", [n if n in FAST_PIPELINES else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(DATASETS)])
def test_pipeline_runs_on_every_dataset_fixture(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pre, cond, ev = tiny_pipeline_args(name, tmp_path)
    pretrain.main(parse("pretrain", pre))
    manifest = json.load(open(tmp_path / "experts" / "manifest.json"))
    assert set(manifest["experts"]) == {"0"} and manifest["network"]["net_type"] in ("convnet", "resnet_ap")
    for stage in ("init", "trained"):
        assert (tmp_path / "experts" / f"premodel0_{stage}.pth.tar").is_file()
    logged = (tmp_path / "experts" / "log.txt").read_text().splitlines()[0]
    assert name == "imagenet" or "'nclass': 10," not in logged  # no --nclass default logged for other datasets
    if name == "folder":
        assert "'detected': {'nclass': 3," in logged  # a folder's own class count

    DANCE.main(parse("condense", cond))
    run = tmp_path / "run"
    for f in ("args.json", "log.txt", "data_0.pt", "data_1.pt", "data_2.pt", "data_best.pt", "init.png", "img2.png"):
        assert (run / f).is_file(), f
    data, targets = torch.load(run / "data_2.pt", weights_only=True)
    info_nclass = len(targets.unique())
    assert data.dtype == torch.float32 and len(data) == info_nclass  # ipc 1, undecoded
    assert targets.tolist() == sorted(targets.tolist())

    result, = evaluate.main(parse("evaluate", ev))
    tested = len(load_data(parse("evaluate", ev))[1])
    assert len(result["final"]) == 2
    for acc in result["final"]:  # a whole number of the test split's images, in percent
        correct = acc * tested / 100
        assert 0 <= correct <= tested and abs(correct - round(correct)) < 1e-6, (acc, tested)
    assert read_lines(str(tmp_path / "results" / "evaluations.jsonl"))[-1]["final"] == result["final"]


def test_same_seed_gives_the_same_synthetic_set(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pre, cond, _ = tiny_pipeline_args("cifar10", tmp_path)
    pretrain.main(parse("pretrain", pre))
    sets = []
    for i in range(2):
        argv = [a if a != str(tmp_path / "run") else str(tmp_path / f"run{i}") for a in cond]
        DANCE.main(parse("condense", argv + ["--update", "joint", "--select_by", "test"]))
        sets.append(torch.load(tmp_path / f"run{i}" / "data_2.pt", weights_only=True)[0])
    assert torch.equal(sets[0], sets[1])
    DANCE.main(parse("condense", [a if a != str(tmp_path / "run") else str(tmp_path / "run_eval_off")
                                  for a in cond] + ["--update", "joint", "--eval_every", "0"]))
    # evaluation runs under its own random streams: turning it off leaves the set unchanged
    assert torch.equal(sets[0], torch.load(tmp_path / "run_eval_off" / "data_2.pt", weights_only=True)[0])


def logged_losses(run):
    """(inner, calibration) of every logged iteration of a run."""
    return [(m["inner"], m["calibration"]) for m in read_lines(str(run / "metrics.jsonl")) if "inner" in m]


def test_plain_dm_draws_a_new_network_each_iteration_and_never_calibrates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _, cond, _ = tiny_pipeline_args("mnist", tmp_path)
    used = []

    def hook(k, synset, encoders):
        used.append({name: p.clone() for name, p in encoders.net.state_dict().items()})

    DANCE.main(parse("condense", cond + ["--num_premodel", "0", "--eval_every", "0"]), on_iteration=hook)
    assert len(used) == 2 and not all(torch.equal(used[0][k], used[1][k]) for k in used[0])
    losses = logged_losses(tmp_path / "run")
    assert losses and all(inner > 0 and calib == 0 for inner, calib in losses)
    assert (tmp_path / "run" / "data_2.pt").is_file() and not (tmp_path / "run" / "data_best.pt").exists()


def test_iter_calib_0_turns_calibration_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pre, cond, _ = tiny_pipeline_args("mnist", tmp_path)
    pretrain.main(parse("pretrain", pre))
    runs = {}
    for calib in ("0", "1"):
        argv = [a if a != str(tmp_path / "run") else str(tmp_path / f"calib{calib}") for a in cond]
        DANCE.main(parse("condense", argv + ["--iter_calib", calib, "--eval_every", "0"]))
        runs[calib] = logged_losses(tmp_path / f"calib{calib}")
    assert all(inner > 0 and calib == 0 for inner, calib in runs["0"])
    assert all(calib > 0 for _, calib in runs["1"])
    # the same inner-class step first: only calibration tells the two runs apart
    assert runs["0"][0][0] == runs["1"][0][0]


def cli(script, *argv, cwd):
    """Run a script through its command line."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_command_lines_end_to_end(tmp_path):
    pre, cond, ev = tiny_pipeline_args("cifar10", tmp_path)
    for script, argv in (("pretrain.py", pre), ("DANCE.py", cond), ("evaluate.py", ev)):
        out = cli(script, *argv, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
    assert "final acc" in out.stdout and "+-" in out.stdout and "best over test checks" in out.stdout


@pytest.mark.slow
def test_quickstart_short_path(tmp_path, monkeypatch, capsys):
    """Every row at IPC 1, the random one from a new subset per evaluation network, and the grid it names."""
    import quickstart
    monkeypatch.chdir(tmp_path)
    drawn, real = [], evaluate.real_subset
    monkeypatch.setattr(evaluate, "real_subset", lambda kind, *a, **kw: drawn.append((kind, real(kind, *a, **kw)))
                        or drawn[-1][1])
    argv = ["--device", "cpu", "--pretrain_epochs", "1", "--niter", "2", "--eval_epochs", "1", "--runs", "3",
            "--ipc", "1"]
    table, whole = quickstart.main(quickstart.quickstart_parser().parse_args(argv))
    assert list(table) == [1] and list(table[1]) == list(quickstart.ROWS) and len(whole) == 5
    assert all(len(accs) == 3 for accs in table[1].values())
    randoms = [images for kind, (images, _) in drawn if kind == "random"]
    assert len(randoms) == 3 and not any(torch.equal(randoms[i], randoms[j]) for i, j in ((0, 1), (0, 2), (1, 2)))
    out = capsys.readouterr().out
    assert "whole training set" in out and "gain over the random subset" in out
    grid = out.strip().splitlines()[-1].split(": ")[1]
    assert (tmp_path / grid).is_file()
    from PIL import Image
    with Image.open(tmp_path / grid) as picture:  # ten labelled rows of one enlarged digit each
        assert picture.height >= 10 * 48 and picture.width > 48