"""--logger: TensorBoard and W&B trackers of pretrain.py, DANCE.py and evaluate.py, read back with each tool's own
reader (TensorBoard's EventAccumulator; W&B's offline .wandb log through wandb's own protobuf records)."""
import glob
import importlib.util
import json
import os
import signal
import struct
import sys

import pytest

import DANCE
import evaluate
import pretrain
from arguments import parse
from reports.trackers import open_trackers
from training.distributed import World
from utils import RunStopped, UserError, run_cli

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None
needs_tensorboard = pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed "
                                                                   "(pip install tensorboard)")
needs_wandb = pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install -r "
                                                       "requirements-extras.txt)")

TINY = ["-d", "digits", "--device", "cpu", "--ipc", "1", "--niter", "4", "--eval_every", "2", "--eval_epochs", "2",
        "--num_premodel", "0", "--batch_real", "16", "--width", "0.0625"]


def scalars(folder):
    """{tag: [(step, value)]} of every scalar in a TensorBoard folder, as TensorBoard itself reads it."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(folder, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}, events


def steps(series):
    return [step for step, _ in series]


def stop_at(iteration):
    """An on_iteration hook that sends SIGINT at `iteration`: the run checkpoints it and stops (RunStopped)."""
    def hook(k, synset, encoders):
        if k == iteration:
            os.kill(os.getpid(), signal.SIGINT)
    return hook


@pytest.fixture(autouse=True)
def wandb_in_tmp(tmp_path, monkeypatch):
    """W&B offline, with its config and caches in the test's folder (never the network, never $HOME)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    """One tiny DANCE run with --logger tensorboard (plain DM on digits, 4 iterations, evaluated at 2 and 4)."""
    if not HAS_TENSORBOARD:
        pytest.skip("tensorboard is not installed (pip install tensorboard)")
    run = tmp_path_factory.mktemp("loggers") / "run"
    DANCE.main(parse("condense", TINY + ["--save_dir", str(run), "--logger", "tensorboard"]))
    return run


@needs_tensorboard
def test_dance_tensorboard_scalars_images_and_settings(tensorboard_run):
    found, events = scalars(str(tensorboard_run / "tensorboard"))
    # losses at the log steps (the first iteration and the last), evaluations at eval_every and the end
    for tag in ("loss/inner", "loss/calibration", "time/sec_per_iter", "lr/images"):
        assert steps(found[tag]) == [1, 4], tag
    for tag in ("eval/select_acc", "eval/test_acc", "eval/test_std"):
        assert steps(found[tag]) == [2, 4], tag
    assert found["lr/images"][0][1] == pytest.approx(json.loads((tensorboard_run / "args.json").read_text())["lr_img"])
    metrics = [json.loads(line) for line in (tensorboard_run / "metrics.jsonl").read_text().splitlines()]
    assert found["eval/test_acc"][-1][1] == pytest.approx([m for m in metrics if "test_acc" in m][-1]["test_acc"])
    assert [e.step for e in events.Images("synthetic_set")] == [0, 2, 4]  # the init grid and each saved grid
    settings = events.Tensors("settings/text_summary")
    assert len(settings) == 1 and b'"ipc": 1' in settings[0].tensor_proto.string_val[0]
    # --logger changes no result: the set's description leaves it out of the method
    method = json.loads((tensorboard_run / "data_4.json").read_text())["run"]["method"]
    assert "logger" not in method and "ipc" in method


@needs_tensorboard
def test_a_stopped_run_resumed_continues_the_tensorboard_steps(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RunStopped):
        DANCE.main(parse("condense", TINY + ["--save_dir", str(run), "--logger", "tensorboard"]),
                   on_iteration=stop_at(2))
    assert parse("condense", ["--resume", str(run), "--logger"]).logger == []  # --resume may change --logger
    DANCE.main(parse("condense", ["--resume", str(run)]))  # keeps the run's --logger
    found, events = scalars(str(run / "tensorboard"))
    assert steps(found["loss/inner"]) == [1, 3, 4]  # the first iteration of each session, and the last
    assert steps(found["eval/test_acc"]) == [2, 4]
    assert [e.step for e in events.Images("synthetic_set")] == [0, 2, 4]
    assert len(glob.glob(str(run / "tensorboard" / "events.out.tfevents.*"))) == 2  # the same folder, appended


@needs_tensorboard
@pytest.mark.parametrize("ckpt_every, dies_in", [(2, 4), (0, 3)], ids=["after_a_checkpoint", "before_any"])
def test_steps_a_killed_session_logged_after_its_checkpoint_are_dropped(tmp_path, ckpt_every, dies_in):
    """Killed in an iteration after its last checkpoint (or before any): the resumed session logs the iterations
    since then again, and each step is there once."""
    run = tmp_path / "run"

    def die(k, synset, encoders):
        if k == dies_in:
            raise KeyboardInterrupt  # the process dies here; the iterations before it are in the event file

    with pytest.raises(KeyboardInterrupt):
        DANCE.main(parse("condense", TINY + ["--save_dir", str(run), "--eval_every", "1", "--ckpt_every",
                                            str(ckpt_every), "--logger", "tensorboard"]), on_iteration=die)
    assert steps(scalars(str(run / "tensorboard"))[0]["eval/test_acc"]) == list(range(1, dies_in))
    DANCE.main(parse("condense", ["--resume", str(run)]))
    found, events = scalars(str(run / "tensorboard"))
    assert steps(found["eval/test_acc"]) == [1, 2, 3, 4]
    assert [e.step for e in events.Images("synthetic_set")] == [0, 1, 2, 3, 4]


def wandb_records(path):
    """The records of a W&B run's .wandb file (a LevelDB-style log of wandb's own protobuf Records)."""
    from wandb.proto import wandb_internal_pb2
    raw, block = open(path, "rb").read(), 32768
    assert raw[:4] == b":W&B", path
    pos, parts = 7, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the zero padding at a block's end
            pos += left
            continue
        parts += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def wandb_run(folder):
    """(run id, config, history rows) of one offline W&B run folder."""
    run_id, config, history = None, {}, []
    for record in wandb_records(glob.glob(os.path.join(folder, "run-*.wandb"))[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
            config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return run_id, config, history


@needs_wandb
def test_wandb_offline_run_holds_the_scalars_and_config_and_a_resume_continues_its_id(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RunStopped):
        DANCE.main(parse("condense", TINY + ["--save_dir", str(run), "--logger", "wandb"]), on_iteration=stop_at(2))
    DANCE.main(parse("condense", ["--resume", str(run)]))
    stored = (run / "wandb_run_id.txt").read_text().strip()
    sessions = sorted(glob.glob(str(run / "wandb" / "offline-run-*")))
    assert len(sessions) == 2 and all(s.endswith(stored) for s in sessions)
    rows = []
    for session in sessions:
        run_id, config, history = wandb_run(session)
        assert run_id == stored
        assert config["ipc"] == 1 and config["niter"] == 4 and config["logger"] == ["wandb"]
        rows += history
    at = lambda key: [r["iteration"] for r in rows if key in r]  # noqa: E731
    assert at("loss/inner") == [1, 3, 4] and at("eval/test_acc") == [2, 4]
    assert at("synthetic_set/path") == [0, 2, 4] or at("synthetic_set") == [0, 2, 4]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss/inner"] for r in rows if "loss/inner" in r] == pytest.approx(
        [m["inner"] for m in metrics if "inner" in m])


@needs_wandb
def test_wandb_without_an_api_key_goes_offline_and_says_so(tmp_path, monkeypatch):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    said = []
    track = open_trackers(["wandb"], str(tmp_path / "out"), World(), {"a": 1}, say=said.append)
    track.scalars({"x": 1.0}, 1)
    track.close()
    assert len(said) == 1 and "offline" in said[0] and "wandb sync" in said[0]
    assert glob.glob(str(tmp_path / "out" / "wandb" / "offline-run-*" / "run-*.wandb"))


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_missing_package_is_one_line_at_argument_check_time(package, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed: import and find_spec fail
    message = f"--logger {package} needs the {package} package: pip install {package}"
    for script in ("pretrain", "condense", "evaluate"):
        with pytest.raises(UserError, match=f"^{message}$"):
            parse(script, ["-d", "digits", "--logger", package])
    with pytest.raises(SystemExit) as exited:
        run_cli(lambda a: None, lambda: parse("condense", ["-d", "digits", "--logger", package]))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err == f"error: {message}\n"


def test_unknown_logger_is_refused_by_its_choices():
    with pytest.raises(UserError, match="invalid choice: 'mlflow'"):
        parse("condense", ["-d", "digits", "--logger", "mlflow"])
    assert parse("condense", ["-d", "digits"]).logger == []  # off by default


def test_only_rank_0_tracks(tmp_path):
    track = open_trackers(["tensorboard", "wandb"], str(tmp_path / "out"), World(rank=1, size=2), {"a": 1})
    assert not track and not (tmp_path / "out").exists()
    track.scalars({"x": 1.0}, 1)  # a no-op
    track.close()


@needs_tensorboard
def test_pretrain_logs_train_loss_per_epoch_and_test_accuracy_per_expert(tmp_path):
    experts = tmp_path / "experts"
    pretrain.main(parse("pretrain", ["-d", "digits", "--device", "cpu", "--width", "0.0625", "--pretrain_amount", "1",
                                     "--pretrain_epochs", "2", "--batch_real", "64", "--pretrain_dir", str(experts),
                                     "--logger", "tensorboard"]))
    found, _ = scalars(str(experts / "tensorboard"))
    assert steps(found["expert0/train_loss"]) == [1, 2]
    manifest = json.loads((experts / "manifest.json").read_text())
    assert found["experts/test_acc"] == [(0, pytest.approx(manifest["experts"]["0"]["test_acc"], abs=1e-4))]


@needs_tensorboard
def test_evaluate_logs_each_runs_final_accuracy_and_the_mean_beside_results(tensorboard_run, tmp_path):
    results = tmp_path / "evals.jsonl"
    entries = evaluate.main(parse("evaluate", ["--data", str(tensorboard_run / "data_4.pt"), "--runs", "2",
                                               "--eval_epochs", "1", "--results", str(results),
                                               "--logger", "tensorboard"]))
    found, _ = scalars(str(tmp_path / "evals_tensorboard"))
    tag = f"run/data_4/{entries[0]['network']}"
    assert found[f"{tag}/final_acc"] == [(r, pytest.approx(a, abs=1e-4)) for r, a in enumerate(entries[0]["final"])]
    assert found[f"{tag}/mean_acc"] == [(0, pytest.approx(entries[0]["mean"], abs=1e-4))]
