"""One parser for pretrain.py, DANCE.py and evaluate.py.

Precedence: parser defaults < the dataset's SETTINGS < its REPRODUCE (with --reproduce) < flags
given on the command line. Each `arguments/<dataset>.py` holds only that dataset's values, as
{"common": {...}, "pretrain": {...}, "condense": {...}, "evaluate": {...}}; "common" applies to all
three scripts. A key that is not a flag of the script fails loudly.
"""
import argparse
import copy
import importlib
import json
import os
import sys
import time

from arguments.checks import ALIGNMENT_FLAGS, NET_TYPES, NORM_TYPES, check_explicit, check_outputs, check_settings
from arguments.sets import described_settings
from arguments.values import dataset_tag, default_pretrain_dir, ipc_epochs
from condense.losses import ALIGNMENTS, DEFAULT_SCALES
from condense.run_folder import RESUMABLE
from data.datasets import DATASETS, peek_dataset
from data.set_files import IDENTITY, LOCATION, changed_settings
from reports.trackers import TRACKERS
from training.recipe import DEFAULT_TEMPERATURE
from utils import UserError, read_json, resolve_precision, select_device

SCRIPTS = ("pretrain", "condense", "evaluate")


def _common(p):
    """Flags every script shares: data, network, evaluation/training recipe, run control."""
    g = p.add_argument_group("data")
    g.add_argument("-d", "--dataset", default="digits", help=f"one of: {', '.join(DATASETS)}")
    g.add_argument("--data_dir", default="datasets",
                   help="dataset root (torchvision layout for mnist/fashion/svhn/cifar; the unpacked "
                        "folder for tinyimagenet, the ImageNet family and 'folder')")
    g.add_argument("--download", action="store_true", help="let torchvision fetch mnist/fashion/svhn/cifar")
    g.add_argument("--nclass", type=int, default=10, help="imagenet only: 10 or 100 classes of class100.txt, or the number of class "
                        "folders in train/ for all of them (ImageNet-1K: 1000)")
    g.add_argument("--phase", type=int, default=0, help="imagenet only: which slice of nclass classes")
    g.add_argument("--size", type=int, default=None,
                   help="image-file datasets (folder, tinyimagenet, the ImageNet family) and patches: resize to "
                        "size x size (patches: cut at that size; default: folder 32, patches 16, else the dataset's "
                        "own size)")

    g = p.add_argument_group("network")
    g.add_argument("-n", "--net_type", default="convnet", help=f"one of: {', '.join(NET_TYPES)}")
    g.add_argument("--depth", type=int, default=3)
    g.add_argument("--width", type=float, default=1.0, help="channel multiplier (ConvNet: 128*width)")
    g.add_argument("--norm_type", default="instance", help=f"one of: {', '.join(NORM_TYPES)}")

    g = p.add_argument_group("training recipe (expert training and evaluation)")
    g.add_argument("--batch_size", type=int, default=64, help="evaluation training batch size")
    g.add_argument("--lr", "--eval_lr", dest="lr", type=float, default=0.01,
                   help="network learning rate: of the experts in pretrain.py, of the evaluation "
                        "networks in DANCE.py and evaluate.py")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight_decay", "--wd", "--weight-decay", dest="weight_decay", type=float, default=5e-4)
    g.add_argument("--mixup", choices=("cut", "none"), default="cut", help="CutMix during training")
    g.add_argument("--beta", type=float, default=1.0, help="CutMix Beta(beta, beta)")
    g.add_argument("--mix_p", type=float, default=0.5, help="probability of CutMix per batch")
    g.add_argument("--dsa_strategy", default=None,
                   help="evaluation DSA ops; default: the dataset's (no flip for svhn/mnist/digits)")
    g.add_argument("--eval_aug", choices=("dsa", "imagenet"), default="dsa",
                   help="augmentation of networks trained on a set: per-sample DSA (--dsa_strategy), or the "
                        "official code's torchvision ImageNet pipeline (crop, flip, colour jitter, lighting); "
                        "-d imagenet defaults to imagenet")
    g.add_argument("--eval_epochs", type=int, default=1500,
                   help="epochs to train a network on a condensed set (ImageNet family: from the ipc table "
                        "when not given)")
    g.add_argument("--eval_interval", type=int, default=250, help="epochs between test checks while training")
    g.add_argument("--parallel", type=int, default=0,
                   help="networks trained at once as one vectorised model: evaluation runs, and experts in "
                        "pretrain.py; 0: all of them where that pays (on the CPU only ConvNets of <= 32 channels), "
                        "1: one after another (each then reproducible on its own)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default="auto",
                   help="run the networks through torch.compile (condensation encoders and experts, expert and "
                        "evaluation training): seconds of compilation per batch shape, then 1.3-1.8x faster on the "
                        "CPU (README, Speed). Default auto: each group of networks is compiled when the run's "
                        "estimated network time earns the compilation back and a compiler is present; --compile "
                        "forces it, --no-compile forbids it; a compilation that fails runs eager")
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="forward passes in fp32, or bf16 autocast (weights, optimiser and synthetic pixels stay fp32), "
                        "in condensation, expert training and evaluation. auto: bf16 where the device computes it "
                        "natively (CUDA compute capability 8.0+, CPUs with AVX512-BF16 or AMX), fp32 elsewhere; "
                        "--reproduce uses fp32, the paper's arithmetic")

    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, default=0, help="seeds python, numpy and torch (0 included), 0..2^32-1")
    g.add_argument("--device", default="auto", help="auto (accelerator when present), cpu, cuda, cuda:N or mps")
    g.add_argument("--reproduce", action="store_true", help="apply the paper's settings for the dataset")
    g.add_argument("--print_config", action="store_true", help="print the resolved settings and exit")
    g.add_argument("--pretrain_dir", default=None,
                   help="expert folder; default results/experts/<dataset>_<net><depth>_<norm>")
    g.add_argument("--logger", nargs="*", choices=TRACKERS, default=[], metavar="{tensorboard,wandb}",
                   help="also log losses, accuracies, image grids and the settings to these trackers (several at "
                        "once; none by default): TensorBoard files under the run's folder, a W&B run (offline "
                        "without an API key); changes no result")


def _pretrain(p):
    g = p.add_argument_group("expert training")
    g.add_argument("--pretrain_amount", type=int, default=10, help="number of experts to train")
    g.add_argument("--pretrain_epochs", type=int, default=80)
    g.add_argument("--batch_real", type=int, default=64, help="batch size of expert training")
    g.add_argument("-a", "--aug_type", default="color_crop_cutout",
                   help="per-sample DSA for expert training (cutout dropped when CutMix is on)")
    _holdout(g)


def _holdout(g):
    """The held-out selection split: pretrain.py leaves the same images out of expert training."""
    g.add_argument("--val_split", type=float, default=0.0,
                   help="per-class fraction of the training set held out (seeded by --seed) to choose data_best.pt; "
                        "never condensed, and left out of expert training by pretrain.py with the same flags. "
                        "0: condense the whole training set, as the paper")


def _decoding(g):
    """Flags that say how a synthetic set's storage decodes (shared by condensation and evaluation)."""
    g.add_argument("-f", "--factor", type=int, default=1, help="multi-formation factor (crops per side)")
    g.add_argument("--decode_type", choices=("single", "multi", "bound"), default="single")


def _condense(p):
    g = p.add_argument_group("condensation")
    g.add_argument("-i", "--ipc", type=int, default=10, help="storage images per class")
    _decoding(g)
    g.add_argument("--init", choices=("random", "mix", "noise"), default=None,
                   help="random: first real images; mix: tiled real images (default when factor > 1)")
    g.add_argument("-a", "--aug_type", default="color_crop_cutout", help="siamese DSA ops for both views")
    g.add_argument("--niter", type=int, default=500, help="outer condensation iterations")
    g.add_argument("--num_premodel", type=int, default=5,
                   help="experts 0..N-1 to sample from; 0 = plain DM (fresh random net, no calibration)")
    g.add_argument("--iter_calib", type=int, default=1, help="calibration sweeps per iteration (0: none)")
    g.add_argument("--batch_real", type=int, default=128, help="real images per class per step")
    g.add_argument("--batch_syn_max", type=int, default=200, help="max decoded synthetic images per class")
    g.add_argument("--lr_img", type=float, default=5e-3, help="learning rate of the synthetic pixels")
    g.add_argument("--lr_img_per_ipc", type=float, default=None,
                   help="if set (and --lr_img is not given), lr_img = lr_img_per_ipc * ipc")
    g.add_argument("--mom_img", type=float, default=0.5, help="momentum of the synthetic pixels' SGD")
    g.add_argument("--lam_min", type=float, default=0.0, help="middle encoder: lam ~ U(lam_min, lam_max)")
    g.add_argument("--lam_max", type=float, default=1.0, help="lam=0 is the trained expert, 1 its init")
    _alignment(p)
    g.add_argument("--update", choices=("per_class", "joint"), default="per_class",
                   help="per_class: one step per class per view (reference); joint: one step per view")
    g.add_argument("--class_chunk", type=int, default=None,
                   help="joint: classes per forward pass (bounds memory; the loss and step are unchanged up to float "
                        "order); 0: all at once; default 1 on the CPU, all on an accelerator; under torchrun the "
                        "classes are dealt to processes in blocks of this size")
    g.add_argument("--eval_every", type=int, default=500, help="iterations between evaluations (0: off)")
    g.add_argument("--eval_runs", type=int, default=1, help="networks trained per periodic evaluation")
    _holdout(g)
    g.add_argument("--select_by", choices=("val", "test"), default=None,
                   help="what data_best.pt is chosen by: the held-out split (default with --val_split), else "
                        "the test split, as the reference (optimistic: report the final set instead)")
    g.add_argument("--save_dir", default=None, help="run folder; default a new one under results/condense/")
    g.add_argument("--ckpt_every", type=int, default=100,
                   help="iterations between checkpoints (state.pt in the run folder) for --resume; 0: only on "
                        "SIGINT/SIGTERM and at the end")
    g.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its state.pt, with its settings (args.json); only "
                        "flags that cannot change the synthetic set may be given with it")


def _alignment(p):
    """The inner-class discrepancy and its settings (condense/losses.py)."""
    g = p.add_argument_group("inner-class alignment")
    g.add_argument("--align", choices=tuple(ALIGNMENTS), default="mean",
                   help="discrepancy of each class's real and synthetic features in the encoder: mean (DANCE, DM), "
                        "mmd (M3D: Gaussian-kernel MMD), cf (NCFM: characteristic functions), moments (mean + "
                        "covariance, DSDM-style)")
    g.add_argument("--align_scale", type=float, default=None,
                   help="multiplies the alignment loss; default: the value that gives its first steps the pixel "
                        "gradient norm of mean's (mean 1, mmd 2, cf 20, moments 1; README)")
    g.add_argument("--mmd_bandwidths", type=float, nargs="+", default=[0.5, 1.0, 2.0], metavar="W",
                   help="mmd: Gaussian kernels exp(-d^2 / (W h)) summed over W, h the median pairwise squared distance")
    g.add_argument("--cf_alpha", type=float, default=0.5, help="cf: weight of the amplitude difference (NCFM: 0.5)")
    g.add_argument("--cf_beta", type=float, default=0.5, help="cf: weight of the phase difference (NCFM: 0.5)")
    g.add_argument("--cf_frequencies", type=int, default=4096,
                   help="cf: frequencies t ~ N(0, I) drawn per class and iteration (NCFM: 4096)")
    g.add_argument("--cf_sampling_net", action="store_true",
                   help="cf: frequencies from NCFM's sampling network, trained to maximise the discrepancy (min-max) "
                        "instead of drawn from N(0, I); under torchrun with --update joint")
    g.add_argument("--cf_sampling_lr", type=float, default=1e-3,
                   help="cf: learning rate of the sampling network's SGD (NCFM: 1e-3; momentum --mom_img)")
    g.add_argument("--moments_weights", type=float, nargs=2, default=[1.0, 1.0], metavar=("MEAN", "COV"),
                   help="moments: weights of the mean gap and of the covariance gap (divided by the feature size)")


def _evaluate(p):
    g = p.add_argument_group("evaluation")
    _decoding(g)
    g.add_argument("--data", nargs="+", default=None,
                   help="condensed sets saved by DANCE.py ([data, targets] .pt); several paths or globs")
    g.add_argument("--baseline", choices=("random", "herding", "kcenter", "full"), default=None,
                   help="evaluate real images instead: ipc per class (tiled like mix-init when factor > 1), "
                        "or the full training set; herding/kcenter use expert 0's features")
    g.add_argument("-i", "--ipc", type=int, default=10, help="--baseline only: images per class")
    g.add_argument("--runs", type=int, default=3, help="fresh networks trained on the set")
    g.add_argument("--eval_nets", default=None,
                   help="comma-separated architectures to train on each set, e.g. convnet,resnet_ap-10,"
                        "resnet-18,densenet (name-depth; default: --net_type with --depth)")
    g.add_argument("--results", default=os.path.join("results", "evaluations.jsonl"),
                   help="every evaluation appends one JSON line here (finished runs are kept beside it)")
    g.add_argument("--summarize", default=None, metavar="RESULTS_JSONL",
                   help="print the table of every evaluation recorded in that file and exit")
    g.add_argument("--plot", default=None, metavar="PNG",
                   help="with --summarize: also draw test accuracy against ipc, per method and dataset, into this PNG")
    g.add_argument("--score", action="store_true",
                   help="DD-Ranking's IOR, HLR and LRS of each set (README): also trains networks on a random real "
                        "subset of the set's size, redrawn per run, and once per dataset, network and protocol on "
                        "the whole training set (kept in --results and reused)")
    g.add_argument("--labels", choices=("hard", "soft"), default="hard",
                   help="hard: train on the set's labels (the paper's protocol); soft: on the soft predictions of "
                        "the trained expert 0 of --pretrain_dir on each augmented batch (KL divergence at "
                        "--temperature, as SRe2L and RDED evaluate)")
    g.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                   help="--labels soft: distillation temperature T (loss T^2 KL; higher is softer; 0.1 to 100)")
    g.add_argument("--export", default=None, metavar="DIR",
                   help="write each set as an ImageFolder tree of PNGs plus a tensor file DD-Ranking's "
                        "compute_metrics takes, into DIR/<set>/, and exit (no training)")


SCRIPT_FLAGS = {"pretrain": _pretrain, "condense": _condense, "evaluate": _evaluate}


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as one line (a UserError) instead of the usage block."""

    def error(self, message):
        raise UserError(f"{message}; see python {self.prog} --help")


def build_parser(script):
    """The argparse parser of one script."""
    if script not in SCRIPTS:
        raise ValueError(f"unknown script {script}")
    prog = {"pretrain": "pretrain.py", "condense": "DANCE.py", "evaluate": "evaluate.py"}[script]
    p = Parser(prog=prog, description=f"DANCE: {script}", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(p)
    SCRIPT_FLAGS[script](p)
    return p


def load_settings(dataset):
    """The dataset's settings module (arguments/<dataset>.py)."""
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset '{dataset}'; choose one of: {', '.join(DATASETS)}")
    return importlib.import_module(f"arguments.{dataset}")


def _explicit(parser, argv):
    """The flags given on the command line (dest -> value), without defaults."""
    shadow = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = dict(dest=action.dest, default=argparse.SUPPRESS)
            if isinstance(action, argparse._StoreTrueAction):
                kwargs["action"] = "store_true"
            elif isinstance(action, argparse.BooleanOptionalAction):
                kwargs["action"] = argparse.BooleanOptionalAction
                shadow.add_argument(*[o for o in action.option_strings if not o.startswith("--no-")], **kwargs)
                continue
            else:
                kwargs.update(type=action.type, choices=action.choices, nargs=action.nargs)
            shadow.add_argument(*action.option_strings, **kwargs)
    return vars(shadow.parse_known_args(argv)[0])


def _resolve(script, a, explicit):
    """Settings derived from others, computed once here and never reassigned later."""
    if a.dsa_strategy is None:
        a.dsa_strategy = DATASETS[a.dataset].eval_dsa
    a.precision = resolve_precision(a.precision, select_device(a.device))  # recorded as run, never 'auto'
    if script == "condense" and a.eval_epochs is None:
        bound = a.batch_syn_max if a.decode_type == "bound" else 0
        a.eval_epochs = ipc_epochs(a.ipc, a.factor, a.nclass if a.dataset == "imagenet" else 10, bound)
    if script == "condense":
        if a.lr_img_per_ipc is not None and "lr_img" not in explicit:
            a.lr_img = a.lr_img_per_ipc * a.ipc
        if a.select_by is None:
            a.select_by = "val" if a.val_split else "test"
        if a.class_chunk is None:  # a CPU is memory-bound: one class at a time costs nothing there
            a.class_chunk = 1 if select_device(a.device).type == "cpu" else 0
        if a.align_scale is None:
            a.align_scale = DEFAULT_SCALES[a.align]
        if a.init is None:
            # the reference forces mix whenever factor > 1; an explicit --init wins here
            a.init = "mix" if a.factor > 1 else "random"
    if a.pretrain_dir is None:
        a.pretrain_dir = default_pretrain_dir(a)
    if script == "condense" and a.save_dir is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        a.save_dir = os.path.join("results", "condense", f"{dataset_tag(a)}_ipc{a.ipc}_f{a.factor}_"
                                                         f"{a.net_type}{a.depth}_{stamp}")


def _resumed(parser, explicit):
    """The settings of the run in --resume RUN_DIR (its args.json), with the harmless flags given now on top."""
    run = explicit["resume"]
    try:
        saved = read_json(os.path.join(run, "args.json"))
    except UserError:
        raise UserError(f"--resume {run}: its args.json (the run's settings) is unreadable; restore it from a copy (the "
                        f"same settings are in state.pt's 'args') or start a new run") from None
    if saved is None:
        raise UserError(f"--resume {run}: no args.json there; pass the folder of a DANCE.py run (its --save_dir)")
    defaults = vars(parser.parse_args([]))  # settings added since that run started keep their defaults
    unknown = sorted(set(saved) - set(defaults))
    if unknown:
        raise UserError(f"--resume {run}: its args.json sets '{unknown[0]}', which this DANCE.py does not know; "
                        f"resume it with the code that started it")
    if "save_dir" in explicit and os.path.abspath(explicit["save_dir"]) != os.path.abspath(run):
        raise UserError(f"--save_dir {explicit['save_dir']} with --resume {run}: a resumed run stays in its folder; "
                        f"drop --save_dir")
    settings = {**defaults, **saved}
    if settings["class_chunk"] is None:  # a run from before --class_chunk fed all classes at once
        settings["class_chunk"] = 0
    if settings["align_scale"] is None:  # a run from before --align aligned means, unscaled
        settings["align_scale"] = DEFAULT_SCALES[settings["align"]]
    changed = changed_settings(settings, {**settings, **explicit}, RESUMABLE)
    if changed:
        raise UserError(f"--resume: settings differ from the run's: {', '.join(changed)}; drop them or start a "
                        f"new run")
    ns = argparse.Namespace(**{**settings, **explicit, "save_dir": run})
    check_settings("condense", ns)
    return ns


def _dataset_layers(script, ns, explicit, fixed):
    """Apply the dataset's SETTINGS, REPRODUCE (with --reproduce) and its rules, under `fixed` keys."""
    settings = load_settings(ns.dataset)
    known = set(vars(ns))
    tables = [getattr(settings, "SETTINGS", {})] + ([getattr(settings, "REPRODUCE", {})] if ns.reproduce else [])
    layers = [table.get(part, {}) for table in tables for part in ("common", script)]
    for layer in layers:
        for key, value in layer.items():
            if key not in known:
                raise UserError(f"arguments/{ns.dataset}.py sets unknown key '{key}' for {script}.py; "
                                f"fix the settings file")
            if key not in explicit and key not in fixed:
                setattr(ns, key, value)
    rules = getattr(settings, "rules", None)
    if rules is not None:
        for key, value in rules(script, ns, ns.reproduce).items():
            if key not in explicit and key not in fixed:
                setattr(ns, key, value)


def config_view(script, a):
    """The resolved settings a person reads (--print_config): flags that do not apply are left out."""
    spec = DATASETS[a.dataset]
    drop = {"print_config"}
    drop |= {"nclass", "phase"} if a.dataset != "imagenet" else set()
    drop |= {"size"} if not spec.resizable else set()
    drop |= {"download"} if spec.fetch is None else set()
    drop |= {"data_dir"} if not spec.needs_root else set()
    drop |= {"dsa_strategy"} if a.eval_aug == "imagenet" else set()
    drop |= {"beta", "mix_p"} if a.mixup == "none" else set()
    if script == "condense":
        drop |= {"resume"} if a.resume is None else set()
        drop |= {"lr_img_per_ipc"} if a.lr_img_per_ipc is None else set()
        drop |= {"decode_type"} if a.factor == 1 else set()
        drop |= {"eval_runs", "select_by"} if not a.eval_every else set()
        drop |= {"lam_min", "lam_max", "iter_calib"} if not a.num_premodel else set()
        drop |= {k for k, align in ALIGNMENT_FLAGS.items() if align != a.align}
    if script == "evaluate":
        drop |= {k for k in ("summarize", "baseline", "data", "eval_nets", "plot", "export") if getattr(a, k) is None}
        drop |= {"temperature"} if a.labels == "hard" else set()
        drop |= {"ipc"} if a.baseline in (None, "full") else set()
        drop |= {"set_settings"} if not getattr(a, "set_settings", None) else set()
    view = {k: v for k, v in vars(a).items() if k not in drop}
    if "set_settings" in view:  # each set's own values, where they differ from the call's
        view["set_settings"] = {path: {k: v for k, v in own.items() if getattr(a, k) != v}
                                for path, own in a.set_settings.items()}
        view["set_settings"] = {path: own for path, own in view["set_settings"].items() if own} or None
        if view["set_settings"] is None:
            del view["set_settings"]
    if a.dataset == "folder":
        view["detected"] = peek_dataset(a.dataset, a.data_dir, size=a.size)
    return view


def _settings_of_set(args, path):
    """evaluate.py's settings as they apply to the set at `path`: the call's, under that set's own decoding,
    network and protocol (from its description) where no flag was given."""
    own = copy.copy(args)
    vars(own).update(args.set_settings.get(path, {}))
    return own


def _check_described(parser, argv, explicit, ns, fixed, per_set):
    """evaluate.py's checks, each problem named by its source: the call's own flags (and the dataset's settings
    file) first, with every value a set's description supplied put back to what it would be without one; then
    each described set, whose remaining problems can only be its description's."""
    call = parser.parse_args(argv)
    for key in IDENTITY + LOCATION:
        if key in fixed:
            setattr(call, key, fixed[key])
    _dataset_layers("evaluate", call, explicit, {})
    _resolve("evaluate", call, explicit)
    own = argparse.Namespace(**vars(ns))
    for key in {k for settings in per_set.values() for k in settings} | (set(fixed) - set(IDENTITY + LOCATION)):
        setattr(own, key, getattr(call, key))
    check_settings("evaluate", own)
    for path in per_set:
        try:
            check_settings("evaluate", _settings_of_set(ns, path))
        except UserError as e:
            raise UserError(f"{path}'s description ({os.path.splitext(path)[0]}.json): {e}") from None


def parse(script, argv=None):
    """Parse, resolve and check the settings of `script`; returns None after --print_config."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(script)
    ns = parser.parse_args(argv)
    explicit = _explicit(parser, argv)
    if script == "condense" and ns.resume is not None:
        ns = _resumed(parser, explicit)
    else:
        fixed, per_set = {}, {}
        if script == "evaluate" and ns.data and not ns.summarize:
            fixed, per_set, ns.data = described_settings(ns.data, explicit, parser)
            for key, value in fixed.items():
                setattr(ns, key, value)
        _dataset_layers(script, ns, explicit, fixed)
        check_explicit(script, ns, explicit)
        _resolve(script, ns, explicit)
        if script == "evaluate":
            ns.set_settings = per_set
            _check_described(parser, argv, explicit, ns, fixed, per_set)
        check_settings(script, ns)
    check_outputs(script, ns)
    if ns.print_config:
        print(json.dumps(config_view(script, ns), indent=2, sort_keys=True, default=str))
        return None
    return ns
