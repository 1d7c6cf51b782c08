"""torchrun on the CPU (gloo, 2 processes): experts and evaluation runs dealt out to ranks give what one
process gives (one thread each), and rank 0 alone writes the shared files."""
import json
import os
import subprocess
import sys

import pytest
import torch

import DANCE
from arguments import parse
from distributed import World
from tests.fixtures import write_fixture
from utils import UserError, expert_path

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
            a = torch.load(expert_path(str(base / "one"), i, stage), weights_only=True)
            b = torch.load(expert_path(str(base / "two"), i, stage), weights_only=True)
            assert all(torch.equal(a[k], b[k]) for k in a), (i, stage)
        assert one["experts"][str(i)]["test_acc"] == two["experts"][str(i)]["test_acc"]
    log = (base / "two" / "log.txt").read_text()
    assert "rank 0 of 2" in log and "rank 1" not in log
    assert not list((base / "two").glob("*_progress.pt"))


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


def test_condensation_under_torchrun_is_refused_before_any_work(monkeypatch, common):
    base, flags = common
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="DANCE.py runs as one process"):
        DANCE.main(parse("condense", flags + ["--save_dir", str(base / "run")]))
    assert not (base / "run").exists()
