"""Evaluate condensed sets (or real-image baselines): train fresh networks on them, report test accuracy.

    python evaluate.py --data 'results/condense/*/data_10000.pt' --runs 5
    python evaluate.py --data set.pt --eval_nets convnet,resnet_ap-10,resnet-18
    python evaluate.py -d cifar10 --baseline random --ipc 10 --factor 2
    python evaluate.py --summarize results/evaluations.jsonl

A set written by DANCE.py describes itself (data_K.json beside data_K.pt): its dataset, decoding, and the
network and protocol of its run are the defaults here; flags win, except one that contradicts the set.
Reported: the final-epoch test accuracy, mean +- std over runs (REFERENCE 8 protocol). The
reference's figure (the best over the periodic test checks) is printed beside it, labelled as such.
Each evaluation appends one JSON line to --results; finished runs are kept as they go, so an
interrupted call, run again, trains only the missing runs.
"""
import argparse
import os
import time


from arguments import dataset_tag, ipc_epochs, parse, pretrain_command
from arguments.checks import check_data_fit
from data.coreset import real_subset
from data.datasets import load_dataset
from data.sampler import require_per_class
from data.synthetic import SyntheticSet, load_set, read_description
from models import MODELS, check_network, make_network, network_config
from records import evaluation_key, finished_runs, record_evaluation, record_run, summarize, summary, summary_table
from distributed import end_world, start_world
from evaluation import eval_recipe, evaluate_set
from utils import (UserError, check_state_dict, expert_path, git_revision, run_cli, safe_load, seed_everything,
                   select_device)

DEFAULT_DEPTH = {"resnet_ap": 10, "resnet": 18}  # when --eval_nets names a ResNet without a depth


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


def trained_expert(args, network, device):
    """Expert 0 of --pretrain_dir, whose features herding and k-center use."""
    path = expert_path(args.pretrain_dir, 0, "trained")
    if not os.path.isfile(path):
        raise UserError(f"--baseline {args.baseline} embeds images with expert 0, and {path} is missing; run: "
                        f"{pretrain_command(args, 1)}")
    net, state = make_network(network, device), safe_load(path, "expert checkpoint")
    check_state_dict(net, state, path)
    net.load_state_dict(state)
    return net


class EvalSet:
    """One set to evaluate: its training images, labels, ipc, identity (for records) and its own settings."""

    def __init__(self, name, images, labels, ipc, identity, args, origin=None):
        self.name, self.images, self.labels, self.ipc, self.identity = name, images, labels, ipc, identity
        self.args, self.origin = args, origin or {}


def real_sets(args, train, info, device):
    """The --baseline set: the whole training set, or ipc x factor^2 real images per class."""
    if args.baseline == "full":
        return [EvalSet("baseline:full", train.images, train.labels, len(train) // info.nclass, "full", args)]
    require_per_class(train.labels, info.nclass, args.ipc * args.factor ** 2, info.class_names,
                      f"--baseline {args.baseline} --ipc {args.ipc}" + (f" --factor {args.factor}"
                                                                        if args.factor > 1 else ""),
                      "lower --ipc or --factor")
    net = trained_expert(args, network_config(args, info), device) if args.baseline != "random" else None
    images, labels = real_subset(args.baseline, train, info, args.ipc, args.factor, args.decode_type, device, net)
    return [EvalSet(f"baseline:{args.baseline}", images, labels, args.ipc, [args.baseline, args.ipc], args)]


def condensed_sets(args, info, device):
    """Every --data set, decoded with its own factor and decode type (from its description, else the flags)."""
    sets = []
    for path in args.data:
        own = argparse.Namespace(**{**vars(args), **args.set_settings.get(path, {})})
        description = read_description(path) or {}
        classes = description.get("classes")
        if classes is not None and list(classes) != list(info.class_names):
            raise UserError(f"{path} was condensed from classes {classes[:3]}..., but the dataset loaded now has "
                            f"{list(info.class_names)[:3]}...; evaluate it on the data it was condensed from (or move "
                            f"its description, {os.path.splitext(path)[0]}.json, away if it is wrong)")
        data, ipc = load_set(path, info.nclass, info.channels, info.size)
        synset = SyntheticSet(info.nclass, ipc, info.channels, info.size, own.factor, own.decode_type, device,
                              data=data)
        stat = os.stat(path)
        origin = {}
        if description:
            run = description["run"]
            origin = {"condense_seed": run["seed"], "method": {**run["method"], "iteration": run["iteration"]}}
        sets.append(EvalSet(path, *synset.decoded(), ipc, [os.path.abspath(path), stat.st_size, stat.st_mtime_ns],
                            own, origin))
    return sets


def main(args):
    if args.summarize:
        print(summarize(args.summarize))
        return None
    world, device = start_world(select_device(args.device))
    try:
        entries = evaluate_all(args, world, device)
    except BaseException:
        end_world(world, clean=False)  # torchrun then stops the other ranks
        raise
    end_world(world)
    return entries


def evaluate_all(args, world, device):
    """Every (set, network) job; under torchrun each job's runs are dealt out to the ranks and rank 0 alone
    prints and writes the records (one per job, with all its runs)."""
    say = print if world.main else (lambda *a, **k: None)
    seed_everything(args.seed)  # a random baseline's subset depends on --seed alone, not on what ran before
    if (args.data is None) == (args.baseline is None):
        raise UserError("pass either --data PATH.pt (sets written by DANCE.py) or --baseline random|herding|"
                        "kcenter|full")
    train, test, info = load_dataset(args.dataset, args.data_dir, download=args.download, size=args.size,
                                     nclass=args.nclass, phase=args.phase)
    check_data_fit(args, info)
    test = test.to(device)
    sets = real_sets(args, train, info, device) if args.baseline else condensed_sets(args, info, device)
    jobs = [(s, label, network) for s in sets for label, network in eval_networks(s.args, info)]
    for _, _, network in jobs:  # every network can be built before the first one trains
        check_network(network)
    entries = []
    for s, label, network in jobs:
        own = s.args
        recipe = eval_recipe(own, own.eval_epochs or ipc_epochs(s.ipc, own.factor, info.nclass))
        say(f"\n{s.name} ({len(s.images)} training images) on {label}: {recipe.epochs} epochs, "
            f"{args.runs} runs on {device}" + (f" and {world.size - 1} more process(es)" if world.size > 1 else ""))
        description = {"set": s.identity, "dataset": dataset_tag(own), "factor": own.factor,
                       "decode_type": own.decode_type, "network": network, "protocol": recipe.as_dict(),
                       "seed": args.seed}
        key = evaluation_key(description)
        record = (lambda run, final, best: record_run(args.results, key, run, final, best)) if world.main else None
        result = evaluate_set(s.images, s.labels, test, info, network, recipe, device, runs=args.runs,
                              seed=args.seed, done=finished_runs(args.results, key), progress=world.main,
                              strict=True, parallel=args.parallel, on_run=record, world=world,
                              log=say)
        say(summary(result))
        entry = {"set": s.name, "key": key, "dataset": dataset_tag(own), "ipc": s.ipc, "factor": own.factor,
                 "decode_type": own.decode_type, "network": label, "network_config": network,
                 "protocol": recipe.as_dict(), "seed": args.seed, **s.origin, "git": git_revision(),
                 "time": time.strftime("%Y-%m-%d %H:%M:%S"), **result}
        if world.main:
            record_evaluation(args.results, entry)
        entries.append(entry)
    say("\n" + summary_table(entries))
    say(f"\n{len(entries)} evaluation(s) appended to {args.results} (python evaluate.py --summarize "
        f"{args.results} shows them all)")
    return entries


if __name__ == "__main__":
    run_cli(main, lambda: parse("evaluate"))
