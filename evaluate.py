"""Evaluate condensed sets (or real-image baselines): train fresh networks on them, report test accuracy.

    python evaluate.py --data 'results/condense/*/data_10000.pt' --runs 5
    python evaluate.py --data set.pt --eval_nets convnet,resnet_ap-10,resnet-18
    python evaluate.py -d cifar10 --baseline random --ipc 10 --factor 2
    python evaluate.py --summarize results/evaluations.jsonl --plot results/ipc.png
    python evaluate.py --data set.pt --score --labels soft      # DD-Ranking's IOR, HLR, LRS with soft labels
    python evaluate.py --data set.pt --export exported/        # PNG tree, tensor file, dataset card for the Hub

A set written by DANCE.py describes itself (data_K.json beside data_K.pt): its dataset, decoding, and the
network and protocol of its run are the defaults here; flags win, except one that contradicts the set.
Reported: the final-epoch test accuracy, mean +- std over runs, of networks trained with the paper's protocol (the
official train.py `train`). The official code's figure (the best over the periodic test checks) is printed beside
it, labelled as such. Each evaluation appends one JSON line to --results; finished runs are kept as they go, so an
interrupted call, run again, trains only the missing runs. --score adds DD-Ranking's scores
(reports/dd_ranking.py), whose random-subset and whole-training-set evaluations are recorded there too and reused.
"""
import os
import time

from arguments import parse
from arguments.values import (dataset_tag, eval_protocol, evaluation_compile, ipc_epochs, load_data, network_of,
                              pretrain_command)
from condense.expert_folder import trained_expert
from data.coreset import real_subset
from data.sampler import require_per_class
from data.set_files import PROTOCOL, check_classes, check_ipc, load_set, read_description, run_origin
from data.synthetic import SyntheticSet
from models import MODELS, check_network, network_config
from reports.cards import SetAbout, dataset_card
from reports.dd_ranking import dd_ranking_scores, random_subsets, score_line, score_table
from reports.export import export_sets, teacher_soft_labels
from reports.plots import plot_summary
from reports.records import (condensation_method, evaluation_key, finished_runs, latest_record, load_results,
                             record_evaluation, record_run, summarize, summary, summary_table)
from reports.trackers import open_trackers
from training.distributed import torchrun_session
from training.set_accuracy import eval_recipe, evaluate_set
from utils import UserError, git_revision, precision_line, run_cli, seed_everything, select_device

DEFAULT_DEPTH = {"resnet_ap": 10, "resnet": 18}  # when --eval_nets names a ResNet without a depth


def eval_networks(eval_nets, protocol, info):
    """(label, network description) of every architecture to train on a set: the comma-separated `eval_nets`
    (name or name-depth), else the set's protocol's network."""
    net_type, depth, width, norm = protocol["net_type"], protocol["depth"], protocol["width"], protocol["norm_type"]
    if not eval_nets:
        return [(f"{net_type}-{depth}", network_config(net_type, depth, width, norm, info))]
    nets = []
    for item in eval_nets.split(","):
        name, _, given = item.strip().partition("-")
        if name not in MODELS:
            raise UserError(f"--eval_nets: unknown architecture '{name}'; choose from: {', '.join(MODELS)}")
        if given and not given.isdigit():
            raise UserError(f"--eval_nets: '{item}' should be name or name-depth, e.g. resnet_ap-10")
        chosen = int(given) if given else (depth if name == net_type else DEFAULT_DEPTH.get(name, depth))
        nets.append((name if name == "densenet" else f"{name}-{chosen}",
                     network_config(name, chosen, width, norm, info)))
    return nets


class EvalSet:
    """One set to evaluate: its training images and labels, ipc, identity (for records), how its storage decodes,
    its evaluation protocol (data/set_files.PROTOCOL) and the run it came from."""

    def __init__(self, name, images, labels, ipc, identity, factor, decode_type, protocol, origin=None):
        self.name, self.images, self.labels, self.ipc, self.identity = name, images, labels, ipc, identity
        self.factor, self.decode_type, self.protocol, self.origin = factor, decode_type, protocol, origin or {}


def real_sets(args, train, info, device):
    """The --baseline set: the whole training set, or ipc x factor^2 real images per class."""
    protocol = eval_protocol(args)
    if args.baseline == "full":
        return [EvalSet("baseline:full", train.images, train.labels, len(train) // info.nclass, "full", args.factor,
                        args.decode_type, protocol)]
    require_per_class(train.labels, info.nclass, args.ipc * args.factor ** 2, info.class_names,
                      f"--baseline {args.baseline} --ipc {args.ipc}" + (f" --factor {args.factor}"
                                                                        if args.factor > 1 else ""),
                      "lower --ipc or --factor")
    net = None
    if args.baseline != "random":
        net, _ = trained_expert(args.pretrain_dir, network_of(args, info), device,
                                f"--baseline {args.baseline} embeds images with expert 0", pretrain_command(args, 1))
    images, labels = real_subset(args.baseline, train, info, args.ipc, args.factor, args.decode_type, device, net)
    return [EvalSet(f"baseline:{args.baseline}", images, labels, args.ipc, [args.baseline, args.ipc], args.factor,
                    args.decode_type, protocol)]


def condensed_sets(args, info, device):
    """Every --data set, decoded with its own factor and decode type, with its own protocol (from its description
    where no flag was given)."""
    sets = []
    for path in args.data:
        own = args.set_settings.get(path, {})
        factor, decode_type = own.get("factor", args.factor), own.get("decode_type", args.decode_type)
        protocol = {**eval_protocol(args), **{k: v for k, v in own.items() if k in PROTOCOL}}
        description = read_description(path)
        check_classes(path, description, info.class_names)
        data, ipc = load_set(path, info.nclass, info.channels, info.size)
        check_ipc(path, description, ipc)
        synset = SyntheticSet(info.nclass, ipc, info.channels, info.size, factor, decode_type, device, data=data)
        stat = os.stat(path)
        sets.append(EvalSet(path, *synset.decoded(), ipc, [os.path.abspath(path), stat.st_size, stat.st_mtime_ns],
                            factor, decode_type, protocol, run_origin(description)))
    return sets


def main(args):
    if args.summarize:
        print(summarize(args.summarize))
        if args.plot:
            print(f"accuracy against ipc drawn in {plot_summary(load_results(args.summarize), args.plot)}")
        return None
    with torchrun_session(select_device(args.device)) as (world, device):
        return evaluate_all(args, world, device)


def data_of_the_sets(args):
    """load_data(args); when the data cannot be read and a set's description chose it, the error says so."""
    try:
        return load_data(args)
    except UserError as e:
        for path in args.data or []:
            described = (read_description(path) or {}).get("settings", {})
            here = (described.get("dataset"), described.get("data_dir"))
            if here == (args.dataset, os.path.abspath(args.data_dir)):
                raise UserError(f"{e} (-d {args.dataset} and --data_dir {args.data_dir} come from {path}'s "
                                f"description, {os.path.splitext(path)[0]}.json: give --data_dir where that data lives "
                                f"now)") from None
        raise


def load_teacher(args, info, device):
    """(expert 0 of --pretrain_dir in eval mode, its file's identity) for --labels soft; (None, None) for hard."""
    if args.labels != "soft":
        return None, None
    return trained_expert(args.pretrain_dir, network_of(args, info), device,
                          "--labels soft trains on expert 0's predictions", pretrain_command(args, 1))


def describe(identity, dataset, factor, decode_type, network, recipe, seed, teacher_id):
    """What identifies an evaluation (the key of its records): set, data, decoding, network, protocol, seed, teacher."""
    description = {"set": identity, "dataset": dataset, "factor": factor, "decode_type": decode_type,
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
        self.appended = 0  # records this call wrote (the sets' and, with --score, those of its references)

    def train(self, images, labels, network, recipe, description, per_run=None):
        """(key, result) of --runs networks trained on (images, labels) or on per_run(r) (training/set_accuracy.py)."""
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
                **({"teacher": d["teacher"][0]} if d.get("teacher") else {}), **origin, "git": git_revision(),
                "time": time.strftime("%Y-%m-%d %H:%M:%S"), **result}

    def record(self, entry):
        if self.world.main:
            record_evaluation(self.args.results, entry)
        self.appended += 1

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
    """DD-Ranking's IOR, HLR and LRS of set `s` on `network` (reports/dd_ranking.py): its runs (`result`) against
    random real subsets of its ipc redrawn per run (same labels, protocol and run seeds) and, for HLR, its hard-label
    runs against the whole training set's hard-label accuracy (computed once per dataset, network and protocol)."""
    args, dataset = ev.args, dataset_tag(ev.args)
    syn_hard = result
    if recipe.teacher is not None:
        syn_hard = ev.reused_or_trained(s.name, f"{s.name} with hard labels (HLR)", (s.images, s.labels), s.ipc, label,
                                        network, hard_recipe, describe(s.identity, dataset, s.factor, s.decode_type,
                                                                       network, hard_recipe, args.seed, None), s.origin)
    # real images need no decoding: factor 1, single
    random = ev.reused_or_trained(
        "score:random", f"random real subsets, {s.ipc} per class, redrawn per run",
        random_subsets(train, ev.info.nclass, s.ipc, args.seed, ev.device), s.ipc, label, network, recipe,
        describe(["random subset per run", s.ipc], dataset, 1, "single", network, recipe, args.seed, teacher_id))
    full = ev.reused_or_trained(
        "score:full", "the whole training set (once per dataset, network and protocol)", (train.images, train.labels),
        len(train) // ev.info.nclass, label, network, hard_recipe,
        describe("full", dataset, 1, "single", network, hard_recipe, None, None), once=True)
    return dd_ranking_scores(result["final"], random["final"][:args.runs], syn_hard["final"][:args.runs],
                             full["mean"])


def job_trainings(args, s, train, teacher):
    """(networks trained for set `s`, their mean training images): its runs, and with --score the
    hard-label runs (with a teacher), the random subsets' and the whole training set's (the most, if not reused)."""
    runs = args.runs  # all ranks' runs: every rank decides alike
    sizes = [len(s.images)] * runs
    if args.score:
        sizes += [len(s.images)] * runs * (2 if teacher is not None else 1) + [len(train)] * runs
    return len(sizes), sum(sizes) / len(sizes)


def set_epochs(s, info):
    """The evaluation epochs of set `s`: its protocol's, else the official code's table by ipc and factor."""
    return s.protocol["eval_epochs"] or ipc_epochs(s.ipc, s.factor, info.nclass)


def recorded_evaluations(args, s, info, teacher, teacher_id):
    """The latest record in --results of each evaluation of set `s` that evaluate.py with this call's flags runs
    (found by its key: the set's file, network, protocol, seed, labels), hard-label ones and, with a teacher, soft."""
    found = []
    for _, network in eval_networks(args.eval_nets, s.protocol, info):
        for t, t_id in [(None, None)] + ([(teacher, teacher_id)] if teacher is not None else []):
            recipe = eval_recipe(s.protocol, set_epochs(s, info), False, t, args.temperature)
            description = describe(s.identity, dataset_tag(args), s.factor, s.decode_type, network, recipe,
                                   args.seed, t_id)
            try:
                record = latest_record(args.results, evaluation_key(description))
            except OSError as e:
                raise UserError(f"cannot read --results {args.results} ({e.strerror or e}) for the dataset card; "
                                f"fix its permissions or pass the results file evaluate.py wrote") from None
            found += [record] if record is not None else []
    return found


def set_about(args, s, info, records, soft_labels):
    """What the dataset card of set `s` says besides its files (reports/cards.SetAbout)."""
    described = None if s.name.startswith("baseline:") else read_description(s.name)
    if s.origin:
        method = condensation_method(s.origin)
    elif s.name.startswith("baseline:"):
        method = f"real images ({s.name.split(':', 1)[1]})"
    else:
        method = None
    return SetAbout(source=s.name, dataset=dataset_tag(args),
                    class_names=[str(n) for n in (info.class_names or range(info.nclass))], ipc=s.ipc,
                    factor=s.factor, decode_type=s.decode_type, method=method, origin=s.origin,
                    settings=(described or {}).get("settings"), records=records, results=args.results,
                    evaluate_hint=f"run this export's evaluate.py command again without `--export` (it appends to "
                                  f"`{args.results}`; add `--score` for DD-Ranking's scores)", soft_labels=soft_labels)


def export_all(args, sets, info, teacher, teacher_id, device):
    """Write every set under --export (reports/export.py), with the teacher's soft labels when --labels soft, a
    metadata.csv for `datasets` and a dataset card naming the set's recorded accuracy (reports/cards.py)."""
    exported, unevaluated = [], []
    for s in sets:
        records = recorded_evaluations(args, s, info, teacher, teacher_id)
        about = set_about(args, s, info, records, teacher is not None)
        soft = None if teacher is None else teacher_soft_labels(teacher, s.images, info.mean, info.std, device)
        exported.append((s.name, s.images, s.labels, soft, s.name,
                         lambda folder, entry, about=about: dataset_card(about, folder, entry)))
        unevaluated += [] if records else [s.name]
    folders = export_sets(args.export, exported, info)
    for folder in folders:
        print(f"exported {folder}/images (ImageFolder, with metadata.csv for the datasets library), "
              f"{folder}/tensors.pt (DD-Ranking's image_tensor, hard_labels) and its dataset card {folder}/README.md")
    for name in unevaluated:
        print(f"{name}: not evaluated yet with these settings ({args.results} holds no record of it), so its card "
              f"gives no accuracy; run the same evaluate.py command without --export, then export again")
    return folders


def evaluate_all(args, world, device):
    """Every (set, network) job; under torchrun each job's runs are dealt out to the ranks and rank 0 alone
    prints and writes the records (one per job, with all its runs)."""
    seed_everything(args.seed)  # a random baseline's subset depends on --seed alone, not on what ran before
    if (args.data is None) == (args.baseline is None):
        raise UserError("pass either --data PATH.pt (sets written by DANCE.py) or --baseline random|herding|"
                        "kcenter|full")
    train, test, info = data_of_the_sets(args)
    test = test.to(device)
    teacher, teacher_id = load_teacher(args, info, device)  # a missing expert is refused before any training
    sets = real_sets(args, train, info, device) if args.baseline else condensed_sets(args, info, device)
    if args.export:
        return export_all(args, sets, info, teacher, teacher_id, device) if world.main else []
    jobs = [(s, label, network) for s in sets for label, network in eval_networks(args.eval_nets, s.protocol, info)]
    for _, _, network in jobs:  # every network can be built before the first one trains
        check_network(network)
    for s in sets if args.score else []:
        require_per_class(train.labels, info.nclass, s.ipc, info.class_names, f"--score for {s.name}",
                          "score a set with fewer images per class")
    ev = Evaluations(args, world, device, test, info)
    stem = os.path.splitext(args.results)[0]  # the trackers' files live beside --results
    track = open_trackers(args.logger, os.path.dirname(args.results) or ".", world, vars(args),
                          name=os.path.basename(stem), tensorboard_dir=f"{stem}_tensorboard", say=ev.say)
    try:
        return evaluate_jobs(args, world, device, ev, jobs, train, teacher, teacher_id, track)
    finally:
        track.close()


def tracker_tag(name, label):
    """A set's tag in the trackers: its run folder and file stem (or baseline:kind), then the network."""
    if name.startswith("baseline:"):
        return f"{name}/{label}"
    folder = os.path.basename(os.path.dirname(os.path.abspath(name)))
    return f"{folder}/{os.path.splitext(os.path.basename(name))[0]}/{label}"


def evaluate_jobs(args, world, device, ev, jobs, train, teacher, teacher_id, track):
    """Train, print and record every (set, network) job; `track` (--logger) gets each run's final accuracy (by run
    index) and their mean."""
    test, info = ev.test, ev.info
    say, entries = ev.say, []
    for s, label, network in jobs:
        epochs = set_epochs(s, info)
        compile, why = evaluation_compile(args.compile, device, network, *job_trainings(args, s, train, teacher),
                                          epochs, s.protocol["batch_size"], s.protocol["eval_interval"], len(test))
        recipe = eval_recipe(s.protocol, epochs, compile, teacher, args.temperature)
        hard_recipe = eval_recipe(s.protocol, epochs, compile)
        say(f"\n{s.name} ({len(s.images)} training images) on {label}: {recipe.epochs} epochs, "
            f"{args.runs} runs on {device}" + (f" and {world.size - 1} more process(es)" if world.size > 1 else "")
            + (f", soft labels of {teacher_id[0]} at temperature {args.temperature:g}" if teacher is not None else "")
            + f"; {precision_line(s.protocol['precision'], device)}; compile {why}")
        description = describe(s.identity, dataset_tag(args), s.factor, s.decode_type, network, recipe, args.seed,
                               teacher_id)
        key, result = ev.train(s.images, s.labels, network, recipe, description)
        say(summary(result))
        tag = tracker_tag(s.name, label)
        for run, acc in enumerate(result["final"]):
            track.scalars({f"{tag}/final_acc": acc}, run, "run")
        track.scalars({f"{tag}/mean_acc": result["mean"], f"{tag}/std_acc": result["std"]}, 0, "run")
        entry = ev.entry(s.name, key, description, s.ipc, label, s.origin, result)
        if args.score:
            entry["score"] = score_set(ev, train, s, label, network, recipe, hard_recipe, result, teacher_id)
            say(score_line(entry["score"]))
        ev.record(entry)
        entries.append(entry)
    say("\n" + summary_table(entries))
    if args.score:
        say("\nDD-Ranking scores (fractions, mean +- std over runs):\n" + score_table(entries))
    say(f"\n{ev.appended} evaluation(s) appended to {args.results}" +
        (f" ({len(entries)} of the sets, {ev.appended - len(entries)} of the references --score trained)"
         if ev.appended > len(entries) else "") +
        f" (python evaluate.py --summarize {args.results} shows them all)")
    return entries


if __name__ == "__main__":
    run_cli(main, lambda: parse("evaluate"))
