"""Evaluate condensed sets (or real-image baselines): train fresh networks on them, report test accuracy.

    python evaluate.py -d cifar10 --factor 2 --data 'results/condense/*/data_best.pt' --runs 5
    python evaluate.py -d cifar10 --factor 2 --data set.pt --eval_nets convnet,resnet_ap-10,resnet-18
    python evaluate.py -d cifar10 --baseline random --ipc 10 --factor 2
    python evaluate.py --summarize results/evaluations.jsonl

Reported: the final-epoch test accuracy, mean +- std over runs (REFERENCE 8 protocol). The
reference's figure (the best over the periodic test checks) is printed beside it, labelled as such.
Each evaluation appends one JSON line to --results; finished runs are kept as they go, so an
interrupted call, run again, trains only the missing runs.
"""
import argparse
import glob
import os
import statistics
import time

import torch

from arguments import dataset_tag, ipc_epochs, parse
from data.coreset import real_subset
from data.datasets import load_dataset
from data.synthetic import SyntheticSet, load_set
from models import MODELS
from records import evaluation_key, finished_runs, record_evaluation, record_run, summarize, summary_table
from train import Recipe, fit, test_accuracy
from utils import (UserError, check_state_dict, expert_path, git_revision, make_network, network_config, run_cli,
                   safe_load, seed_everything, select_device)

DEFAULT_DEPTH = {"resnet_ap": 10, "resnet": 18}  # when --eval_nets names a ResNet without a depth


def eval_recipe(args, epochs):
    """The paper's evaluation protocol: SGD, x0.2 at 2/3 and 5/6, per-sample DSA, CutMix."""
    return Recipe(epochs=epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                  batch_size=args.batch_size, dsa_strategy=args.dsa_strategy,
                  mix_p=args.mix_p if args.mixup == "cut" else 0.0, beta=args.beta,
                  eval_interval=args.eval_interval)


def evaluate_set(images, labels, test, info, network, recipe, device, runs=1, seed=0, log=print, val=None,
                 done=None, on_run=None):
    """Train `runs` fresh networks on (images, labels); return per-run final/best test accuracies.

    With a `val` split, each run's final accuracy on it is returned too (for model selection).
    `done` maps run index -> (final, best) already known; `on_run` is called after each new run.
    """
    if torch.is_tensor(images):
        images = images.to(device)
    labels = labels.to(device)
    finals, bests, vals = [], [], []
    start = time.time()
    for run in range(runs):
        if done and run in done:
            final, best = done[run]
            log(f"run {run}: final acc {final:.2f}  (recorded by an earlier call)")
        else:
            seed_everything(seed * 1000 + run)  # each run reproducible on its own
            model = make_network(network, device)
            result = fit(model, images, labels, test, info.mean, info.std, recipe, device)
            final, best = result["final"], result["best"]
            if val is not None:
                vals.append(test_accuracy(model, val, info.mean, info.std, device))
            if on_run is not None:
                on_run(run, final, best)
            log(f"run {run}: final acc {final:.2f}  (best over test checks {best:.2f})")
        finals.append(final)
        bests.append(best)
    out = {"final": finals, "best": bests, "mean": statistics.mean(finals), "std": statistics.pstdev(finals),
           "best_mean": statistics.mean(bests), "seconds": round(time.time() - start, 1)}
    if val is not None:
        out["val"] = vals
    return out


def summary(result):
    """One line: mean +- std of the final accuracy, and the reference-style best figure."""
    return (f"final acc {result['mean']:.2f} +- {result['std']:.2f} over {len(result['final'])} runs  "
            f"[reference-style best over test checks: {result['best_mean']:.2f}]")


def eval_networks(args, info):
    """(label, network description) of every architecture to train: --eval_nets, else --net_type."""
    if not args.eval_nets:
        return [(f"{args.net_type}-{args.depth}", network_config(args, info))]
    nets = []
    for item in args.eval_nets.split(","):
        name, _, depth = item.strip().partition("-")
        if name not in MODELS:
            raise UserError(f"--eval_nets: unknown architecture '{name}'; choose from: {', '.join(MODELS)}")
        if depth and not depth.isdigit():
            raise UserError(f"--eval_nets: '{item}' should be name or name-depth, e.g. resnet_ap-10")
        depth = int(depth) if depth else (args.depth if name == args.net_type else DEFAULT_DEPTH.get(name, args.depth))
        chosen = argparse.Namespace(**{**vars(args), "net_type": name, "depth": depth})
        nets.append((name if name == "densenet" else f"{name}-{depth}", network_config(chosen, info)))
    return nets


def data_paths(patterns):
    """The --data paths, globs expanded (sorted); a glob that matches nothing is an error."""
    paths = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise UserError(f"--data {pattern} matches no file; check the path or the quotes around the glob")
        paths += matches
    return paths


def trained_expert(args, network, device):
    """Expert 0 of --pretrain_dir, whose features herding and k-center use."""
    path = expert_path(args.pretrain_dir, 0, "trained")
    if not os.path.isfile(path):
        raise UserError(f"--baseline {args.baseline} embeds images with expert 0, and {path} is missing; run: "
                        f"python pretrain.py -d {args.dataset} --pretrain_amount 1 --pretrain_dir {args.pretrain_dir}")
    net, state = make_network(network, device), safe_load(path, "expert checkpoint")
    check_state_dict(net, state, path)
    net.load_state_dict(state)
    return net


def training_sets(args, train, info, device):
    """(name, images, labels, ipc, identity) of every set to evaluate."""
    if args.baseline == "full":
        return [("baseline:full", train.images, train.labels, len(train) // info.nclass, "full")]
    if args.baseline is not None:
        net = trained_expert(args, network_config(args, info), device) if args.baseline != "random" else None
        images, labels = real_subset(args.baseline, train, info, args.ipc, args.factor, args.decode_type, device, net)
        return [(f"baseline:{args.baseline}", images, labels, args.ipc, [args.baseline, args.ipc])]
    sets = []
    for path in data_paths(args.data):
        data, ipc = load_set(path, info.nclass, info.channels, info.size)
        synset = SyntheticSet(info.nclass, ipc, info.channels, info.size, args.factor, args.decode_type, device,
                              data=data)
        stat = os.stat(path)
        sets.append((path, *synset.decoded(), ipc, [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]))
    return sets


def main(args):
    if args.summarize:
        print(summarize(args.summarize))
        return None
    device = select_device(args.device)
    if (args.data is None) == (args.baseline is None):
        raise UserError("pass either --data PATH.pt (sets written by DANCE.py) or --baseline random|herding|"
                        "kcenter|full")
    train, test, info = load_dataset(args.dataset, args.data_dir, download=args.download, size=args.size,
                                     nclass=args.nclass, phase=args.phase)
    test, nets = test.to(device), eval_networks(args, info)
    entries = []
    for name, images, labels, ipc, identity in training_sets(args, train, info, device):
        recipe = eval_recipe(args, args.eval_epochs or ipc_epochs(ipc, args.factor, info.nclass))
        for label, network in nets:
            print(f"\n{name} ({len(images)} training images) on {label}: {recipe.epochs} epochs, "
                  f"{args.runs} runs on {device}")
            description = {"set": identity, "dataset": dataset_tag(args), "factor": args.factor,
                           "decode_type": args.decode_type, "network": network, "protocol": recipe.as_dict(),
                           "seed": args.seed}
            key = evaluation_key(description)
            result = evaluate_set(images, labels, test, info, network, recipe, device, runs=args.runs,
                                  seed=args.seed, done=finished_runs(args.results, key),
                                  on_run=lambda run, final, best: record_run(args.results, key, run, final, best))
            print(summary(result))
            entry = {"set": name, "key": key, "dataset": dataset_tag(args), "ipc": ipc, "factor": args.factor,
                     "decode_type": args.decode_type, "network": label, "network_config": network,
                     "protocol": recipe.as_dict(), "seed": args.seed, "git": git_revision(),
                     "time": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
            record_evaluation(args.results, entry)
            entries.append(entry)
    print("\n" + summary_table(entries))
    return entries


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    run_cli(main, lambda: parse("evaluate"))
