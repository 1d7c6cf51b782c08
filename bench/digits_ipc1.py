"""Digits at IPC 1: does DANCE trail DM there? Two studies on the same per-seed experts.

Schedule (longer condensation, larger image learning rate; the defaults):
    python bench/digits_ipc1.py --table results/bench/digits_ipc1_schedule      # about 70 min, 2 cores
Encoder pool (is it the expert-derived features, or the small pool of 5 fixed networks?):
    python bench/digits_ipc1.py --seeds 0 1 2 3 --methods dm dance fixed5 fixed20 dance20 --lrs 0.01 \
        --niter 200 --at 200 --runs 5 --table results/bench/digits_ipc1_pool       # about 45 min, 2 cores

bench/methods.py (one evaluation network per seed) found DANCE 1 point below DM at IPC 1. For each seed
this trains the experts (as many as the variants read), condenses IPC 1 with every variant and --lr_img
for --niter iterations, keeping the set after each --at iteration count (no evaluation during the run,
so the real data is the whole training split as in bench/methods.py), and evaluates every kept set with
--runs networks (arguments/digits.py protocol, final-epoch test accuracy). Cells: mean over seeds of
each seed's mean accuracy +- the std over seeds; the last rows give the paired difference DANCE - DM
(same seed, experts and initial images). Finished condensations and evaluation runs are reused by a
rerun, so disjoint --seeds can run in parallel processes and a last call with every seed writes the
table.
"""
import argparse
import math
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import DANCE  # noqa: E402
import evaluate  # noqa: E402
import pretrain  # noqa: E402
from arguments import parse  # noqa: E402
from bench.methods import METHODS, fmt  # noqa: E402
from utils import atomic_write_json, atomic_write_text, read_json  # noqa: E402

# key -> (row name, DANCE.py flags): bench/methods.py's condensed rows, plus encoder pools for the diagnosis
VARIANTS = {key: row for key, row in METHODS.items() if row[1] is not None}
VARIANTS.update({
    "fixed5": ("5 fixed random networks (the experts' initial weights), no calibration",
               ["--lam_min", "1", "--lam_max", "1", "--iter_calib", "0"]),
    "fixed20": ("20 fixed random networks (the experts' initial weights), no calibration",
                ["--lam_min", "1", "--lam_max", "1", "--iter_calib", "0", "--num_premodel", "20"]),
    "dance20": ("DANCE with 20 experts", ["--num_premodel", "20"]),
})


def experts_needed(keys):
    """How many experts the chosen variants read (DANCE.py's default is 5)."""
    counts = [int(flags[flags.index("--num_premodel") + 1]) if "--num_premodel" in flags else 5
              for flags in (VARIANTS[key][1] for key in keys)]
    return max(counts)


def condense(common, key, lr, q, folder):
    """Condense IPC 1 with one method and lr; returns {iterations: path of the set kept then}.

    A finished shorter run in `folder` is extended with DANCE.py's --resume (it continues exactly), so a
    longer study reuses a shorter one's sets; a broken attempt is redone whole.
    """
    paths = {at: os.path.join(folder, f"kept_{at}.pt") for at in q.at}
    missing = [at for at, path in paths.items() if not os.path.isfile(path)]
    if not missing:
        return paths

    def keep(k, synset, encoders):
        if k in paths:
            synset.save(paths[k])

    done = (read_json(os.path.join(folder, "args.json")) or {}).get("niter", 0)
    if 0 < done < min(missing) and os.path.isfile(os.path.join(folder, f"data_{done}.pt")):
        args = parse("condense", ["--resume", folder, "--niter", str(q.niter), "--device", q.device])
    else:
        shutil.rmtree(folder, ignore_errors=True)
        args = parse("condense", common + VARIANTS[key][1] + [
            "--ipc", "1", "--lr_img", str(lr), "--niter", str(q.niter), "--eval_every", "0", "--save_dir", folder])
    DANCE.main(args, on_iteration=keep)
    return paths


def run_seed(seed, q):
    """{method: {lr: {iterations: [acc per eval run]}}} of one seed."""
    root = os.path.join(q.out, f"seed{seed}")
    common = ["-d", "digits", "--device", q.device, "--seed", str(seed),
              "--pretrain_dir", os.path.join(root, "experts")]
    pretrain.main(parse("pretrain", common + ["--pretrain_amount", str(experts_needed(q.methods))]))
    accs = {}
    for key in q.methods:
        for lr in q.lrs:
            paths = condense(common, key, lr, q, os.path.join(root, f"{key}_lr{lr}"))
            for at, path in paths.items():
                result, = evaluate.main(parse("evaluate", common + [
                    "--runs", str(q.runs), "--results", os.path.join(root, "evaluations.jsonl"), "--data", path]))
                accs.setdefault(key, {}).setdefault(lr, {})[at] = result["final"]
                print(f"seed {seed} {key} lr {lr} after {at}: {statistics.mean(result['final']):.2f}", flush=True)
    return accs


def markdown(per_seed, q):
    """Rows: method and lr; columns: iteration counts; cells: mean +- std over seeds of the seed means."""
    head = "| method | lr_img | " + " | ".join(f"{at} iterations" for at in q.at) + " |"
    lines = [head, "|---|---|" + "---|" * len(q.at)]

    def seed_means(key, lr, at):
        return [statistics.mean(s[key][lr][at]) for s in per_seed]

    for key in q.methods:
        for lr in q.lrs:
            cells = [fmt(seed_means(key, lr, at)) for at in q.at]
            lines.append(f"| {VARIANTS[key][0]} | {lr} | " + " | ".join(cells) + " |")
    if "dance" in q.methods and "dm" in q.methods:
        for lr in q.lrs:
            cells = [paired(seed_means("dance", lr, at), seed_means("dm", lr, at)) for at in q.at]
            lines.append(f"| DANCE - DM, paired by seed (standard error) | {lr} | " + " | ".join(cells) + " |")
    lines.append(f"\nStd of one evaluation network's accuracy on a fixed set (pooled over every set): "
                 f"{network_std(per_seed):.2f} points.")
    return "\n".join(lines) + "\n"


def paired(a, b):
    """Mean +- std of the per-seed differences a - b, with the standard error of their mean."""
    diffs = [x - y for x, y in zip(a, b)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return f"{fmt(diffs)} ({se:.1f})"


def network_std(per_seed):
    """Pooled std of single evaluation runs around their set's mean: the evaluation noise of one network."""
    sets = [runs for seed in per_seed for by_lr in seed.values() for by_at in by_lr.values()
            for runs in by_at.values() if len(runs) > 1]
    if not sets:
        return float("nan")
    return math.sqrt(sum(statistics.variance(r) * (len(r) - 1) for r in sets) / sum(len(r) - 1 for r in sets))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", choices=list(VARIANTS), default=["dm", "no_calib", "dance"])
    p.add_argument("--lrs", type=float, nargs="+", default=[0.01, 0.05], help="--lr_img values at IPC 1")
    p.add_argument("--niter", type=int, default=1000)
    p.add_argument("--at", type=int, nargs="+", default=[200, 1000], help="iteration counts whose sets are evaluated")
    p.add_argument("--runs", type=int, default=4, help="evaluation networks per kept set")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=os.path.join("results", "bench", "digits_ipc1"),
                   help="folder of the per-seed experts, sets and evaluations")
    p.add_argument("--table", default=None, help="path stem of the .md/.json table (default: <out>)")
    q = p.parse_args()
    if not all(0 < at <= q.niter for at in q.at):
        p.error(f"every --at must lie in 1..--niter ({q.niter}); got {q.at}")
    q.at = sorted(set(q.at))
    table = q.table or q.out
    start = time.time()
    per_seed = [run_seed(seed, q) for seed in q.seeds]
    text = markdown(per_seed, q)
    atomic_write_text(text, table + ".md")
    atomic_write_json({"seeds": q.seeds, "methods": q.methods, "lrs": q.lrs, "at": q.at, "runs": q.runs,
                       "niter": q.niter, "per_seed": per_seed, "seconds": round(time.time() - start)}, table + ".json")
    print(f"\ndigits IPC 1, final-epoch test accuracy, mean +- std over seeds {q.seeds} of each seed's mean "
          f"over {q.runs} evaluation networks:\n{text}")
    print(f"written: {table}.md, {table}.json ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
