"""DANCE: Dual-View Distribution Alignment for Dataset Condensation (IJCAI 2024).

Per iteration: pick an expert k and lam ~ U(lam_min, lam_max); the middle encoder has parameters
lam * init_k + (1 - lam) * trained_k. Inner-class view: match each class's mean feature of real and
synthetic images in the middle encoder. Inter-class view (calibration): the trained expert must
classify the synthetic images correctly. Both are SGD steps on the synthetic pixels.

    python DANCE.py -d cifar10 --ipc 10 --factor 2 --reproduce
    python DANCE.py --resume results/condense/<run>      # continue a stopped run exactly
    torchrun --standalone --nproc_per_node 4 DANCE.py ... # classes split across 4 processes
"""
import os
import signal
import statistics
import time

import torch
import torch.nn.functional as F
from tqdm import tqdm

from arguments import dataset_tag, default_pretrain_dir, describe_split, parse, pretrain_command
from arguments.checks import check_data_fit
from data.augment import DiffAug, normalize
from data.datasets import holdout, load_dataset
from data.sampler import ClassSampler, require_per_class
from data.streams import IterationDraws, host_uniform, key
from data.synthetic import SyntheticSet
from training.distributed import end_world, start_world
from models import check_network, compiled, make_network, network_config, network_difference, reinitialize_
from reports.plots import RUN_PLOT, plot_run
from reports.records import summary
from condense.run_folder import Run, StopSignals, set_description
from training.set_accuracy import eval_recipe, evaluate_set
from training.recipe import autocast
from utils import (UserError, check_state_dict, expert_path, git_revision, preserved_rng, read_json, run_cli,
                   safe_load, save_grid, seed_everything, select_device)

LOG_EVERY = 20


class ExpertBank:
    """Every expert's initial and trained weights, loaded ONCE onto the device.

    `middle(k, lam)` writes lam * init + (1 - lam) * trained into one reusable module (parameters;
    buffers are the trained expert's). `expert(k)` is the trained network. No grads anywhere. With `compile`
    both are handed out through torch.compile (the same parameters, so the in-place writes reach them).
    """

    def __init__(self, folder, count, network, device, pretrain_hint, split=None, split_hint="", compile=False):
        missing = [p for i in range(count) for p in (expert_path(folder, i, "init"), expert_path(folder, i, "trained"))
                   if not os.path.isfile(p)]
        if missing:
            raise UserError(f"expert checkpoint {missing[0]} is missing; train the experts first: {pretrain_hint}")
        manifest = read_json(os.path.join(folder, "manifest.json"))
        if manifest is not None:
            difference = network_difference(manifest.get("network", {}), network)
            if difference:
                raise UserError(f"experts in {folder} were trained with another network ({difference}, experts vs "
                                f"this run); match that flag, or pass the --pretrain_dir of matching experts")
        if split is not None and (manifest or {}).get("holdout") != split:
            raise UserError(f"--val_split {split['fraction']:g} holds out images to choose data_best.pt, but the "
                            f"experts in {folder} were trained on {describe_split((manifest or {}).get('holdout'))}, "
                            f"so selection would not be independent; {split_hint}")
        self.experts, self.inits = [], []
        for i in range(count):
            trained = self._frozen(network, device)
            init = {}
            for stage, target in (("trained", trained), ("init", None)):
                path = expert_path(folder, i, stage)
                state = safe_load(path, "expert checkpoint")
                check_state_dict(trained, state, path)
                if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
                    raise UserError(f"{path} holds NaN or Inf weights (its training diverged); retrain the experts "
                                    f"with a lower --lr or --weight_decay: {pretrain_hint}")
                if target is not None:
                    target.load_state_dict(state)
                else:
                    init = {k: v.to(device) for k, v in state.items()}
            self.experts.append(trained)
            self.inits.append([init[name] for name, _ in trained.named_parameters()])
        self.encoder = self._frozen(network, device)
        self._params = list(self.encoder.parameters())
        self._buffers = list(self.encoder.buffers())
        self._run_encoder = compiled(self.encoder, compile)
        self._run_experts = [compiled(e, compile) for e in self.experts]

    @staticmethod
    def _frozen(network, device):
        net = make_network(network, device)
        net.requires_grad_(False)
        return net

    def __len__(self):
        return len(self.experts)

    def expert(self, k):
        """The trained expert k."""
        return self._run_experts[k]

    @torch.no_grad()
    def middle(self, k, lam):
        """The middle encoder lam * init_k + (1 - lam) * trained_k, written in place (fused over all tensors)."""
        trained = self.experts[k]
        copy_all(self._params, list(trained.parameters()))
        torch._foreach_lerp_(self._params, self.inits[k], lam)
        # NOTE(reference): buffers follow the trained expert (the reference leaves random-init ones)
        copy_all(self._buffers, list(trained.buffers()))
        return self._run_encoder


def copy_all(targets, sources):
    """targets[i].copy_(sources[i]) for every i, as one fused call where torch has it."""
    if not targets:
        return
    if hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(targets, sources)
    else:
        for target, source in zip(targets, sources):
            target.copy_(source)


def class_means(features, groups, nclass):
    """Mean feature of each class: (nclass, D) from features (N, D) and class ids (N,)."""
    sums = features.new_zeros(nclass, features.shape[1]).index_add_(0, groups, features)
    counts = features.new_zeros(nclass).index_add_(0, groups, features.new_ones(len(groups)))
    return sums / counts.clamp(min=1)[:, None]


def inner_class_loss(feat_real, feat_syn, groups_real=None, groups_syn=None, nclass=1):
    """Sum over classes of ||mean phi(syn_c) - mean phi(real_c)||^2 (one class when no groups)."""
    if groups_real is None:
        return ((feat_syn.mean(0) - feat_real.mean(0)) ** 2).sum()
    diff = class_means(feat_syn, groups_syn, nclass) - class_means(feat_real, groups_real, nclass)
    return (diff ** 2).sum()


def calibration_loss(logits, labels):
    """The expert's cross-entropy, averaged within each class and summed over classes."""
    nclass = logits.shape[1]
    ce = F.cross_entropy(logits, labels, reduction="none")
    sums = ce.new_zeros(nclass).index_add_(0, labels, ce)
    counts = ce.new_zeros(nclass).index_add_(0, labels, torch.ones_like(ce))
    return (sums / counts.clamp(min=1)).sum()


def features(net, x, precision="fp32"):
    """Penultimate features of `net` (the vector feeding its classifier), in fp32 for the loss."""
    with autocast(x.device, precision):
        return net(x, return_features=True)[1].float()


def logits(net, x, precision="fp32"):
    """The classifier's output of `net`, in fp32 for the loss."""
    with autocast(x.device, precision):
        return net(x).float()


def step(optimizer, loss):
    """One SGD step on the synthetic pixels; returns the loss as a detached tensor."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def per_class_update(synset, sampler, encoder, expert, aug, optimizer, args, draws=None):
    """Reference schedule: one step per class per view, one shared momentum buffer (REFERENCE 6.2).

    The classes are this process's (synset's and sampler's); `aug(x, groups)` gets each sample's global class id.
    """
    inner, inter, precision = 0.0, 0.0, getattr(args, "precision", "fp32")
    for c in range(synset.nclass):
        real, syn = sampler.sample(c), synset.sample(c, args.batch_syn_max, draws)
        x = torch.cat([real, syn])
        z = aug(x, groups=x.new_full((len(x),), synset.first_class + c, dtype=torch.long))  # one siamese draw
        with torch.no_grad():
            feat_real = features(encoder, z[:len(real)], precision)
        inner += step(optimizer, inner_class_loss(feat_real, features(encoder, z[len(real):], precision)))
    for _ in range(args.iter_calib if expert is not None else 0):
        for c in range(synset.nclass):
            syn = synset.sample(c, args.batch_syn_max, draws)
            labels = torch.full((len(syn),), synset.first_class + c, device=syn.device)
            inter += step(optimizer, calibration_loss(logits(expert, aug(syn, groups=labels), precision), labels))
    return inner, inter


def step_in_chunks(optimizer, z, sizes, loss_of):
    """One SGD step on the sum over the parts of z (split by `sizes`) of loss_of(i, part).

    Each part's network pass is backpropagated to the part at once, so one chunk's activations live at a
    time; z's gradient then goes once through the graph that made z (decoding, augmentation).
    """
    optimizer.zero_grad(set_to_none=True)
    parts = [part.detach().requires_grad_() for part in z.split(sizes)]
    total = 0.0
    for i, part in enumerate(parts):
        loss = loss_of(i, part)
        loss.backward()
        total = total + loss.detach()
    z.backward(torch.cat([part.grad for part in parts]))
    optimizer.step()
    return total


def class_chunks(nclass, chunk):
    """(first, end) class ranges of `chunk` classes each (0: one range of all)."""
    chunk = chunk or nclass
    return [(c, min(c + chunk, nclass)) for c in range(0, nclass, chunk)]


def joint_update(synset, sampler, encoder, expert, aug, optimizer, args, draws=None):
    """One step per view over all classes (this process's); loss = sum of per-class losses, DSA drawn per class.

    The networks see `args.class_chunk` classes at a time (0: all): the same loss and step, up to the order
    in which float gradients are summed, with one chunk's activations in memory instead of every class's.
    With keyed `draws` and a chunk of one class, every class's step is computed alone from its own draws, so
    it is the same bits whichever process owns the class.
    """
    precision, chunks = getattr(args, "precision", "fp32"), class_chunks(synset.nclass, getattr(args, "class_chunk", 0))
    real, groups_real = sampler.sample_all()
    syn = synset.decoded_per_class(args.batch_syn_max, draws=draws)
    nclass, m = syn.shape[:2]
    groups_syn = torch.arange(nclass, device=syn.device).repeat_interleave(m)
    labels_syn = groups_syn + synset.first_class  # the expert's classes are the dataset's
    z = aug(torch.cat([real, syn.flatten(0, 1)]), groups=torch.cat([groups_real, groups_syn]) + synset.first_class)
    z_real, z_syn = z[:len(real)].split([sum(sampler.sizes[a:b]) for a, b in chunks]), z[len(real):]
    with torch.no_grad():
        mean_real = class_means(torch.cat([features(encoder, part, precision) for part in z_real]), groups_real,
                                nclass)

    sizes = [(b - a) * m for a, b in chunks]

    def inner_loss(i, part):
        a, b = chunks[i]
        feat_syn = features(encoder, part, precision)
        return ((class_means(feat_syn, groups_syn[a * m:b * m] - a, b - a) - mean_real[a:b]) ** 2).sum()

    def calibration(i, part):
        a, b = chunks[i]
        return calibration_loss(logits(expert, part, precision), labels_syn[a * m:b * m])

    inner, inter = step_in_chunks(optimizer, z_syn, sizes, inner_loss), 0.0
    for _ in range(args.iter_calib if expert is not None else 0):
        z_syn = aug(synset.decoded_per_class(args.batch_syn_max, draws=draws).flatten(0, 1), groups=labels_syn)
        inter += step_in_chunks(optimizer, z_syn, sizes, calibration)
    return inner, inter


def load_data(args, device):
    """(train, val, test, info): the training set (less the held-out selection split, if any) and the rest."""
    train, test, info = load_dataset(args.dataset, args.data_dir, download=args.download, size=args.size,
                                     nclass=args.nclass, phase=args.phase)
    check_data_fit(args, info)
    val = None
    if args.val_split:  # the same seeded split pretrain.py leaves out of expert training
        train, val = holdout(train, info.nclass, args.val_split, seed=args.seed, class_names=info.class_names)
        val = val.to(device)
    needed = {"random": args.ipc, "mix": args.ipc * args.factor ** 2, "noise": 0}[args.init]
    require_per_class(train.labels, info.nclass, needed, info.class_names,
                      f"--init {args.init} with --ipc {args.ipc}" + (f" --factor {args.factor}" if args.factor > 1
                                                                      else ""),
                      "lower --ipc (or --factor), or start from noise with --init noise")
    return train, val, test.to(device), info


def save_set_grid(synset, info, path, per_class=10, classes=20):
    """The stored images as a PNG, one row per class (its first `per_class` images) labelled with the class name,
    for the first `classes` classes."""
    per = min(synset.ipc, per_class)
    rows = synset.data.detach()[:synset.nclass * synset.ipc].view(synset.nclass, synset.ipc, *synset.data.shape[1:])
    names = list(info.class_names or range(synset.nclass))[:classes]
    save_grid(rows[:classes, :per].flatten(0, 1), path, nrow=per, max_images=per * classes, labels=names)


def pick_encoder(bank, args, dm_net, network, iteration, run_dm_net=None):
    """Iteration t's (middle encoder, trained expert): expert k and lam ~ U(lam_min, lam_max), keyed by (seed, t) so
    every process picks the same; plain DM without experts: `dm_net` with fresh random weights drawn in place
    (no calibration), run through `run_dm_net` (its compiled twin) when given."""
    if bank is None:
        with preserved_rng():
            torch.manual_seed(key(args.seed, "network", iteration) >> 1)
            if not reinitialize_(dm_net):  # spectral norm draws vectors only a new network draws
                dm_net.load_state_dict(make_network(network, "cpu").state_dict())
        return run_dm_net or dm_net, None
    k = min(int(host_uniform(args.seed, "encoder", iteration, 0) * len(bank)), len(bank) - 1)
    lam = args.lam_min + (args.lam_max - args.lam_min) * host_uniform(args.seed, "encoder", iteration, 1)
    return bank.middle(k, lam), bank.expert(k)


def whole_set(synset, world, info, args, device):
    """The set of every class: this process's under one process, else every rank's share gathered."""
    if world.size == 1:
        return synset
    data = torch.cat(world.gather(synset.data.detach().cpu()))
    return SyntheticSet(info.nclass, args.ipc, info.channels, info.size, args.factor, args.decode_type, device,
                        data=data)


def total_losses(world, inner, inter):
    """The losses summed over every rank's classes, read on the host (at log steps only)."""
    return [sum(parts) for parts in zip(*world.gather((float(inner), float(inter))))]


def main(args, on_iteration=None):
    """Condense; `on_iteration(k, synset, bank)`, if given, runs after iteration k = 1..niter (for analyses).

    Under torchrun each rank condenses a contiguous share of the classes (data/streams.py keeps every class's
    draws the same in any share) and rank 0 writes the files.
    """
    world, device = start_world(select_device(args.device))
    try:
        synset = condense(args, world, device, on_iteration)
    except BaseException:
        end_world(world, clean=False)  # torchrun then stops the other ranks
        raise
    end_world(world)
    return synset


def condense(args, world, device, on_iteration):
    # Set up: device, seed, data and network, every input checked before anything is written.
    seed_everything(args.seed)
    train, val, test, info = load_data(args, device)
    first, end = world.class_range(info.nclass, args.class_chunk if args.update == "joint" else 1)
    sampler = ClassSampler(train, info.nclass, args.batch_real, device, seed=args.seed, classes=range(first, end))
    network = network_config(args, info)
    check_network(network)

    # Experts: every (init, trained) pair in memory; none means plain DM.
    bank = None
    if args.num_premodel > 0:
        split = {"fraction": args.val_split, "seed": args.seed} if args.val_split else None
        fresh = default_pretrain_dir(args)
        split_hint = (f"train experts with the same split: {pretrain_command(args, args.num_premodel, fresh)}, then "
                      f"pass --pretrain_dir {fresh}")
        bank = ExpertBank(args.pretrain_dir, args.num_premodel, network, device,
                          pretrain_command(args, args.num_premodel), split, split_hint, args.compile)

    # The synthetic set (this rank's classes, allocated before the run folder exists), then the run: folder,
    # log and checkpoints.
    def share(data=None):
        return SyntheticSet(end - first, args.ipc, info.channels, info.size, args.factor, args.decode_type, device,
                            data=data, first_class=first, seed=args.seed)

    rows = slice(first * args.ipc, end * args.ipc)
    synset = share()
    run = Run(args, world)
    log = run.log
    log(f"DANCE on {dataset_tag(args)}, {device}, git {git_revision()}" +
        (f", {world.size} processes, classes split in contiguous shares" if world.size > 1 else ""))
    if bank is None:
        log("num_premodel 0: plain DM (a fresh random network per iteration, no calibration)")
    if run.state is not None:  # a resumed run continues from its saved set
        synset = share(run.state["data"][rows])
    else:
        synset.init(args.init, sampler)
        initial = whole_set(synset, world, info, args, device)
        if world.main:
            initial.save(run.path("data_0.pt"), set_description(args, info, 0))
            save_set_grid(initial, info, run.path("init.png"))
    optimizer = torch.optim.SGD([synset.data], lr=args.lr_img, momentum=args.mom_img)
    dsa = DiffAug(args.aug_type, batch=True)
    draws = IterationDraws(args.seed, info.nclass, device)

    def aug(x, groups):
        return dsa(normalize(x, info.mean, info.std), groups, draws)

    update = per_class_update if args.update == "per_class" else joint_update
    recipe = eval_recipe(args, args.eval_epochs)
    done, best = run.restore(optimizer, sampler, rows)
    if run.finished:
        log(f"{args.save_dir} already finished its {args.niter} iterations; pass a larger --niter to continue it")
        return synset

    def evaluate_and_save(k):
        """Save the set after iteration k; evaluate it and keep data_best.pt by the selection score."""
        nonlocal best
        description = set_description(args, info, k)
        whole = whole_set(synset, world, info, args, device)
        if world.main:
            whole.save(run.path(f"data_{k}.pt"), description)
            save_set_grid(whole, info, run.path(f"img{k}.png"))
        if not args.eval_every:
            return
        split_name = "held-out" if val is not None else "test"
        log(f"iteration {k}: evaluating the set ({args.eval_runs} network(s), {recipe.epochs} epochs, selection on "
            f"the {split_name} split)")
        images, labels = whole.decoded()
        with preserved_rng():  # evaluation never changes the condensation's random streams
            result = evaluate_set(images, labels, test, info, network, recipe, device, args.eval_runs,
                                  seed=args.seed + k, log=lambda m: None, val=val, parallel=args.parallel,
                                  world=world)
        if result["diverged"]:
            log(f"iteration {k}: warning: evaluation run(s) {result['diverged']} diverged (NaN or Inf loss); their "
                f"accuracy is chance: lower --lr")
        score = statistics.mean(result["val"]) if val is not None else result["mean"]
        log(f"iteration {k}: {args.select_by} acc {score:.2f}; test {summary(result)} ({result['seconds']:.0f} s)")
        log.metrics(iter=k, select_acc=score, test_acc=result["mean"], test_std=result["std"],
                    test_best_check=result["best_mean"])
        if score > best:
            best = score
            if world.main:
                whole.save(run.path("data_best.pt"), {**description, "selected_by": args.select_by})
            log(f"iteration {k}: new best {args.select_by} acc {best:.2f}, saved data_best.pt")

    # The condensation loop (REFERENCE 6.2); SIGINT/SIGTERM stop it at the end of an iteration (on every rank
    # together). The host reads the device only at log, evaluation and checkpoint steps (the finite check
    # included).
    with preserved_rng():  # plain DM redraws this network in place each iteration, as a new one would be drawn
        dm_net = make_network(network, device).requires_grad_(False) if bank is None else None
    run_dm_net = compiled(dm_net, args.compile and dm_net is not None)
    start = time.time()
    with StopSignals() as stop, tqdm(total=args.niter, initial=done, desc="condense", unit="it", dynamic_ncols=True,
                                     disable=None if world.main else True) as bar:
        if world.main:
            log.echo = bar.write
        for k in range(done + 1, args.niter + 1):
            draws.start(k)
            encoder, expert = pick_encoder(bank, args, dm_net, network, k, run_dm_net)
            with torch.no_grad():
                synset.data.clamp_(0, 1)
            inner, inter = update(synset, sampler, encoder, expert, aug, optimizer, args, draws)
            run.watch_finite(synset.data, inner + inter, k)
            if on_iteration is not None:
                on_iteration(k, synset, bank)
            bar.update()
            stopping = world.any(stop.signum is not None)
            log_step = k % LOG_EVERY == 0 or k == args.niter or k == done + 1
            if log_step or stopping or (args.eval_every and k % args.eval_every == 0) or \
                    (args.ckpt_every and k % args.ckpt_every == 0):
                run.check_finite()
            if log_step:
                calib = args.iter_calib if expert is not None else 0
                inner, inter = total_losses(world, inner, inter)
                inner, inter = inner / info.nclass, inter / info.nclass / max(calib, 1)
                per_it = (time.time() - start) / (k - done)
                bar.set_postfix(inner=f"{inner:.4f}", calib=f"{inter:.4f}")
                log(f"iteration {k}/{args.niter}: inner loss {inner:.4f}, calibration loss {inter:.4f} "
                    f"({per_it:.3f} s/iter, {per_it * (args.niter - k) / 60:.1f} min left)")
                log.metrics(iter=k, inner=inner, calibration=inter, sec_per_iter=per_it)
            if args.eval_every and k % args.eval_every == 0:
                evaluate_and_save(k)
            if stopping or (args.ckpt_every and k % args.ckpt_every == 0):
                run.checkpoint(k, synset, optimizer, sampler, best)  # --resume continues from here exactly
            if stopping:
                run.stop(stop.signum or signal.SIGTERM, k)
    log.echo = print if world.main else log.echo
    run.check_finite()
    with torch.no_grad():
        synset.data.clamp_(0, 1)  # the final set as saved
    if not (args.eval_every and args.niter % args.eval_every == 0) or args.niter == 0:
        evaluate_and_save(args.niter)  # the final set is always saved
    run.checkpoint(args.niter, synset, optimizer, sampler, best, final=True)
    if world.main:
        plot_run(args.save_dir)
    log(f"done: {args.niter - done} iterations in {time.time() - start:.0f} s; results in {args.save_dir} "
        f"(the final set: data_{args.niter}.pt; losses and accuracies drawn in {RUN_PLOT})")
    return synset


if __name__ == "__main__":
    run_cli(main, lambda: parse("condense"))
