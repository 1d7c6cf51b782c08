"""Benchmark on the embedded digits: DANCE, its ablations and real-image baselines, over seeds.

    python bench/digits.py                       # about 80 minutes on 2 CPU cores
    python bench/digits.py --seeds 0 1 2 --ipcs 1 10 --runs 5 --out results/bench/digits
    python bench/digits.py --methods random dm dance --flags="--precision bf16" --out results/bench/digits_bf16
    python bench/digits.py --out results/bench/digits --flags="--parallel 1" --tag sequential  # same sets again

Every row is evaluated with the same protocol (arguments/digits.py: ConvNet-3 width 0.25, 300
epochs, final-epoch test accuracy), --runs networks per set (default 1); the table gives mean +- std
over seeds of each seed's mean. One network's accuracy at IPC 1 varies by about 0.9 points from its
initialisation alone (bench/digits_ipc1.py), so with one network per seed a 1-point difference between
two rows is within noise; --runs 5 makes the evaluation about 5 times slower.
Experts are trained once per seed. Writes <out>.md (markdown table) and <out>.json.
"""
import argparse
import os
import shlex
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import DANCE  # noqa: E402
import evaluate  # noqa: E402
import pretrain  # noqa: E402
from arguments import parse  # noqa: E402
from utils import atomic_write_json, atomic_write_text  # noqa: E402

# key -> (row name, extra DANCE.py flags); None: a real-image baseline of evaluate.py
METHODS = {
    "random": ("random real subset", None),
    "herding": ("herding", None),
    "dm": ("DM (fresh random net, no calibration)", ["--num_premodel", "0", "--iter_calib", "0"]),
    "no_calib": ("DANCE without calibration", ["--iter_calib", "0"]),
    "no_middle": ("DANCE without middle encoders (trained experts)", ["--lam_min", "0", "--lam_max", "0"]),
    "dance": ("DANCE", []),
}


def run_rows(q):
    """Accuracy of every method at every ipc and seed: {ipc: {method: [acc per seed]}}, plus the whole set."""
    table = {ipc: {key: [] for key in q.methods} for ipc in q.ipcs}
    whole = []
    for seed in q.seeds:
        root = os.path.join(q.out, f"seed{seed}")
        common = ["-d", "digits", "--device", q.device, "--seed", str(seed),
                  "--pretrain_dir", os.path.join(root, "experts")] + shlex.split(q.flags)
        results = os.path.join(root, f"evaluations{'_' + q.tag if q.tag else ''}.jsonl")
        evaluation = common + ["--runs", str(q.runs), "--results", results]
        pretrain.main(parse("pretrain", common))
        for ipc in q.ipcs:
            for key in q.methods:
                name, flags = METHODS[key]
                if flags is None:
                    argv = ["--baseline", key, "--ipc", str(ipc)]
                else:
                    args = parse("condense", common + flags + ["--ipc", str(ipc), "--eval_every", "0",
                                                               "--save_dir", os.path.join(root, f"ipc{ipc}_{key}")])
                    final = os.path.join(args.save_dir, f"data_{args.niter}.pt")
                    if not os.path.isfile(final):  # a rerun reuses finished condensations, redoes broken ones
                        shutil.rmtree(args.save_dir, ignore_errors=True)
                        DANCE.main(args)
                    argv = ["--data", final]
                result, = evaluate.main(parse("evaluate", evaluation + argv))
                table[ipc][key].append(statistics.mean(result["final"]))
                print(f"seed {seed} ipc {ipc} {name}: {table[ipc][key][-1]:.2f}", flush=True)
        if not q.skip_whole:
            result, = evaluate.main(parse("evaluate", evaluation + ["--baseline", "full"]))
            whole.append(statistics.mean(result["final"]))
    return table, whole


def fmt(accs):
    return f"{statistics.mean(accs):.1f} +- {statistics.pstdev(accs):.1f}" if accs else "-"


def markdown(table, whole, q):
    """The table as markdown, one column per ipc."""
    head = "| method | " + " | ".join(f"IPC {ipc}" for ipc in q.ipcs) + " |"
    lines = [head, "|---|" + "---|" * len(q.ipcs)]
    for key in q.methods:
        name = METHODS[key][0]
        lines.append(f"| {name} | " + " | ".join(fmt(table[ipc][key]) for ipc in q.ipcs) + " |")
    lines.append("| whole training set | " + " | ".join(fmt(whole) for _ in q.ipcs) + " |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10])
    p.add_argument("--runs", type=int, default=1,
                   help="evaluation networks per set; a row's seed value is their mean (one network's accuracy "
                        "varies by about 0.9 points at IPC 1, see bench/digits_ipc1.py)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=os.path.join("results", "bench", "digits"))
    p.add_argument("--skip_whole", action="store_true", help="skip the whole-training-set row (slowest)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="rows to run")
    p.add_argument("--flags", default="", help="extra flags for all three scripts, e.g. '--precision bf16'")
    p.add_argument("--tag", default="", help="name of this variant's results and table (a rerun over the same "
                                              "--out reuses its experts and sets, e.g. with --flags='--parallel 1')")
    q = p.parse_args()
    start = time.time()
    table, whole = run_rows(q)
    text = markdown(table, whole, q)
    out = f"{q.out}_{q.tag}" if q.tag else q.out
    atomic_write_text(text, out + ".md")
    atomic_write_json({"seeds": q.seeds, "runs": q.runs, "ipcs": q.ipcs, "flags": q.flags, "table": table,
                       "whole": whole, "seconds": round(time.time() - start)}, out + ".json")
    print(f"\ndigits, final-epoch test accuracy, mean +- std over seeds {q.seeds} (of each seed's mean over "
          f"{q.runs} evaluation networks):\n{text}")
    print(f"written: {out}.md, {out}.json ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
