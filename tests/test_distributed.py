"""torchrun on the CPU (gloo, 2 processes): experts, evaluation runs and classes dealt out to ranks give what
one process gives (one thread each), and rank 0 alone writes the shared files."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from training.distributed import World
from tests.fixtures import write_fixture, write_folder
from condense.expert_folder import checkpoint_path
from utils import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(script, argv, nproc):
    """`python script argv` (nproc 1) or `torchrun --standalone --nproc_per_node nproc script argv` from the
    repository root, one thread per process either way (torchrun's default: float reductions, and so bits,
    depend on the thread count); returns the output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    runner = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    done = subprocess.run([sys.executable, *runner, os.path.join(ROOT, script), *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def common(tmp_path_factory):
    base = tmp_path_factory.mktemp("distributed")
    data_dir = write_fixture("folder", str(base / "data"))
    return base, ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--width", "0.0625", "--device", "cpu",
                  "--parallel", "1"]


@pytest.mark.slow
def test_experts_dealt_to_two_ranks_equal_the_single_process_ones(common):
    base, flags = common
    argv = flags + ["--pretrain_amount", "3", "--pretrain_epochs", "2"]
    launch("pretrain.py", argv + ["--pretrain_dir", str(base / "one")], 1)
    out = launch("pretrain.py", argv + ["--pretrain_dir", str(base / "two")], 2)
    assert "[rank 1]" in out  # rank 1 trained experts (1) and said so on the terminal, not in the log
    one, two = (json.loads((base / d / "manifest.json").read_text()) for d in ("one", "two"))
    assert sorted(two["experts"]) == ["0", "1", "2"]
    for i in range(3):
        for stage in ("init", "trained"):
            a = torch.load(checkpoint_path(str(base / "one"), i, stage), weights_only=True)
            b = torch.load(checkpoint_path(str(base / "two"), i, stage), weights_only=True)
            assert all(torch.equal(a[k], b[k]) for k in a), (i, stage)
        assert one["experts"][str(i)]["test_acc"] == two["experts"][str(i)]["test_acc"]
    log = (base / "two" / "log.txt").read_text()
    assert "rank 0 of 2" in log and "rank 1" not in log
    assert not list((base / "two").glob("*_progress.pt"))


@pytest.mark.slow
def test_runs_dealt_to_two_ranks_give_one_record_equal_to_one_process(common):
    base, flags = common
    argv = flags + ["--baseline", "random", "--ipc", "2", "--runs", "3", "--eval_epochs", "3"]
    launch("evaluate.py", argv + ["--results", str(base / "one.jsonl")], 1)
    launch("evaluate.py", argv + ["--results", str(base / "two.jsonl")], 2)
    one, two = ([json.loads(line) for line in (base / f"{n}.jsonl").read_text().splitlines()] for n in ("one", "two"))
    assert len(two) == 1 and two[0]["final"] == one[0]["final"] and len(one[0]["final"]) == 3
    runs = [json.loads(line) for line in (base / "two.runs.jsonl").read_text().splitlines()]
    assert sorted(r["run"] for r in runs) == [0, 1, 2]


def test_work_is_dealt_round_robin_and_a_single_process_owns_everything():
    assert World(1, 3).owned(range(8)) == [1, 4, 7] and World(0, 3).owned([5, 6]) == [5]
    assert World().owned([2, 3]) == [2, 3] and World().gather("x") == ["x"] and World().main


def condense_flags(common, experts, chunk=1):
    """Joint condensation flags on the fixture, with two experts trained once for the module."""
    base, flags = common
    if not (experts / "manifest.json").exists():
        launch("pretrain.py", flags + ["--pretrain_amount", "2", "--pretrain_epochs", "2", "--pretrain_dir",
                                       str(experts)], 1)
    return flags + ["--pretrain_dir", str(experts), "--num_premodel", "2", "--ipc", "2", "--update", "joint",
                    "--class_chunk", str(chunk), "--eval_runs", "2", "--eval_epochs", "2"]


def same_sets(a, b, names):
    for name in names:
        x, y = (torch.load(os.path.join(d, name), weights_only=True) for d in (a, b))
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]), name


@pytest.mark.slow
@pytest.mark.parametrize("nclass, chunk, align", [(3, 1, "mean"), (4, 2, "mean"), (3, 1, "cf")])
def test_joint_condensation_on_two_ranks_equals_one_process(tmp_path, nclass, chunk, align):
    """3 classes: shares of 2 and 1 (uneven); 4 classes in chunks of 2: one chunk per rank; cf: its frequencies,
    keyed by class and iteration, are the same on either rank."""
    data_dir = write_folder(str(tmp_path / "data"), nclass=nclass)
    common = (tmp_path, ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--width", "0.0625", "--device",
                         "cpu", "--parallel", "1"])
    argv = condense_flags(common, tmp_path / "experts", chunk) + ["--niter", "6", "--eval_every", "3", "--align", align]
    argv += ["--cf_frequencies", "64"] if align == "cf" else []
    launch("DANCE.py", argv + ["--save_dir", str(tmp_path / "one")], 1)
    out = launch("DANCE.py", argv + ["--save_dir", str(tmp_path / "two")], 2)
    same_sets(tmp_path / "one", tmp_path / "two", ["data_0.pt", "data_3.pt", "data_6.pt", "data_best.pt"])
    one, two = (torch.load(tmp_path / d / "state.pt", weights_only=True) for d in ("one", "two"))
    assert torch.equal(one["momentum"], two["momentum"]) and one["sampler"] == two["sampler"]
    assert sorted(two["sampler"]["passes"]) == list(range(nclass))
    log = (tmp_path / "two" / "log.txt").read_text()
    assert "2 processes" in log and log.count("iteration 6/6") == 1 and "iteration 3: test acc" in log
    assert out.count("done: 6 iterations") == 1  # rank 1 says nothing
    with Image.open(tmp_path / "two" / "curves.png") as curves:  # losses and accuracies drawn at the end
        assert curves.width > 300 and curves.height > 150


@pytest.mark.slow
def test_the_sampling_network_on_two_ranks_matches_one_process_up_to_summation_order(tmp_path):
    """Its gradients are summed over the ranks before each step, so both ranks hold one network; the sum's order
    differs (class 0 | classes 1 + 2 on two ranks), so the sets agree to float rounding, not bit for bit."""
    data_dir = write_folder(str(tmp_path / "data"), nclass=3)
    common = (tmp_path, ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--width", "0.0625", "--device",
                         "cpu", "--parallel", "1"])
    argv = condense_flags(common, tmp_path / "experts") + ["--niter", "6", "--eval_every", "0", "--align", "cf",
                                                           "--cf_frequencies", "64", "--cf_sampling_net"]
    launch("DANCE.py", argv + ["--save_dir", str(tmp_path / "one")], 1)
    launch("DANCE.py", argv + ["--save_dir", str(tmp_path / "two")], 2)
    x, y, x0 = (torch.load(tmp_path / d / f"data_{k}.pt", weights_only=True)[0]
                for d, k in (("one", 6), ("two", 6), ("one", 0)))
    # Rounding differs with the summation order and with the CPU's kernels (AVX2, AVX-512, oneDNN's choice), and the
    # min-max amplifies it over the iterations: the two sets must agree to a small fraction of what the 6 iterations
    # moved the pixels (seen: 0.3% with AVX2 kernels, 1.5% with the default ones), not pixel for pixel.
    assert (x - y).norm() <= 0.05 * (x - x0).norm()
    one, two = (torch.load(tmp_path / d / "state.pt", weights_only=True)["learned"]["frequency_network"]["net"]
                for d in ("one", "two"))
    for name in one:
        if "running" not in name and "num_batches" not in name:  # batch statistics count each rank's own passes
            torch.testing.assert_close(one[name], two[name], rtol=1e-3, atol=1e-4)


def worker_of_rank(launcher, rank):
    """The process id of the torchrun worker of `rank` among `launcher`'s children (read from its RANK variable)."""
    children = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True).stdout.split()
    for pid in map(int, children):
        with open(f"/proc/{pid}/environ", "rb") as f:
            if f"RANK={rank}".encode() in f.read().split(b"\0"):
                return pid
    raise AssertionError(f"no worker of rank {rank} among {children}")


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_one_process_resumes_it_exactly(common, tmp_path):
    # --no-compile: with --niter 100000 --compile auto would compile the killed job's networks, and the whole run it is
    # compared with (a few iterations) not: the two would agree to float tolerance only
    argv = condense_flags(common, common[0] / "experts") + ["--eval_every", "0", "--ckpt_every", "2", "--no-compile"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                            os.path.join(ROOT, "DANCE.py"), *argv, "--niter", "100000", "--save_dir",
                            str(tmp_path / "killed")], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    state = tmp_path / "killed" / "state.pt"
    try:
        deadline = time.time() + 300
        while not (state.exists() and torch.load(state, weights_only=True)["next_iter"] >= 4):
            assert job.poll() is None and time.time() < deadline, "the job ended before its 4th iteration"
            time.sleep(0.2)
        os.kill(worker_of_rank(job.pid, 1), signal.SIGKILL)
        assert job.wait(timeout=120) != 0  # torchrun stops the other rank and fails
    finally:
        job.kill()
    done = torch.load(state, weights_only=True)["next_iter"]
    launch("DANCE.py", ["--resume", str(tmp_path / "killed"), "--niter", str(done + 3)], 1)
    launch("DANCE.py", argv + ["--niter", str(done + 3), "--save_dir", str(tmp_path / "whole")], 1)
    same_sets(tmp_path / "killed", tmp_path / "whole", [f"data_{done + 3}.pt"])


def test_classes_are_dealt_in_contiguous_blocks_of_the_chunk():
    assert [World(r, 2).class_range(3) for r in range(2)] == [(0, 1), (1, 3)]
    assert [World(r, 2).class_range(10, 4) for r in range(2)] == [(0, 4), (4, 10)]  # blocks 0-3, 4-7, 8-9
    assert [World(r, 3).class_range(7, 0) for r in range(3)] == [(0, 2), (2, 4), (4, 7)]
    assert World().class_range(5, 2) == (0, 5)
    with pytest.raises(UserError, match=r"3 processes need at least 3 blocks of 4 class\(es\), and 8 classes make 2: "
                                        r"start at most 2 processes \(torchrun --nproc_per_node 2\) or lower "
                                        r"--class_chunk \(1 allows 8\)"):
        World(0, 3).class_range(8, 4)
    with pytest.raises(UserError) as e:  # blocks of one class already: fewer processes is the only fix
        World(0, 5).class_range(4, 1)
    assert str(e.value).endswith("start at most 4 processes (torchrun --nproc_per_node 4)")


@pytest.mark.slow
def test_a_user_error_under_torchrun_is_printed_once_and_every_rank_exits_2(tmp_path):
    data_dir = write_folder(str(tmp_path / "data"), nclass=3)
    argv = ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--width", "0.0625", "--device", "cpu",
            "--num_premodel", "0", "--iter_calib", "0", "--update", "joint", "--class_chunk", "3", "--niter", "2",
            "--ipc", "1",
            "--save_dir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           os.path.join(ROOT, "DANCE.py"), *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and out.count("error: 2 processes need at least 2 blocks of 3 class(es)") == 1, out
    assert "start at most 1 process (" in out and 'DANCE.py", line' not in out  # torchrun's own traceback aside
    # the root cause torchrun reports is a rank's exit status 2 (it stops the other ranks once one has ended)
    assert re.search(r"exitcode\s*: 2 ", out), out[-2000:]
