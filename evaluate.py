"""Evaluate a condensed set: decode it, train fresh networks on it, report test accuracy (REFERENCE 8).

    python evaluate.py -d cifar10 --data results/condense/<run>/data_best.pt --factor 2 --runs 3

Reported: the final-epoch test accuracy, mean +- std over runs. The reference's figure (the best
over the periodic test checks of one run) is printed beside it, labelled as such.
"""
import statistics
import time

import torch

from arguments import ipc_epochs, parse
from data.datasets import load_dataset
from data.synthetic import SyntheticSet, load_set
from train import Recipe, fit
from utils import make_network, network_config, run_cli, seed_everything, select_device


def eval_recipe(args, epochs):
    """The paper's evaluation protocol: SGD, x0.2 at 2/3 and 5/6, per-sample DSA, CutMix."""
    return Recipe(epochs=epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                  batch_size=args.batch_size, dsa_strategy=args.dsa_strategy,
                  mix_p=args.mix_p if args.mixup == "cut" else 0.0, beta=args.beta,
                  eval_interval=args.eval_interval)


def evaluate_set(images, labels, test, info, network, recipe, device, runs=1, seed=0, log=print):
    """Train `runs` fresh networks on (images, labels); return per-run final/best accuracies."""
    images, labels = images.to(device), labels.to(device)
    finals, bests = [], []
    start = time.time()
    for run in range(runs):
        seed_everything(seed * 1000 + run)  # each run reproducible on its own
        model = make_network(network, device)
        result = fit(model, images, labels, test, info.mean, info.std, recipe, device)
        finals.append(result["final"])
        bests.append(result["best"])
        log(f"run {run}: final acc {result['final']:.2f}  (best over test checks {result['best']:.2f})")
    return {"final": finals, "best": bests, "mean": statistics.mean(finals),
            "std": statistics.pstdev(finals), "best_mean": statistics.mean(bests),
            "seconds": round(time.time() - start, 1)}


def summary(result):
    """One line: mean +- std of the final accuracy, and the reference-style best figure."""
    return (f"final acc {result['mean']:.2f} +- {result['std']:.2f} over {len(result['final'])} runs  "
            f"[reference-style best over test checks: {result['best_mean']:.2f}]")


def main(args):
    device = select_device(args.device)
    _, test, info = load_dataset(args.dataset, args.data_dir, download=args.download, size=args.size,
                                 nclass=args.nclass, phase=args.phase)
    if args.data is None:
        from utils import UserError
        raise UserError("pass the condensed set to evaluate with --data PATH.pt (a data_*.pt of DANCE.py)")
    data, ipc = load_set(args.data, info.nclass, info.channels, info.size)
    synset = SyntheticSet(info.nclass, ipc, info.channels, info.size, args.factor, args.decode_type,
                          device, data=data)
    images, labels = synset.decoded()
    epochs = args.eval_epochs or ipc_epochs(ipc, args.factor, info.nclass)
    recipe = eval_recipe(args, epochs)
    print(f"{args.data}: {ipc} per class x {info.nclass} classes -> {len(images)} training images; "
          f"{args.net_type}-{args.depth}, {epochs} epochs, {args.runs} runs on {device}")
    result = evaluate_set(images, labels, test, info, network_config(args, info), recipe, device,
                          runs=args.runs, seed=args.seed)
    print(summary(result))
    return result


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    run_cli(main, lambda: parse("evaluate"))
