"""Quickstart on the embedded digits: what condensation buys at 1 (and 10) images per class.

    python quickstart.py            # 3-4 minutes on 2 CPU cores
    python quickstart.py --ipc 1    # the one-image-per-class column alone

Trains the experts (skipped when already there), condenses digits with DANCE and with plain DM (the same
pipeline without experts, --num_premodel 0), then trains fresh networks on each set, on herding's real
images and on random real images of the same size (a new random subset for every network), and prints
their test accuracies next to the whole training set's (the experts: the same network and recipe trained
on all of it), with each set's gain over the random subset.
"""
import argparse
import os
import statistics
import time

import DANCE
import evaluate
import pretrain
from arguments import parse
from condense.expert_folder import read_manifest
from utils import run_cli

ROWS = ("DANCE (condensed)", "DM (condensed)", "herding (real)", "random real subset")


def quickstart_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10], help="images per class, one column each")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=4, help="evaluation networks per row")
    p.add_argument("--results", default="results", help="root of every output of the quickstart")
    p.add_argument("--pretrain_epochs", type=int, default=None, help="default: arguments/digits.py")
    p.add_argument("--niter", type=int, default=None, help="default: arguments/digits.py")
    p.add_argument("--eval_epochs", type=int, default=None, help="default: arguments/digits.py")
    return p


def main(q):
    def flags(*names):
        return [x for n in names if getattr(q, n) is not None for x in (f"--{n}", str(getattr(q, n)))]

    experts = os.path.join(q.results, "experts", "digits_quickstart")
    common = ["-d", "digits", "--device", q.device, "--pretrain_dir", experts]
    results = ["--results", os.path.join(q.results, "evaluations.jsonl")]
    pretrain.main(parse("pretrain", common + ["--seed", str(q.seed)] + flags("pretrain_epochs")))
    whole = [e["test_acc"] for e in read_manifest(experts)["experts"].values()]

    def evaluated(argv, runs, seed):
        result, = evaluate.main(parse("evaluate", common + flags("eval_epochs") + argv + results + [
            "--runs", str(runs), "--seed", str(seed)]))
        return result["final"]

    table, grids = {}, {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for ipc in q.ipc:
        column = {}
        for name, extra in ((ROWS[0], []), (ROWS[1], ["--num_premodel", "0"])):
            save_dir = os.path.join(q.results, "quickstart", f"digits_ipc{ipc}_{'dm' if extra else 'dance'}_{stamp}")
            args = parse("condense", common + ["--seed", str(q.seed)] + flags("niter", "eval_epochs") + extra + [
                "--ipc", str(ipc), "--eval_every", "0", "--save_dir", save_dir])
            DANCE.main(args)
            column[name] = evaluated(["--data", os.path.join(save_dir, f"data_{args.niter}.pt")], q.runs, q.seed)
            if not extra:
                grids[ipc] = os.path.join(save_dir, f"img{args.niter}.png")
        column[ROWS[2]] = evaluated(["--baseline", "herding", "--ipc", str(ipc)], q.runs, q.seed)
        # one network per random subset: evaluate.py draws a baseline's subset from --seed
        column[ROWS[3]] = [acc for r in range(q.runs) for acc in evaluated(
            ["--baseline", "random", "--ipc", str(ipc)], 1, q.seed + r)]
        table[ipc] = column
    print_table(table, whole, q)
    for ipc, grid in grids.items():
        print(f"DANCE's {ipc} image(s) per class, one row per digit: {grid}")
    return table, whole


def print_table(table, whole, q):
    """Mean +- std per row and column, and each set's gain over the random subset in points."""
    def cell(accs, ipc):
        mean = statistics.mean(accs)
        gain = mean - statistics.mean(table[ipc][ROWS[3]])
        std = statistics.pstdev(accs) if len(accs) > 1 else 0.0
        return f"{mean:6.2f} +- {std:4.2f}" + (f" ({gain:+5.1f})" if accs is not table[ipc][ROWS[3]] else " " * 8)

    print(f"\ndigits, final-epoch test accuracy (%), mean +- std over {q.runs} evaluation networks; in brackets the "
          f"gain over the random subset, in points:")
    print(" " * 22 + "".join(f"{f'IPC {ipc}':<25}" for ipc in table))
    for name in ROWS:
        print(f"  {name:20s}" + "".join(f"{cell(table[ipc][name], ipc):<25}" for ipc in table))
    print(f"  {'whole training set':20s}{statistics.mean(whole):6.2f} +- {statistics.pstdev(whole):4.2f}  "
          f"(the {len(whole)} experts, each trained on every training image)")
    print("Each row trains fresh networks on that many images per class and tests them on the 450 test images; "
          "the random row draws a new subset for every network. Condensation pays where a set beats the random "
          "subset by more than the spreads.")


if __name__ == "__main__":
    run_cli(main, lambda: quickstart_parser().parse_args())
