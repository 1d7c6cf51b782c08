"""The parsed flags turned into the explicit values library code takes: the data, the network, the recipes, the
update settings, and the names and commands derived from them. Only the scripts call these; below them no function
sees the parsed flags.
"""
import functools
import os
import shlex

from arguments.checks import check_data_fit
from condense.expert_folder import read_manifest
from condense.frequency_network import LearnedFrequencies
from condense.losses import ALIGNMENTS, scaled
from condense.updates import UpdateSettings
from data.datasets import DATASETS, holdout, load_dataset
from data.set_files import PROTOCOL
from models import network_config, network_probe
from models.compilation import condensation_work, decide, training_work
from training.recipe import Recipe


def ipc_epochs(ipc, factor, nclass, bound=0):
    """Evaluation epochs of the ImageNet family (the official code's `ipc_epoch`)."""
    n = ipc * max(factor, 1) ** 2
    if bound > 0:
        n = min(n, bound)
    for limit, epochs in ((1, 3000), (10, 2000), (50, 1500), (200, 1000), (500, 500)):
        if n <= limit:
            break
    else:
        epochs = 300
    if nclass >= 100:  # the official code's 100-class schedule, also for every class (ImageNet-1K)
        epochs = int(epochs * 2 / 3) // 100 * 100
    return epochs


def dataset_tag(args):
    """Short name of the data a run uses, for default folder names and records."""
    if args.dataset == "imagenet":
        return f"imagenet{args.nclass}_p{args.phase}"
    if args.dataset == "folder":
        return f"folder_{os.path.basename(os.path.normpath(args.data_dir))}_{args.size or 32}"
    return args.dataset


def default_pretrain_dir(args):
    """Where pretrain.py writes experts and DANCE.py reads them for the same data, model and held-out split."""
    width = "" if args.width == 1 else f"_w{args.width:g}"
    split = f"_val{args.val_split:g}_s{args.seed}" if getattr(args, "val_split", 0) else ""
    return os.path.join("results", "experts", f"{dataset_tag(args)}_{args.net_type}{args.depth}_"
                                              f"{args.norm_type}{width}{split}")


def expert_flags(args):
    """The flags that decide which experts fit a run: its data and its network."""
    flags = ["-d", args.dataset]
    if DATASETS[args.dataset].needs_root:
        flags += ["--data_dir", args.data_dir]
    if args.dataset == "imagenet":
        flags += ["--nclass", str(args.nclass), "--phase", str(args.phase)]
    if args.size is not None:
        flags += ["--size", str(args.size)]
    return flags + ["--net_type", args.net_type, "--depth", str(args.depth), "--width", f"{args.width:g}",
                    "--norm_type", args.norm_type]


def dance_command(args, experts, default_experts):
    """The DANCE.py command that condenses with the `experts` experts pretrain.py (flags `args`) trained; it names
    --num_premodel only when fewer than DANCE.py's default (`default_experts`) are there."""
    flags = expert_flags(args) + (["--reproduce"] if args.reproduce else [])
    if getattr(args, "val_split", 0):
        flags += ["--val_split", f"{args.val_split:g}", "--seed", str(args.seed)]
    if experts < default_experts:
        flags += ["--num_premodel", str(experts)]
    flags += ["--pretrain_dir", args.pretrain_dir]
    return "python DANCE.py " + " ".join(shlex.quote(f) for f in flags)


def pretrain_command(args, amount, folder=None):
    """The pretrain.py command that trains the experts `args` needs, with every flag that decides them."""
    folder = folder or args.pretrain_dir
    flags = expert_flags(args)
    if args.reproduce:
        flags.append("--reproduce")
    manifest = read_manifest(folder)
    if manifest and "epochs" in manifest:  # more experts join the folder's, trained alike
        flags += ["--pretrain_epochs", str(manifest["epochs"])]
    flags += ["--pretrain_amount", str(amount)]
    if getattr(args, "val_split", 0):
        flags += ["--val_split", f"{args.val_split:g}", "--seed", str(args.seed)]
    flags += ["--pretrain_dir", folder]
    return "python pretrain.py " + " ".join(shlex.quote(f) for f in flags)


def load_data(args):
    """(train, test, info) of the dataset the flags name, checked against the flags that depend on its files."""
    train, test, info = load_dataset(args.dataset, args.data_dir, download=args.download, size=args.size,
                                     nclass=args.nclass, phase=args.phase)
    check_data_fit(args, info)
    return train, test, info


def holdout_split(args):
    """The held-out selection split ({"fraction", "seed"}, as expert manifests record it), or None without one."""
    return {"fraction": args.val_split, "seed": args.seed} if args.val_split else None


def split_off_holdout(train, info, split):
    """(rest, held-out) of the training set for a `holdout_split`; (train, None) without one. pretrain.py trains
    the experts on the rest, DANCE.py condenses the rest and selects on the held-out images."""
    if split is None:
        return train, None
    return holdout(train, info.nclass, split["fraction"], seed=split["seed"], class_names=info.class_names)


def network_of(args, info):
    """The network the flags describe, for the loaded data."""
    return network_config(args.net_type, args.depth, args.width, args.norm_type, info)


def eval_protocol(args):
    """The evaluation protocol the flags give (architecture and recipe), as a set's description records it."""
    return {key: getattr(args, key) for key in PROTOCOL}


def expert_recipe(args, compile=False):
    """Expert training: per-sample DSA of aug_type (cutout dropped under CutMix), batch batch_real; `compile`: the
    decision of `expert_compile`."""
    ops = [op for op in args.aug_type.split("_") if not (op == "cutout" and args.mixup == "cut")]
    return Recipe(epochs=args.pretrain_epochs, lr=args.lr, momentum=args.momentum,
                  weight_decay=args.weight_decay, batch_size=args.batch_real, dsa_strategy="_".join(ops),
                  mix_p=args.mix_p if args.mixup == "cut" else 0.0, beta=args.beta, eval_interval=0,
                  precision=args.precision, compile=compile)


def condensation_compile(args, device, network, info, test_images):
    """(compile?, why) for a condensation run under --compile: its encoders and experts over all --niter iterations
    and its periodic evaluations' networks are decided together (auto: both compiled when either pays). Counted over
    the whole run (not a torchrun rank's share), so every rank and any process count decide alike; a new run records
    the outcome in its settings (DANCE.py), so --resume keeps the path the run started on."""
    works = [condensation_work(network, args.niter, info.nclass, args.batch_real, args.ipc * args.factor ** 2,
                               args.iter_calib, args.num_premodel > 0)]
    evaluations = args.niter // args.eval_every if args.eval_every else 0
    if evaluations:
        works.append(evaluation_work(network, args.eval_runs * evaluations, info.nclass * args.ipc * args.factor ** 2,
                                     args.eval_epochs, args.batch_size, args.eval_interval, test_images))
    return decide(args.compile, device, *works)


def evaluation_work(network, trainings, images, epochs, batch_size, eval_interval, test_images):
    """The evaluation networks' Workload: `trainings` networks each trained `epochs` epochs on `images`, tested at
    every `eval_interval` epochs and at the end."""
    tests = (epochs // eval_interval if eval_interval else 0) + 1
    return training_work("evaluation networks", network, trainings, epochs, images, batch_size, tests, test_images)


def evaluation_compile(mode, device, network, trainings, images, epochs, batch_size, eval_interval, test_images):
    """(compile the evaluation networks?, why) for `trainings` networks each trained `epochs` epochs on `images`."""
    return decide(mode, device, evaluation_work(network, trainings, images, epochs, batch_size, eval_interval,
                                                test_images))


def expert_compile(args, device, network, train_images, test_images):
    """(compile the experts' training?, why): all --pretrain_amount experts trained --pretrain_epochs on
    `train_images`, however many are left or this rank trains, so a resumed or torchrun job decides as one run."""
    return decide(args.compile, device, training_work("expert training", network, args.pretrain_amount,
                                                      args.pretrain_epochs, train_images, args.batch_real, 1,
                                                      test_images))


def alignment(args, sampler=None):
    """The inner-class discrepancy the flags pick, with its settings bound and scaled by --align_scale; `sampler`:
    cf's learned frequencies (--cf_sampling_net)."""
    own = {"mmd": dict(bandwidths=tuple(args.mmd_bandwidths)),
           "cf": dict(alpha=args.cf_alpha, beta=args.cf_beta, frequencies=args.cf_frequencies, sampler=sampler),
           "moments": dict(mean_weight=args.moments_weights[0], cov_weight=args.moments_weights[1])}.get(args.align, {})
    align = functools.partial(ALIGNMENTS[args.align], **own) if own else ALIGNMENTS[args.align]
    return scaled(align, args.align_scale)


def learned_frequencies(args, network, device, world):
    """NCFM's sampling network and its optimiser for --cf_sampling_net, else None."""
    if not args.cf_sampling_net:
        return None
    return LearnedFrequencies(network_probe(network).feature_dim, args.cf_frequencies, device, args.cf_sampling_lr,
                              args.mom_img, args.seed, world)


def update_settings(args, adversary=None):
    """What the condensation steps take from the flags; `adversary`: cf's learned frequencies, if any."""
    return UpdateSettings(batch_syn_max=args.batch_syn_max, iter_calib=args.iter_calib, class_chunk=args.class_chunk,
                          precision=args.precision, align=alignment(args, adversary), adversary=adversary)
