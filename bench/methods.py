"""Methods side by side on an embedded dataset: DANCE, its ablations, the alignments of --align with experts (DANCE's
pipeline) and without (plain DM's), and real-image baselines, over condensation seeds.

    python bench/methods.py                       # digits: DANCE, ablations, baselines (about 80 minutes, 2 cores)
    python bench/methods.py -d patches --methods random dm dance --out results/bench/patches_separation
    python bench/methods.py -d patches --methods random dm dm_mmd dm_cf dm_moments dance dance_mmd dance_cf \\
        dance_moments --out results/bench/patches_alignments
    python bench/methods.py --methods random dm dance --flags="--precision bf16" --out results/bench/digits_bf16
    python bench/methods.py --out results/bench/digits --flags="--parallel 1" --tag sequential  # same sets again

Every row is evaluated with the same protocol (the dataset's settings file: ConvNet-3 width 0.25, 300 epochs,
final-epoch test accuracy), --runs networks per set (default 1), and every condensation runs the same iterations;
the table gives mean +- std over seeds of each seed's mean, and for each alignment its paired difference from the
mean alignment of the same pipeline (seed by seed) with the standard error of that difference. One network's
accuracy at IPC 1 varies by about 0.9 points from its initialisation alone on digits (bench/digits_ipc1.py), so
with one network per seed a 1-point difference between two rows is within noise. Experts are trained once per seed.
Writes <out>.md (markdown tables) and <out>.json; a rerun reuses finished experts and sets.
"""
import argparse
import math
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

DM = ["--num_premodel", "0", "--iter_calib", "0"]
# key -> (row name, extra DANCE.py flags); None: a real-image baseline of evaluate.py
METHODS = {
    "random": ("random real subset", None),
    "herding": ("herding", None),
    "dm": ("DM (fresh random net, no calibration)", DM),
    **{f"dm_{a}": (f"DM with --align {a}", DM + ["--align", a]) for a in ("mmd", "cf", "moments")},
    "no_calib": ("DANCE without calibration", ["--iter_calib", "0"]),
    "no_middle": ("DANCE without middle encoders (trained experts)", ["--lam_min", "0", "--lam_max", "0"]),
    "dance": ("DANCE", []),
    **{f"dance_{a}": (f"DANCE with --align {a}", ["--align", a]) for a in ("mmd", "cf", "moments")},
}
DEFAULT_METHODS = ["random", "herding", "dm", "no_calib", "no_middle", "dance"]


def run_rows(q):
    """Accuracy of every method at every ipc and seed: {ipc: {method: [acc per seed]}}, plus the whole set."""
    table = {ipc: {key: [] for key in q.methods} for ipc in q.ipcs}
    whole = []
    for seed in q.seeds:
        root = os.path.join(q.out, f"seed{seed}")
        common = ["-d", q.dataset, "--device", q.device, "--seed", str(seed),
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


def paired(a, b):
    """Mean of the seed-by-seed differences a - b and its standard error (sample std / sqrt(n))."""
    d = [x - y for x, y in zip(a, b)]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return statistics.mean(d), se


def baseline_of(key):
    """The row an alignment's row is paired with: the same pipeline with the mean alignment."""
    pipeline, _, align = key.partition("_")
    return pipeline if align in ("mmd", "cf", "moments") else None


def markdown(table, whole, q):
    """The accuracy table (one column per ipc) and the paired differences of each alignment from mean."""
    head = "| method | " + " | ".join(f"IPC {ipc}" for ipc in q.ipcs) + " |"
    lines = [head, "|---|" + "---|" * len(q.ipcs)]
    for key in q.methods:
        lines.append(f"| {METHODS[key][0]} | " + " | ".join(fmt(table[ipc][key]) for ipc in q.ipcs) + " |")
    if whole:
        lines.append("| whole training set | " + " | ".join(fmt(whole) for _ in q.ipcs) + " |")
    pairs = [k for k in q.methods if baseline_of(k) in q.methods]
    if pairs:
        lines += ["", "Paired difference from the mean alignment of the same pipeline, seed by seed (points, mean "
                      "+- standard error):", "", head, "|---|" + "---|" * len(q.ipcs)]
        for key in pairs:
            cells = [paired(table[ipc][key], table[ipc][baseline_of(key)]) for ipc in q.ipcs]
            lines.append(f"| {METHODS[key][0]} | " + " | ".join(f"{m:+.1f} +- {se:.1f}" for m, se in cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", default="digits", choices=("digits", "patches"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10])
    p.add_argument("--runs", type=int, default=1,
                   help="evaluation networks per set; a row's seed value is their mean (one network's accuracy "
                        "varies by about 0.9 points at IPC 1 on digits, see bench/digits_ipc1.py)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="default: results/bench/<dataset>")
    p.add_argument("--skip_whole", action="store_true", help="skip the whole-training-set row (slowest)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=DEFAULT_METHODS, help="rows to run")
    p.add_argument("--flags", default="", help="extra flags for all three scripts, e.g. '--precision bf16'")
    p.add_argument("--tag", default="", help="name of this variant's results and table (a rerun over the same "
                                              "--out reuses its experts and sets, e.g. with --flags='--parallel 1')")
    q = p.parse_args()
    q.out = q.out or os.path.join("results", "bench", q.dataset)
    start = time.time()
    table, whole = run_rows(q)
    text = markdown(table, whole, q)
    out = f"{q.out}_{q.tag}" if q.tag else q.out
    atomic_write_text(text, out + ".md")
    atomic_write_json({"dataset": q.dataset, "seeds": q.seeds, "runs": q.runs, "ipcs": q.ipcs, "flags": q.flags,
                       "methods": q.methods, "table": table, "whole": whole,
                       "seconds": round(time.time() - start)}, out + ".json")
    print(f"\n{q.dataset}, final-epoch test accuracy, mean +- std over seeds {q.seeds} (of each seed's mean over "
          f"{q.runs} evaluation networks):\n{text}")
    print(f"written: {out}.md, {out}.json ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
