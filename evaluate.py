"""Evaluate a condensed set (or a real-image baseline): train fresh networks on it, report test accuracy.

    python evaluate.py -d cifar10 --data results/condense/<run>/data_best.pt --factor 2 --runs 3
    python evaluate.py -d cifar10 --baseline random --ipc 10 --factor 2

Reported: the final-epoch test accuracy, mean +- std over runs (REFERENCE 8 protocol). The
reference's figure (the best over the periodic test checks) is printed beside it, labelled as such.
Each evaluation appends one JSON line to --results.
"""
import json
import os
import statistics
import time

import torch

from arguments import dataset_tag, ipc_epochs, parse
from data.augment import normalize
from data.coreset import SELECTORS, select_random
from data.datasets import load_dataset
from data.sampler import to_float
from data.synthetic import SyntheticSet, load_set
from train import Recipe, fit, test_accuracy
from utils import (UserError, check_state_dict, expert_path, git_revision, make_network, network_config, run_cli,
                   safe_load, seed_everything, select_device)


def eval_recipe(args, epochs):
    """The paper's evaluation protocol: SGD, x0.2 at 2/3 and 5/6, per-sample DSA, CutMix."""
    return Recipe(epochs=epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                  batch_size=args.batch_size, dsa_strategy=args.dsa_strategy,
                  mix_p=args.mix_p if args.mixup == "cut" else 0.0, beta=args.beta,
                  eval_interval=args.eval_interval)


def evaluate_set(images, labels, test, info, network, recipe, device, runs=1, seed=0, log=print, val=None):
    """Train `runs` fresh networks on (images, labels); return per-run final/best test accuracies.

    With a `val` split, each run's final accuracy on it is returned too (for model selection).
    """
    if torch.is_tensor(images):
        images = images.to(device)
    labels = labels.to(device)
    finals, bests, vals = [], [], []
    start = time.time()
    for run in range(runs):
        seed_everything(seed * 1000 + run)  # each run reproducible on its own
        model = make_network(network, device)
        result = fit(model, images, labels, test, info.mean, info.std, recipe, device)
        finals.append(result["final"])
        bests.append(result["best"])
        if val is not None:
            vals.append(test_accuracy(model, val, info.mean, info.std, device))
        log(f"run {run}: final acc {result['final']:.2f}  (best over test checks {result['best']:.2f})")
    out = {"final": finals, "best": bests, "mean": statistics.mean(finals), "std": statistics.pstdev(finals),
           "best_mean": statistics.mean(bests), "seconds": round(time.time() - start, 1)}
    if val is not None:
        out["val"] = vals
    return out


def summary(result):
    """One line: mean +- std of the final accuracy, and the reference-style best figure."""
    return (f"final acc {result['mean']:.2f} +- {result['std']:.2f} over {len(result['final'])} runs  "
            f"[reference-style best over test checks: {result['best_mean']:.2f}]")


class Selection:
    """Chosen real images per class, served like ClassSampler.first so SyntheticSet.init can tile them."""

    def __init__(self, per_class):
        self.per_class = per_class

    def first(self, c, n):
        return self.per_class[c][:n]


@torch.no_grad()
def embed(net, images, mean, std, batch=500):
    """Penultimate features of a trained network, for herding and k-center."""
    net.eval()
    return torch.cat([net(normalize(to_float(images[i:i + batch]), mean, std), return_features=True)[1]
                      for i in range(0, len(images), batch)])


def baseline_set(args, train, info, network, device):
    """Real images at the budget of a condensed set: ipc storage images per class, decoded."""
    if args.baseline == "full":
        return train.images, train.labels
    if args.baseline in SELECTORS:
        net = make_network(network, device)
        path = expert_path(args.pretrain_dir, 0, "trained")
        if not os.path.isfile(path):
            raise UserError(f"--baseline {args.baseline} embeds images with expert 0, and {path} is missing; "
                            f"run: python pretrain.py -d {args.dataset} --pretrain_amount 1 "
                            f"--pretrain_dir {args.pretrain_dir}")
        state = safe_load(path, "expert checkpoint")
        check_state_dict(net, state, path)
        net.load_state_dict(state)
    per_class = []
    for c in range(info.nclass):
        index = torch.nonzero(train.labels == c).flatten()
        images = train.images[index] if torch.is_tensor(train.images) else train.images[index.tolist()]
        n = args.ipc * args.factor ** 2
        if args.baseline == "random":
            chosen = select_random(len(index), n)
        else:
            chosen = SELECTORS[args.baseline](embed(net, images.to(device), info.mean, info.std), n).cpu()
        per_class.append(to_float(images[chosen]).to(device))
    synset = SyntheticSet(info.nclass, args.ipc, info.channels, info.size, args.factor, args.decode_type, device)
    synset.init("mix" if args.factor > 1 else "random", Selection(per_class))
    return synset.decoded()


def record(args, info, result, recipe, ipc, set_name):
    """Append one JSON line describing this evaluation to --results."""
    entry = {"set": set_name, "dataset": dataset_tag(args), "ipc": ipc, "factor": args.factor,
             "decode_type": args.decode_type, "net_type": args.net_type, "depth": args.depth,
             "width": args.width, "norm_type": args.norm_type, "protocol": recipe.as_dict(), "seed": args.seed,
             "git": git_revision(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
    folder = os.path.dirname(os.path.abspath(args.results))
    try:
        os.makedirs(folder, exist_ok=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as e:
        raise UserError(f"could not append to {args.results}: {e.strerror}; pass another --results")


def main(args):
    device = select_device(args.device)
    if (args.data is None) == (args.baseline is None):
        raise UserError("pass either --data PATH.pt (a set written by DANCE.py) or --baseline random|herding|"
                        "kcenter|full")
    train, test, info = load_dataset(args.dataset, args.data_dir, download=args.download, size=args.size,
                                     nclass=args.nclass, phase=args.phase)
    network, test = network_config(args, info), test.to(device)
    seed_everything(args.seed)
    if args.data is not None:
        data, ipc = load_set(args.data, info.nclass, info.channels, info.size)
        synset = SyntheticSet(info.nclass, ipc, info.channels, info.size, args.factor, args.decode_type,
                              device, data=data)
        images, labels = synset.decoded()
        set_name = args.data
    else:
        ipc = args.ipc if args.baseline != "full" else len(train) // info.nclass
        images, labels = baseline_set(args, train, info, network, device)
        set_name = f"baseline:{args.baseline}"
    epochs = args.eval_epochs or ipc_epochs(ipc, args.factor, info.nclass)
    recipe = eval_recipe(args, epochs)
    print(f"{set_name}: {len(images)} training images for {info.nclass} classes; {args.net_type}-{args.depth}, "
          f"{epochs} epochs, {args.runs} runs on {device}")
    result = evaluate_set(images, labels, test, info, network, recipe, device, runs=args.runs, seed=args.seed)
    print(summary(result))
    record(args, info, result, recipe, ipc, set_name)
    return result


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    run_cli(main, lambda: parse("evaluate"))
