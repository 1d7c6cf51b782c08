"""Resumable runs under real faults: SIGKILL (also in the middle of a checkpoint write), SIGTERM/SIGINT,
truncated checkpoints, failed writes and NaN. A resumed run must end bit for bit where an uninterrupted
one with the same seed ends (CPU)."""
import errno
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import DANCE
import pretrain
from arguments import parse
from tests.fixtures import write_fixture
from condense.run_folder import load_state
from condense.updates import SCHEDULES
from utils import RunStopped, UserError, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A child process: run pretrain.py or DANCE.py through run_cli, and kill itself at a chosen point.
#   iteration K SIG : send SIG to itself at the end of condensation iteration K (1-based)
#   write N FILE    : SIGKILL right after the N-th atomic write of FILE (state.pt, premodelI_progress.pt)
#   midwrite N FILE : SIGKILL half-way through writing the temp file of the N-th write of FILE
#   none            : no fault of its own (to be killed from outside)
DRIVER = r'''
import io, os, signal, sys
sys.path.insert(0, sys.argv[1])
import utils, DANCE, pretrain
from arguments import parse

script, mode, at, target, argv = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:]
real_write, writes = utils._atomic_write, [0]


def dying_write(path, write_fn):
    if mode not in ("write", "midwrite") or os.path.basename(path) != target:
        return real_write(path, write_fn)
    writes[0] += 1
    if writes[0] < at:
        return real_write(path, write_fn)
    if mode == "write":
        real_write(path, write_fn)
        os.kill(os.getpid(), signal.SIGKILL)

    def half(f):
        buffer = io.BytesIO()
        write_fn(buffer)
        f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    real_write(path, half)


def hook(k, synset, encoders):
    if mode == "iteration" and k == at:
        os.kill(os.getpid(), getattr(signal, target))


utils._atomic_write = dying_write
if script == "DANCE":
    utils.run_cli(lambda a: DANCE.main(a, on_iteration=hook), lambda: parse("condense", argv))
else:
    utils.run_cli(pretrain.main, lambda: parse("pretrain", argv))
'''

NITER, CKPT = 12, 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Fixture data, 2 experts and an uninterrupted reference run (the result every fault must reproduce)."""
    base = tmp_path_factory.mktemp("resume")
    data_dir = write_fixture("folder", str(base / "data"))
    common = ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--width", "0.0625", "--seed", "1",
              "--device", "cpu"]
    pre = common + ["--pretrain_dir", str(base / "experts"), "--pretrain_amount", "2", "--pretrain_epochs", "3",
                    "--batch_real", "16", "--parallel", "1"]
    pretrain.main(parse("pretrain", pre))
    cond = common + ["--pretrain_dir", str(base / "experts"), "--ipc", "1", "--factor", "2", "--num_premodel", "2",
                     "--batch_real", "4", "--niter", str(NITER), "--ckpt_every", str(CKPT), "--eval_every", "4",
                     "--eval_epochs", "1", "--eval_interval", "1", "--batch_size", "16"]
    reference = DANCE.main(parse("condense", cond + ["--save_dir", str(base / "ref")])).data.detach().clone()
    driver = base / "driver.py"
    driver.write_text(DRIVER)
    return {"base": base, "pre": pre, "cond": cond, "reference": reference, "driver": str(driver)}


def child(setup, script, mode, at, target, argv):
    """Start the driver as a separate process (a real process to kill)."""
    cmd = [sys.executable, setup["driver"], ROOT, script, mode, str(at), target, *argv]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc):
    out, err = proc.communicate(timeout=300)
    return proc.returncode, err


def resume(run, *extra):
    """Continue a run in this process, as `python DANCE.py --resume RUN` would; returns the final set."""
    return DANCE.main(parse("condense", ["--resume", str(run), *extra])).data.detach()


def state_iter(run):
    return torch.load(os.path.join(run, "state.pt"), weights_only=True)["next_iter"]


@pytest.mark.slow
@pytest.mark.parametrize("mode, at, target, resumes_at", [
    ("iteration", 2, "SIGKILL", None),     # before the first checkpoint: no state.pt, restarts from iteration 1
    ("iteration", 8, "SIGKILL", 6),        # between checkpoints
    ("midwrite", 2, "state.pt", 3),        # half-way through writing the second state.pt
])
def test_sigkill_then_resume_is_bit_identical(setup, tmp_path, mode, at, target, resumes_at):
    run = tmp_path / "run"
    code, err = finished(child(setup, "DANCE", mode, at, target, setup["cond"] + ["--save_dir", str(run)]))
    assert code == -signal.SIGKILL, err
    assert (run / "data_0.pt").is_file()
    if resumes_at is None:
        assert not (run / "state.pt").exists()
    else:
        assert state_iter(run) == resumes_at  # the checkpoint before the kill is intact and loads
    if mode == "midwrite":
        assert glob.glob(str(run / ".tmp_state.pt*")), "the kill should leave a half-written temp file"
    assert torch.equal(resume(run), setup["reference"])
    assert not glob.glob(str(run / ".tmp_*"))
    log = (run / "log.txt").read_text()
    assert (f"resuming after iteration {resumes_at}" if resumes_at else "restarting from iteration 1") in log
    assert "compile off (as the run decided when it started, its args.json)" in log  # no --no-compile was given
    assert torch.equal(torch.load(run / f"data_{NITER}.pt", weights_only=True)[0], setup["reference"])


@pytest.mark.slow
def test_sigkill_from_outside_at_an_unknown_point(setup, tmp_path):
    run = tmp_path / "run"
    proc = child(setup, "DANCE", "none", 0, "-", setup["cond"] + ["--save_dir", str(run), "--ckpt_every", "1"])
    deadline = time.time() + 120
    while not (run / "state.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.kill()  # SIGKILL wherever the child is: in an update, an evaluation, or writing a file
    proc.communicate(timeout=60)
    assert torch.equal(resume(run), setup["reference"])


@pytest.mark.slow
def test_sigterm_saves_state_exits_143_and_the_command_line_resumes(setup, tmp_path):
    run = tmp_path / "run"
    code, err = finished(child(setup, "DANCE", "iteration", 5, "SIGTERM", setup["cond"] + ["--save_dir", str(run)]))
    assert code == 143, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM") and f"--resume {run}" in last and "Traceback" not in err
    assert state_iter(run) == 5  # saved at the end of the iteration the signal arrived in
    out = subprocess.run([sys.executable, os.path.join(ROOT, "DANCE.py"), "--resume", str(run)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert torch.equal(torch.load(run / f"data_{NITER}.pt", weights_only=True)[0], setup["reference"])


def test_sigint_in_process_then_resume_and_extend_niter(setup, tmp_path):
    run = tmp_path / "run"
    previous = signal.getsignal(signal.SIGINT)

    def interrupt(k, synset, encoders):
        if k == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunStopped, match="SIGINT") as stopped:
        DANCE.main(parse("condense", setup["cond"] + ["--save_dir", str(run)]), on_iteration=interrupt)
    assert stopped.value.status == 130 and signal.getsignal(signal.SIGINT) is previous
    assert state_iter(run) == 5
    resume(run, "--niter", "8")  # a shorter run first, finished; then extended to the reference's length
    assert torch.load(run / "state.pt", weights_only=True)["done"]
    assert torch.equal(resume(run, "--niter", str(NITER)), setup["reference"])


@pytest.mark.parametrize("learned", [[], ["--cf_sampling_net"]], ids=["drawn", "sampling_net"])
def test_a_stopped_cf_run_resumes_bit_identically(setup, tmp_path, learned):
    """cf's frequencies are keyed by class and iteration, and NCFM's sampling network with its optimiser is in
    state.pt, so a resumed run computes what the whole run computes."""
    cond = setup["cond"] + ["--align", "cf", "--cf_frequencies", "64", "--niter", "8"] + learned
    whole = DANCE.main(parse("condense", cond + ["--save_dir", str(tmp_path / "whole")])).data.detach().clone()

    def interrupt(k, synset, encoders):
        if k == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(RunStopped):
        DANCE.main(parse("condense", cond + ["--save_dir", str(tmp_path / "run")]), on_iteration=interrupt)
    assert torch.equal(resume(tmp_path / "run"), whole)


ALIGNMENT_KEYS = ("align", "align_scale", "mmd_bandwidths", "cf_alpha", "cf_beta", "cf_frequencies",
                  "moments_weights")


def test_a_run_from_before_align_resumes_at_its_defaults_and_refuses_another_alignment(setup, tmp_path):
    """args.json and state.pt without the alignment's settings (code of 2026-12-03) continue as mean, exactly."""
    run = tmp_path / "run"
    DANCE.main(parse("condense", setup["cond"] + ["--save_dir", str(run), "--niter", "6"]))
    settings = json.loads((run / "args.json").read_text())
    (run / "args.json").write_text(json.dumps({k: v for k, v in settings.items() if k not in ALIGNMENT_KEYS}))
    state = torch.load(run / "state.pt", weights_only=True)
    state["args"] = {k: v for k, v in state["args"].items() if k not in ALIGNMENT_KEYS}
    torch.save(state, run / "state.pt")
    with pytest.raises(UserError, match="settings differ from the run's: align mean -> cf"):
        parse("condense", ["--resume", str(run), "--align", "cf"])
    assert torch.equal(resume(run, "--niter", str(NITER)), setup["reference"])


def test_resume_with_changed_settings_is_refused_naming_them(setup, tmp_path, capsys):
    ref = setup["base"] / "ref"
    argv = ["--resume", str(ref), "--lr_img", "0.2", "--niter", "20", "--eval_every", "2", "--device", "cpu"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_status:  # exactly what `python DANCE.py ...` runs
        run_cli(DANCE.main, lambda: parse("condense", argv))
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_status.value.code == 2 and len(lines) == 1, lines
    assert "settings differ from the run's: lr_img 0.005 -> 0.2;" in lines[0] and "niter" not in lines[0]

    with pytest.raises(UserError, match=r"seed 1 -> 2, width 0.0625 -> 0.125"):
        parse("condense", ["--resume", str(ref), "--seed", "2", "--width", "0.125"])
    with pytest.raises(UserError, match=r"val_split 0.0 -> 0.1"):  # the held-out split changes the training set
        parse("condense", ["--resume", str(ref), "--val_split", "0.1"])
    assert parse("condense", ["--resume", str(ref), "--eval_every", "0"]).eval_every == 0  # evaluation only
    args = parse("condense", ["--resume", str(ref), "--eval_every", "2", "--ckpt_every", "5"])
    assert (args.eval_every, args.ckpt_every, args.seed, args.save_dir) == (2, 5, 1, str(ref))
    assert args.pretrain_dir == str(setup["base"] / "experts")  # the run's settings, not the defaults
    with pytest.raises(UserError, match="no args.json there"):
        parse("condense", ["--resume", str(tmp_path / "nothing")])
    with pytest.raises(UserError, match="a resumed run stays in its folder"):
        parse("condense", ["--resume", str(ref), "--save_dir", str(tmp_path / "elsewhere")])
    with pytest.raises(UserError, match="already holds a condensation run; pass a new --save_dir or --resume"):
        DANCE.main(parse("condense", setup["cond"] + ["--save_dir", str(ref)]))
    copy = tmp_path / "copy"
    shutil.copytree(ref, copy)
    with pytest.raises(UserError, match="has done 12 iterations, more than --niter 4"):
        resume(copy, "--niter", "4")


@pytest.mark.parametrize("failing", ["os.replace", "tempfile.mkstemp"])
def test_failed_write_is_a_user_error_and_keeps_the_previous_checkpoint(setup, tmp_path, monkeypatch, failing):
    run = tmp_path / "run"
    DANCE.main(parse("condense", setup["cond"] + ["--save_dir", str(run), "--niter", "3", "--eval_every", "0"]))
    before = (run / "state.pt").read_bytes()
    module, name = failing.split(".")
    real = getattr(__import__(module), name)

    def disk_full(*a, **kw):
        target = a[1] if name == "replace" else kw.get("prefix", "")
        if "state.pt" in str(target):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **kw)

    monkeypatch.setattr(f"{failing}", disk_full)
    with pytest.raises(UserError) as error:
        resume(run, "--niter", "9")
    message = str(error.value)
    assert "could not write" in message and "state.pt" in message and "No space left on device" in message
    assert "\n" not in message
    assert (run / "state.pt").read_bytes() == before
    assert not glob.glob(str(run / ".tmp_*"))


@pytest.mark.parametrize("poison", ["nan_data", "inf_loss"])
def test_nan_stops_the_run_and_the_last_checkpoint_is_finite(setup, tmp_path, monkeypatch, poison):
    run, calls = tmp_path / "run", [0]
    real, calibrate = SCHEDULES["per_class"]

    def poisoned(synset, *args):
        inner = real(synset, *args)
        calls[0] += 1
        if calls[0] == 8:  # iteration 8
            if poison == "nan_data":
                with torch.no_grad():
                    synset.data[0, 0, 0, 0] = float("nan")
            else:
                inner = inner + float("inf")
        return inner

    monkeypatch.setitem(SCHEDULES, "per_class", (poisoned, calibrate))
    with pytest.raises(UserError, match=r"iteration 8: NaN or Inf .*state.pt \(after iteration 6\), is intact"):
        DANCE.main(parse("condense", setup["cond"] + ["--save_dir", str(run)]))
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["next_iter"] == 6 and torch.isfinite(state["data"]).all()
    for path in glob.glob(str(run / "data_*.pt")):
        assert torch.isfinite(torch.load(path, weights_only=True)[0]).all(), path


def expert_files(folder):
    """Every expert checkpoint's tensors, by file name."""
    return {os.path.basename(p): torch.load(p, weights_only=True)
            for p in sorted(glob.glob(os.path.join(folder, "premodel*.pth.tar")))}


def same_experts(a, b):
    return a.keys() == b.keys() and all(
        a[f].keys() == b[f].keys() and all(torch.equal(a[f][k], b[f][k]) for k in a[f]) for f in a)


@pytest.mark.slow
@pytest.mark.parametrize("mode, at, resumed_after", [
    ("write", 2, 2),      # after epoch 2 of expert 1 was saved
    ("midwrite", 2, 1),   # while epoch 2's state was being written: epoch 1's stays
    ("write", 3, 3),      # after its last epoch, before the trained checkpoint
])
def test_pretrain_killed_mid_expert_resumes_bit_identically(setup, tmp_path, mode, at, resumed_after):
    folder = tmp_path / "experts"
    argv = [a if a != str(setup["base"] / "experts") else str(folder) for a in setup["pre"]]
    code, err = finished(child(setup, "pretrain", mode, at, "premodel1_progress.pt", argv))
    assert code == -signal.SIGKILL, err
    assert (folder / "premodel1_progress.pt").is_file() and not (folder / "premodel1_trained.pth.tar").exists()
    pretrain.main(parse("pretrain", argv))
    log = (folder / "log.txt").read_text()
    assert "expert 0: already trained, skipped" in log and f"expert 1: resuming after epoch {resumed_after}" in log
    assert same_experts(expert_files(folder), expert_files(setup["base"] / "experts"))
    assert not glob.glob(str(folder / "*progress*")) and not glob.glob(str(folder / ".tmp_*"))


def test_truncated_or_mismatched_expert_is_retrained(setup, tmp_path):
    folder = tmp_path / "experts"
    shutil.copytree(setup["base"] / "experts", folder)
    trained = folder / "premodel1_trained.pth.tar"
    trained.write_bytes(trained.read_bytes()[:300])
    init = folder / "premodel0_init.pth.tar"
    state = torch.load(init, weights_only=True)
    key = next(iter(state))
    torch.save({**state, key: torch.zeros(2, *state[key].shape)}, init)  # loads, but mismatches the model
    argv = [a if a != str(setup["base"] / "experts") else str(folder) for a in setup["pre"]]
    pretrain.main(parse("pretrain", argv))
    log = (folder / "log.txt").read_text()
    assert log.count("a checkpoint is missing, truncated or mismatched; training it again") == 2
    assert same_experts(expert_files(folder), expert_files(setup["base"] / "experts"))


@pytest.mark.slow
def test_experts_trained_together_resume_bit_identically(setup, tmp_path):
    argv = setup["pre"] + ["--parallel", "0"]  # the last flag wins: both experts at once
    together = [a if a != str(setup["base"] / "experts") else str(tmp_path / "together") for a in argv]
    pretrain.main(parse("pretrain", together))
    log = (tmp_path / "together" / "log.txt").read_text()
    assert "for 2 together" in log and not glob.glob(str(tmp_path / "together" / "*progress*"))
    killed = [a if a != str(setup["base"] / "experts") else str(tmp_path / "killed") for a in argv]
    code, err = finished(child(setup, "pretrain", "write", 2, "premodels0-1_progress.pt", killed))
    assert code == -signal.SIGKILL, err
    pretrain.main(parse("pretrain", killed))
    assert "experts 0, 1: resuming after epoch 2" in (tmp_path / "killed" / "log.txt").read_text()
    assert same_experts(expert_files(tmp_path / "killed"), expert_files(tmp_path / "together"))
    # initialised as alone (seed * 1000 + i), trained together: not the experts trained one at a time
    alone, together = expert_files(setup["base"] / "experts"), expert_files(tmp_path / "together")
    init = "premodel1_init.pth.tar"
    assert all(torch.equal(alone[init][k], v) for k, v in together[init].items())


def test_a_state_from_before_keyed_draws_is_refused_naming_the_way_out(tmp_path):
    torch.save({"next_iter": 3, "done": False, "data": torch.zeros(1), "optimizer": {}, "sampler": {}, "best": -1.0,
                "rng": {}, "args": {"niter": 5}}, tmp_path / "state.pt")  # format 1 (2026-11)
    with pytest.raises(UserError, match="written by an earlier DANCE.py, whose random streams differ"):
        load_state(str(tmp_path), {"niter": 5})


@pytest.mark.parametrize("damage, message", [
    (lambda s: s["data"].view(-1)[5].fill_(float("nan")), "holds NaN or Inf in its data"),
    (lambda s: s["momentum"].view(-1)[0].fill_(float("inf")), "holds NaN or Inf in its momentum"),
    (lambda s: s.update(data=s["data"][:, :, :8]), r"holds a data of shape \(3, 3, 8, 16\), not the \(3, 3, 16, 16\)"),
])
def test_a_damaged_state_is_refused_before_use_without_a_resume_loop(setup, tmp_path, damage, message):
    run = tmp_path / "run"
    DANCE.main(parse("condense", setup["cond"] + ["--save_dir", str(run), "--niter", "3", "--eval_every", "0"]))
    state = torch.load(run / "state.pt", weights_only=True)
    damage(state)
    torch.save(state, run / "state.pt")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with pytest.raises(UserError, match=message) as e:
        resume(run, "--niter", "6")
    assert "new --save_dir" in str(e.value) and "data_3.pt" in str(e.value) and "--resume" not in str(e.value)[8:]
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.name != "log.txt"} == \
        {k: v for k, v in before.items() if k != "log.txt"}  # nothing rewritten


def test_a_folder_in_use_by_a_live_run_is_refused_and_a_dead_runs_lock_is_taken_over(setup, tmp_path):
    from condense.run_folder import LOCK, _process_start

    run = tmp_path / "run"
    DANCE.main(parse("condense", setup["cond"] + ["--save_dir", str(run), "--niter", "3", "--eval_every", "0"]))
    assert not (run / LOCK).exists()  # released at the end
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = {"pid": live.pid, "host": __import__("socket").gethostname(), "start": _process_start(live.pid)}
        (run / LOCK).write_text(json.dumps(owner))
        state = (run / "state.pt").stat().st_mtime_ns
        with pytest.raises(UserError, match=f"is in use by process {live.pid} .*wait for that run to end, or pass "
                                            f"another --save_dir"):
            resume(run, "--niter", "6")
        assert (run / "state.pt").stat().st_mtime_ns == state and json.loads((run / LOCK).read_text()) == owner
        if owner["start"] is not None:  # the same pid with another start time: a reused pid, not the run
            (run / LOCK).write_text(json.dumps({**owner, "start": owner["start"] + 1}))
            resume(run, "--niter", "5")
            assert state_iter(run) == 5 and not (run / LOCK).exists()
        (run / LOCK).write_text(json.dumps(owner))
    finally:
        live.kill()
        live.wait()
    resume(run, "--niter", "6")  # its process is gone: the lock is stale
    assert state_iter(run) == 6 and not (run / LOCK).exists()
    (run / LOCK).write_text(json.dumps({**owner, "host": "another-node"}))  # cannot be checked from here
    with pytest.raises(UserError, match=r"on another-node .*if it is gone \(killed on that machine.*delete .*run.lock"):
        resume(run, "--niter", "7")


def test_a_per_class_run_resumes_only_on_the_process_count_it_ran_on(setup, tmp_path):
    run = tmp_path / "run"
    DANCE.main(parse("condense", setup["cond"] + ["--save_dir", str(run), "--niter", "3", "--eval_every", "0"]))
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["processes"] == 1
    description = json.loads((run / "data_3.json").read_text())
    assert description["run"]["processes"] == 1 and description["run"]["method"]["update"] == "per_class"
    assert description["run"]["experts"]["folder"] == str(setup["base"] / "experts")
    assert len(description["run"]["experts"]["manifest"]) == 16
    state["processes"] = 2
    torch.save(state, run / "state.pt")
    with pytest.raises(UserError, match=r"ran on 2 process\(es\).*resume it on 2 \(torchrun --nproc_per_node 2 "
                                        r"DANCE.py --resume"):
        resume(run, "--niter", "6")
