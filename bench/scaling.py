"""Condensation seconds per iteration on one process and on several under torchrun (classes split by rank).

CIFAR-10 shapes on generated data in the CIFAR-10 python format (10 classes of 32x32 RGB, ConvNet-3 width 128,
IPC 10, factor 2, --update joint, one expert trained for one epoch): each configuration runs DANCE.py for
--niter iterations in a fresh folder, the configurations of one repeat interleaved (A B C A B C ...), and the
figure is the median over --repeats of the seconds per iteration DANCE.py logs at its last iteration (from
the loop's start, so the first iteration's one-time costs are in it; a longer --niter dilutes them).

    python bench/scaling.py                     # CPU: 1 process x 1 thread, 1 x 2 threads, 2 processes x 1 thread
    python bench/scaling.py --device cuda --procs 1 2 4 --threads 0
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.fixtures import write_cifar10  # noqa: E402  (the dataset's real on-disk format)


def run(argv, procs, threads, env):
    """Seconds per iteration of one DANCE.py run on `procs` processes of `threads` threads each."""
    env = {**env, "OMP_NUM_THREADS": str(threads)} if threads else env
    launcher = [] if procs == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    save_dir = tempfile.mkdtemp(prefix="scaling_")
    done = subprocess.run([sys.executable, *launcher, os.path.join(ROOT, "DANCE.py"), *argv, "--save_dir", save_dir],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"DANCE.py failed:\n{done.stderr[-2000:]}")
    with open(os.path.join(save_dir, "metrics.jsonl")) as f:
        seconds = [json.loads(line) for line in f if "sec_per_iter" in line][-1]["sec_per_iter"]
    shutil.rmtree(save_dir)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="threads per process (0: torch's default)")
    parser.add_argument("--niter", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--per_class", type=int, default=200, help="generated training images per class")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "bench", "scaling.json"))
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="scaling_data_")
    data_dir = write_cifar10(os.path.join(work, "data"), n_train_per_class=args.per_class, n_test_per_class=10)
    flags = ["-d", "cifar10", "--data_dir", data_dir, "--device", args.device, "--pretrain_dir",
             os.path.join(work, "experts")]
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, os.path.join(ROOT, "pretrain.py"), *flags, "--pretrain_amount", "1",
                    "--pretrain_epochs", "1"], cwd=ROOT, env=env, check=True, capture_output=True)
    argv = flags + ["--num_premodel", "1", "--ipc", "10", "--factor", "2", "--update", "joint", "--niter",
                    str(args.niter), "--eval_every", "0"]
    configs = [(p, args.threads) for p in args.procs]
    if args.device == "cpu" and args.threads == 1 and 2 in args.procs:
        configs.insert(1, (1, 2))  # the same two cores used by one process's threads instead
    times = {c: [] for c in configs}
    for _ in range(args.repeats):
        for procs, threads in configs:
            times[(procs, threads)].append(run(argv, procs, threads, env))
    base = statistics.median(times[configs[0]])
    rows = []
    print(f"CIFAR-10 shapes, IPC 10, factor 2, joint, {args.device}, {args.niter} iterations, median of "
          f"{args.repeats}")
    for (procs, threads), values in times.items():
        med = statistics.median(values)
        rows.append({"procs": procs, "threads": threads, "sec_per_iter": med, "runs": values})
        print(f"  {procs} process(es) x {threads or 'default'} thread(s): {med:.3f} s/iter "
              f"(speed-up {base / med:.2f}x)")
    shutil.rmtree(work)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"device": args.device, "niter": args.niter, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
