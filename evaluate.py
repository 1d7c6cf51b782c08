"""Evaluate condensed sets (or real-image baselines): train fresh networks on them, report test accuracy.

    python evaluate.py --data 'results/condense/*/data_10000.pt' --runs 5
    python evaluate.py --data set.pt --eval_nets convnet,resnet_ap-10,resnet-18
    python evaluate.py -d cifar10 --baseline random --ipc 10 --factor 2
    python evaluate.py --summarize results/evaluations.jsonl --plot results/ipc.png
    python evaluate.py --data set.pt --score --labels soft      # DD-Ranking's IOR, HLR, LRS with soft labels
    python evaluate.py --data set.pt --export exported/        # PNG tree + tensor file for other tools

A set written by DANCE.py describes itself (data_K.json beside data_K.pt): its dataset, decoding, and the
network and protocol of its run are the defaults here; flags win, except one that contradicts the set.
Reported: the final-epoch test accuracy, mean +- std over runs (REFERENCE 8 protocol). The
reference's figure (the best over the periodic test checks) is printed beside it, labelled as such.
Each evaluation appends one JSON line to --results; finished runs are kept as they go, so an
interrupted call, run again, trains only the missing runs. --score adds DD-Ranking's scores (scores.py), whose
random-subset and whole-training-set evaluations are recorded there too and reused.
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
from reports.export import export_sets, teacher_soft_labels
from reports.plots import plot_summary
from reports.records import (evaluation_key, finished_runs, latest_record, load_results, record_evaluation, record_run,
                     summarize, summary, summary_table)
from reports.dd_ranking import dd_ranking_scores, random_subsets, score_line, score_table
from training.distributed import end_world, start_world
from training.set_accuracy import eval_recipe, evaluate_set
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


def trained_expert(args, network, device, purpose=None):
    """Expert 0 of --pretrain_dir, whose features herding and k-center use (and whose predictions soft labels are)."""
    path = expert_path(args.pretrain_dir, 0, "trained")
    if not os.path.isfile(path):
        purpose = purpose or f"--baseline {args.baseline} embeds images with expert 0"
        raise UserError(f"{purpose}, and {path} is missing; run: {pretrain_command(args, 1)}")
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
        if args.plot:
            print(f"accuracy against ipc drawn in {plot_summary(load_results(args.summarize), args.plot)}")
        return None
    world, device = start_world(select_device(args.device))
    try:
        entries = evaluate_all(args, world, device)
    except BaseException:
        end_world(world, clean=False)  # torchrun then stops the other ranks
        raise
    end_world(world)
    return entries


def load_teacher(args, info, device):
    """(expert 0 of --pretrain_dir in eval mode, its file's identity) for --labels soft; (None, None) for hard."""
    if args.labels != "soft":
        return None, None
    net = trained_expert(args, network_config(args, info), device, "--labels soft trains on expert 0's predictions")
    path = expert_path(args.pretrain_dir, 0, "trained")
    stat = os.stat(path)
    return net.eval().requires_grad_(False), [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]


def describe(identity, own, network, recipe, seed, teacher_id):
    """What identifies an evaluation (the key of its records): set, data, decoding, network, protocol, seed, teacher."""
    description = {"set": identity, "dataset": dataset_tag(own), "factor": own.factor, "decode_type": own.decode_type,
                   "network": network, "protocol": recipe.as_dict(), "seed": seed}
    if recipe.teacher is not None:
        description["teacher"] = teacher_id
    return description


class Evaluations:
    """Trains and records the evaluations of one call: finished runs kept as they go, runs dealt out to the ranks
    under torchrun, rank 0 alone printing and writing."""

    def __init__(self, args, world, device, test, info):
        self.args, self.world, self.device, self.test, self.info = args, world, device, test, info
        self.say = print if world.main else (lambda *a, **k: None)

    def train(self, images, labels, network, recipe, description, per_run=None):
        """(key, result) of --runs networks trained on (images, labels) or on per_run(r) (evaluation.evaluate_set)."""
        args, key = self.args, evaluation_key(description)
        record = (lambda run, final, best: record_run(args.results, key, run, final, best)) if self.world.main else None
        result = evaluate_set(images, labels, self.test, self.info, network, recipe, self.device, runs=args.runs,
                              seed=args.seed, done=finished_runs(args.results, key), progress=self.world.main,
                              strict=True, parallel=args.parallel, on_run=record, world=self.world, log=self.say,
                              per_run=per_run)
        return key, result

    def entry(self, name, key, description, ipc, label, origin, result):
        """The results line of one evaluation."""
        d = description
        return {"set": name, "key": key, "dataset": d["dataset"], "ipc": ipc, "factor": d["factor"],
                "decode_type": d["decode_type"], "network": label, "network_config": d["network"],
                "protocol": d["protocol"], "seed": self.args.seed, "labels": d["protocol"].get("labels", "hard"),
                **origin, "git": git_revision(), "time": time.strftime("%Y-%m-%d %H:%M:%S"), **result}

    def record(self, entry):
        if self.world.main:
            record_evaluation(self.args.results, entry)

    def reused_or_trained(self, name, what, data, ipc, label, network, recipe, description, origin=None, once=False):
        """An evaluation --score needs: its record in --results when there is one (with --runs runs, or any number
        when computed `once`), else trained and recorded. `data` is (images, labels) or a per_run function."""
        key = evaluation_key(description)
        cached = latest_record(self.args.results, key, 1 if once else self.args.runs)
        if cached is not None:
            self.say(f"{what}: {len(cached['final'])} run(s) recorded in {self.args.results}, reused "
                     f"(final acc {cached['mean']:.2f})")
            return cached
        self.say(f"{what}: {recipe.epochs} epochs, {self.args.runs} runs")
        per_run = data if callable(data) else None
        images, labels = (None, None) if per_run else data
        _, result = self.train(images, labels, network, recipe, description, per_run)
        self.say(summary(result))
        entry = self.entry(name, key, description, ipc, label, origin or {}, result)
        self.record(entry)
        return entry


def score_set(ev, train, s, label, network, recipe, hard_recipe, result, teacher_id):
    """DD-Ranking's IOR, HLR and LRS of set `s` on `network` (scores.py): its runs (`result`) against random real
    subsets of its ipc redrawn per run (same labels, protocol and run seeds) and, for HLR, its hard-label runs against
    the whole training set's hard-label accuracy (computed once per dataset, network and protocol)."""
    args, own = ev.args, s.args
    plain = argparse.Namespace(**{**vars(own), "factor": 1, "decode_type": "single"})  # real images: no decoding
    syn_hard = result
    if recipe.teacher is not None:
        syn_hard = ev.reused_or_trained(s.name, f"{s.name} with hard labels (HLR)", (s.images, s.labels), s.ipc, label,
                                        network, hard_recipe, describe(s.identity, own, network, hard_recipe, args.seed,
                                                                       None), s.origin)
    random = ev.reused_or_trained(
        "score:random", f"random real subsets, {s.ipc} per class, redrawn per run",
        random_subsets(train, ev.info.nclass, s.ipc, args.seed, ev.device), s.ipc, label, network, recipe,
        describe(["random subset per run", s.ipc], plain, network, recipe, args.seed, teacher_id))
    full = ev.reused_or_trained(
        "score:full", "the whole training set (once per dataset, network and protocol)", (train.images, train.labels),
        len(train) // ev.info.nclass, label, network, hard_recipe,
        describe("full", plain, network, hard_recipe, None, None), once=True)
    return dd_ranking_scores(result["final"], random["final"][:args.runs], syn_hard["final"][:args.runs],
                             full["mean"])


def export_all(args, sets, info, teacher, device):
    """Write every set under --export (export.py), with the teacher's soft labels when --labels soft."""
    exported = [(s.name, s.images, s.labels, None if teacher is None else
                 teacher_soft_labels(teacher, s.images, info.mean, info.std, device), s.name) for s in sets]
    folders = export_sets(args.export, exported, info)
    for folder in folders:
        print(f"exported {folder}/images (ImageFolder) and {folder}/tensors.pt (DD-Ranking's image_tensor, "
              f"hard_labels)")
    return folders


def evaluate_all(args, world, device):
    """Every (set, network) job; under torchrun each job's runs are dealt out to the ranks and rank 0 alone
    prints and writes the records (one per job, with all its runs)."""
    seed_everything(args.seed)  # a random baseline's subset depends on --seed alone, not on what ran before
    if (args.data is None) == (args.baseline is None):
        raise UserError("pass either --data PATH.pt (sets written by DANCE.py) or --baseline random|herding|"
                        "kcenter|full")
    train, test, info = load_dataset(args.dataset, args.data_dir, download=args.download, size=args.size,
                                     nclass=args.nclass, phase=args.phase)
    check_data_fit(args, info)
    test = test.to(device)
    teacher, teacher_id = load_teacher(args, info, device)  # a missing expert is refused before any training
    sets = real_sets(args, train, info, device) if args.baseline else condensed_sets(args, info, device)
    if args.export:
        return export_all(args, sets, info, teacher, device) if world.main else []
    jobs = [(s, label, network) for s in sets for label, network in eval_networks(s.args, info)]
    for _, _, network in jobs:  # every network can be built before the first one trains
        check_network(network)
    for s in sets if args.score else []:
        require_per_class(train.labels, info.nclass, s.ipc, info.class_names, f"--score for {s.name}",
                          "score a set with fewer images per class")
    ev = Evaluations(args, world, device, test, info)
    say, entries = ev.say, []
    for s, label, network in jobs:
        own = s.args
        epochs = own.eval_epochs or ipc_epochs(s.ipc, own.factor, info.nclass)
        recipe, hard_recipe = eval_recipe(own, epochs, teacher), eval_recipe(own, epochs)
        say(f"\n{s.name} ({len(s.images)} training images) on {label}: {recipe.epochs} epochs, "
            f"{args.runs} runs on {device}" + (f" and {world.size - 1} more process(es)" if world.size > 1 else "")
            + (f", soft labels of expert 0 at temperature {args.temperature:g}" if teacher is not None else ""))
        description = describe(s.identity, own, network, recipe, args.seed, teacher_id)
        key, result = ev.train(s.images, s.labels, network, recipe, description)
        say(summary(result))
        entry = ev.entry(s.name, key, description, s.ipc, label, s.origin, result)
        if args.score:
            entry["score"] = score_set(ev, train, s, label, network, recipe, hard_recipe, result, teacher_id)
            say(score_line(entry["score"]))
        ev.record(entry)
        entries.append(entry)
    say("\n" + summary_table(entries))
    if args.score:
        say("\nDD-Ranking scores (fractions, mean +- std over runs):\n" + score_table(entries))
    say(f"\n{len(entries)} evaluation(s) appended to {args.results} (python evaluate.py --summarize "
        f"{args.results} shows them all)")
    return entries


if __name__ == "__main__":
    run_cli(main, lambda: parse("evaluate"))
