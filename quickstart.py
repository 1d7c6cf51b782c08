"""Quickstart on the embedded digits: experts, DANCE at IPC 10, and its accuracy next to real images.

    python quickstart.py            # about 3 minutes on 2 CPU cores

Trains the experts (skipped when already there), condenses digits, then trains fresh networks on
the condensed set and on a random real subset of the same size, and prints their test accuracies
next to the whole training set's (the experts: the same network and recipe trained on all of it).
The condensed images are in <run>/img<niter>.png.
"""
import argparse
import json
import os
import statistics
import time

import DANCE
import evaluate
import pretrain
from arguments import parse
from utils import run_cli


def quickstart_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipc", type=int, default=10, help="images per class of the condensed set")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=3, help="networks trained per evaluated set")
    p.add_argument("--results", default="results", help="root of every output of the quickstart")
    p.add_argument("--pretrain_epochs", type=int, default=None, help="default: arguments/digits.py")
    p.add_argument("--niter", type=int, default=None, help="default: arguments/digits.py")
    p.add_argument("--eval_epochs", type=int, default=None, help="default: arguments/digits.py")
    return p


def main(q):
    def flags(*names):
        return [x for n in names if getattr(q, n) is not None for x in (f"--{n}", str(getattr(q, n)))]

    experts = os.path.join(q.results, "experts", "digits_quickstart")
    common = ["-d", "digits", "--device", q.device, "--seed", str(q.seed), "--pretrain_dir", experts]
    pretrain.main(parse("pretrain", common + flags("pretrain_epochs")))
    whole = [e["test_acc"] for e in json.load(open(os.path.join(experts, "manifest.json")))["experts"].values()]
    save_dir = os.path.join(q.results, "quickstart", f"digits_ipc{q.ipc}_{time.strftime('%Y%m%d-%H%M%S')}")
    DANCE.main(parse("condense", common + flags("niter", "eval_epochs") + [
        "--ipc", str(q.ipc), "--eval_every", "0", "--save_dir", save_dir]))
    niter = parse("condense", common + flags("niter")).niter
    evaluations = [("DANCE (condensed)", ["--data", os.path.join(save_dir, f"data_{niter}.pt")]),
                   ("random real subset", ["--baseline", "random", "--ipc", str(q.ipc)])]
    rows = []
    for name, argv in evaluations:
        print(f"\n== {name}")
        result, = evaluate.main(parse("evaluate", common + flags("eval_epochs") + argv + [
            "--runs", str(q.runs), "--results", os.path.join(q.results, "evaluations.jsonl")]))
        rows.append((name, result))
    print(f"\ndigits, {q.ipc} images per class (final-epoch test accuracy, mean +- std over {q.runs} runs):")
    rows.append(("whole training set", {"mean": statistics.mean(whole), "std": statistics.pstdev(whole)}))
    for name, result in rows:
        print(f"  {name:20s} {result['mean']:6.2f} +- {result['std']:.2f}")
    print(f"  (whole training set: the {len(whole)} experts, each trained on every training image)")
    print(f"condensed images: {os.path.join(save_dir, f'img{niter}.png')}")
    return rows


if __name__ == "__main__":
    run_cli(main, lambda: quickstart_parser().parse_args())
