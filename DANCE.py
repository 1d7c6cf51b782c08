"""DANCE: Dual-View Distribution Alignment for Dataset Condensation (Zhang et al., IJCAI 2024).

Per iteration: pick an expert k and lam ~ U(lam_min, lam_max); the middle encoder has parameters
lam * init_k + (1 - lam) * trained_k. Inner-class view: align each class's real and synthetic features in the
middle encoder. Inter-class view (calibration): the trained expert must classify the synthetic images correctly.
Both are SGD steps on the synthetic pixels. The method's parts live in condense/ (encoders, losses, updates); the
run's folder, log, evaluations and checkpoints in condense/bookkeeping.py.

    python DANCE.py -d cifar10 --ipc 10 --factor 2 --reproduce
    python DANCE.py --resume results/condense/<run>      # continue a stopped run exactly
    torchrun --standalone --nproc_per_node 4 DANCE.py ... # classes split across 4 processes
"""
import torch

from arguments import parse
from arguments.values import (condensation_compile, dataset_tag, default_pretrain_dir, eval_protocol, holdout_split,
                              learned_frequencies, load_data, network_of, pretrain_command, split_off_holdout,
                              update_settings)
from condense.bookkeeping import Bookkeeping, PeriodicEvaluation, Schedule
from condense.encoders import ExpertBank, RandomEncoders
from condense.expert_folder import folder_identity
from condense.run_folder import Run
from condense.updates import SCHEDULES
from data.augment import DiffAug, normalize
from data.sampler import ClassSampler, require_per_class
from data.set_files import describe_run
from data.streams import IterationDraws
from data.synthetic import SyntheticSet
from models import check_network
from training.distributed import torchrun_session
from training.set_accuracy import eval_recipe
from utils import git_revision, precision_line, run_cli, seed_everything, select_device


def condensation_data(args, device):
    """(train, val, test, info): the training set less the held-out selection split (the images pretrain.py leaves
    out of expert training with the same flags), that split (None without --val_split) and the test split."""
    train, test, info = load_data(args)
    train, val = split_off_holdout(train, info, holdout_split(args))
    needed = {"random": args.ipc, "mix": args.ipc * args.factor ** 2, "noise": 0}[args.init]
    require_per_class(train.labels, info.nclass, needed, info.class_names,
                      f"--init {args.init} with --ipc {args.ipc}" + (f" --factor {args.factor}" if args.factor > 1
                                                                      else ""),
                      "lower --ipc (or --factor), or start from noise with --init noise")
    return train, None if val is None else val.to(device), test.to(device), info


def encoder_source(args, network, device, compile):
    """DANCE's expert bank (experts 0..num_premodel-1 of --pretrain_dir), or plain DM's random networks (0)."""
    if args.num_premodel == 0:
        return RandomEncoders(network, device, args.seed, compile)
    fresh = default_pretrain_dir(args)
    split_hint = (f"train experts with the same split: {pretrain_command(args, args.num_premodel, fresh)}, then "
                  f"pass --pretrain_dir {fresh}")
    return ExpertBank(args.pretrain_dir, args.num_premodel, network, device, pretrain_command(args, args.num_premodel),
                      holdout_split(args), split_hint, compile, args.seed, args.lam_min, args.lam_max)


def bookkeeping(args, world, device, info, network, val, test, compiling):
    """The run's folder (created now: every input was checked) and its books; `compiling`: the --compile decision
    (compile?, why)."""
    git, settings = git_revision(), dict(vars(args))
    run = Run(args.save_dir, settings, bool(args.resume), world, (info.nclass * args.ipc, info.channels, info.size,
                                                                   info.size))
    run.log(f"DANCE on {dataset_tag(args)}, {device}, git {git}" +
            (f", {world.size} processes, classes split in contiguous shares" if world.size > 1 else ""))
    if args.num_premodel == 0:
        run.log("num_premodel 0: plain DM (a fresh random network per iteration, no calibration)")
    run.log(f"{precision_line(args.precision, device)}; compile {compiling[1]}")
    recipe = eval_recipe(eval_protocol(args), args.eval_epochs, compiling[0])
    evaluation = PeriodicEvaluation(test, val, network, recipe, args.eval_runs, args.parallel, args.seed, args.select_by)
    experts = folder_identity(args.pretrain_dir) if args.num_premodel else None
    description = describe_run(settings, info.class_names, (info.channels, info.size, info.size), git, world.size,
                               experts)
    return Bookkeeping(run, world, info, Schedule(args.niter, args.eval_every, args.ckpt_every), evaluation,
                       description, args.iter_calib)


def main(args, on_iteration=None):
    """Condense; `on_iteration(k, synset, encoders)`, if given, runs after iteration k = 1..niter (for analyses)."""
    with torchrun_session(select_device(args.device)) as (world, device):
        return condense(args, world, device, on_iteration)


def condense(args, world, device, on_iteration=None):
    """The paper's algorithm on this process's share of the classes (all of them without torchrun); returns the
    share of the synthetic set."""
    # Set up: the real data, this rank's classes, the network and the encoders; every input is checked here.
    seed_everything(args.seed)
    train, val, test, info = condensation_data(args, device)
    first, end = world.class_range(info.nclass, args.class_chunk if args.update == "joint" else 1)
    sampler = ClassSampler(train, info.nclass, args.batch_real, device, seed=args.seed, classes=range(first, end))
    network = network_of(args, info)
    check_network(network)
    compile, why = condensation_compile(args, device, network, info, len(test))
    if args.compile == "auto":  # recorded as decided (args.json): --resume keeps the path, whatever its --niter
        args.compile = compile
    elif args.resume and compile == args.compile:  # no flag was given now: say where the decision comes from
        why = f"{'on' if compile else 'off'} (as the run decided when it started, its args.json)"
    encoders = encoder_source(args, network, device, compile)

    # The synthetic set of this rank's classes and its one optimiser; the run starts (or resumes) it.
    synset = SyntheticSet(end - first, args.ipc, info.channels, info.size, args.factor, args.decode_type, device,
                          first_class=first, seed=args.seed)
    optimizer = torch.optim.SGD([synset.data], lr=args.lr_img, momentum=args.mom_img)
    adversary = learned_frequencies(args, network, device, world)  # NCFM's sampling network, with --cf_sampling_net
    books = bookkeeping(args, world, device, info, network, val, test, (compile, why))
    if not books.start(synset, optimizer, sampler, args.init, {"frequency_network": adversary} if adversary else None):
        return synset
    dsa, draws = DiffAug(args.aug_type, batch=True), IterationDraws(args.seed, info.nclass, device)
    align, calibrate = SCHEDULES[args.update]
    settings = update_settings(args, adversary)

    def aug(x, groups):
        """Normalise, then DSA with one siamese draw per class for the real and synthetic images together."""
        return dsa(normalize(x, info.mean, info.std), groups, draws)

    with books:  # SIGINT/SIGTERM stop the loop after the iteration in progress, its state saved
        for k in books.remaining():
            draws.start(k)
            encoder, expert = encoders.pick(k)  # expert k and lam: the middle encoder (plain DM: a random one)
            with torch.no_grad():
                synset.data.clamp_(0, 1)
            inner = align(synset, sampler, encoder, aug, optimizer, settings, draws)  # inner-class view
            # inter-class view: calibration with the trained expert
            inter = 0.0 if expert is None else calibrate(synset, expert, aug, optimizer, settings, draws)
            if on_iteration is not None:
                on_iteration(k, synset, encoders)
            books.after_iteration(k, inner, inter, calibrated=expert is not None)
    books.finish()
    return synset


if __name__ == "__main__":
    run_cli(main, lambda: parse("condense"))
