"""DANCE: Dual-View Distribution Alignment for Dataset Condensation (IJCAI 2024).

Per iteration: pick an expert k and lam ~ U(lam_min, lam_max); the middle encoder has parameters
lam * init_k + (1 - lam) * trained_k. Inner-class view: match each class's mean feature of real and
synthetic images in the middle encoder. Inter-class view (calibration): the trained expert must
classify the synthetic images correctly. Both are SGD steps on the synthetic pixels.

    python DANCE.py -d cifar10 --ipc 10 --factor 2 --reproduce
    python DANCE.py --resume results/condense/<run>      # continue a stopped run exactly
"""
import glob
import os
import random
import signal
import statistics
import time

import torch
import torch.nn.functional as F

from arguments import dataset_tag, parse, settings_diff
from data.augment import DiffAug, normalize
from data.datasets import holdout, load_dataset
from data.sampler import ClassSampler
from data.synthetic import SyntheticSet
from evaluate import eval_recipe, evaluate_set, summary
from utils import (Logger, RunStopped, StopSignals, UserError, atomic_save, atomic_write_json, check_state_dict,
                   expert_path, git_revision, make_network, network_config, preserved_rng, read_json,
                   remove_stale_temps, rng_state, run_cli, safe_load, save_grid, seed_everything, select_device,
                   set_rng_state)

STATE = "state.pt"
STATE_KEYS = {"next_iter", "done", "data", "optimizer", "sampler", "best", "rng", "args"}


class ExpertBank:
    """Every expert's initial and trained weights, loaded ONCE onto the device.

    `middle(k, lam)` writes lam * init + (1 - lam) * trained into one reusable module (parameters;
    buffers are the trained expert's). `expert(k)` is the trained network. No grads anywhere.
    """

    def __init__(self, folder, count, network, device, pretrain_hint):
        missing = [p for i in range(count) for p in (expert_path(folder, i, "init"), expert_path(folder, i, "trained"))
                   if not os.path.isfile(p)]
        if missing:
            raise UserError(f"expert checkpoint {missing[0]} is missing; train the experts first: {pretrain_hint}")
        manifest = read_json(os.path.join(folder, "manifest.json"))
        if manifest is not None and manifest.get("network") != network:
            raise UserError(f"experts in {folder} were trained as {manifest.get('network')}, this run needs "
                            f"{network}; match --net_type/--depth/--width/--norm_type or pass --pretrain_dir")
        self.experts, self.inits = [], []
        for i in range(count):
            trained = self._frozen(network, device)
            init = {}
            for stage, target in (("trained", trained), ("init", None)):
                path = expert_path(folder, i, stage)
                state = safe_load(path, "expert checkpoint")
                check_state_dict(trained, state, path)
                if target is not None:
                    target.load_state_dict(state)
                else:
                    init = {k: v.to(device) for k, v in state.items()}
            self.experts.append(trained)
            self.inits.append([init[name] for name, _ in trained.named_parameters()])
        self.encoder = self._frozen(network, device)

    @staticmethod
    def _frozen(network, device):
        net = make_network(network, device)
        net.requires_grad_(False)
        return net

    def __len__(self):
        return len(self.experts)

    def expert(self, k):
        """The trained expert k."""
        return self.experts[k]

    @torch.no_grad()
    def middle(self, k, lam):
        """The middle encoder lam * init_k + (1 - lam) * trained_k, written in place."""
        trained = self.experts[k]
        for p, p_trained, p_init in zip(self.encoder.parameters(), trained.parameters(), self.inits[k]):
            p.copy_(p_trained).lerp_(p_init, lam)
        # NOTE(reference): buffers follow the trained expert (the reference leaves random-init ones)
        for b, b_trained in zip(self.encoder.buffers(), trained.buffers()):
            b.copy_(b_trained)
        return self.encoder


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


def features(net, x):
    """Penultimate features of `net` (the vector feeding its classifier)."""
    return net(x, return_features=True)[1]


def step(optimizer, loss):
    """One SGD step on the synthetic pixels; returns the loss as a detached tensor."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def per_class_update(synset, sampler, encoder, expert, aug, optimizer, args):
    """Reference schedule: one step per class per view, one shared momentum buffer (REFERENCE 6.2)."""
    inner, inter = 0.0, 0.0
    for c in range(synset.nclass):
        real, syn = sampler.sample(c), synset.sample(c, args.batch_syn_max)
        z = aug(torch.cat([real, syn]))  # one siamese draw shared by real and synthetic
        with torch.no_grad():
            feat_real = features(encoder, z[:len(real)])
        inner += step(optimizer, inner_class_loss(feat_real, features(encoder, z[len(real):])))
    for _ in range(args.iter_calib if expert is not None else 0):
        for c in range(synset.nclass):
            syn = synset.sample(c, args.batch_syn_max)
            labels = torch.full((len(syn),), c, device=syn.device)
            inter += step(optimizer, calibration_loss(expert(aug(syn)), labels))
    return inner, inter


def joint_update(synset, sampler, encoder, expert, aug, optimizer, args):
    """One step per view over all classes; loss = sum of per-class losses, DSA drawn per class."""
    real, groups_real = sampler.sample_all()
    syn = synset.decoded_per_class(args.batch_syn_max)
    nclass, m = syn.shape[:2]
    groups_syn = torch.arange(nclass, device=syn.device).repeat_interleave(m)
    z = aug(torch.cat([real, syn.flatten(0, 1)]), groups=torch.cat([groups_real, groups_syn]))
    with torch.no_grad():
        feat_real = features(encoder, z[:len(real)])
    loss = inner_class_loss(feat_real, features(encoder, z[len(real):]), groups_real, groups_syn, nclass)
    inner, inter = step(optimizer, loss), 0.0
    for _ in range(args.iter_calib if expert is not None else 0):
        syn = synset.decoded_per_class(args.batch_syn_max).flatten(0, 1)
        inter += step(optimizer, calibration_loss(expert(aug(syn, groups=groups_syn)), groups_syn))
    return inner, inter


def pretrain_command(args):
    """The exact command that trains the experts this run needs."""
    return (f"python pretrain.py -d {args.dataset} --data_dir {args.data_dir} --net_type {args.net_type} "
            f"--depth {args.depth} --width {args.width:g} --norm_type {args.norm_type} "
            f"--pretrain_amount {args.num_premodel} --pretrain_dir {args.pretrain_dir}")


def prepare_run_dir(folder, resume):
    """Create the run folder; refuse one that already holds condensed sets unless resuming that run."""
    if resume:
        remove_stale_temps(folder)  # a write the kill interrupted; its target file is intact
    elif glob.glob(os.path.join(folder, "data_*.pt")):
        raise UserError(f"{folder} already holds a condensation run; pass a new --save_dir or --resume {folder}")
    os.makedirs(folder, exist_ok=True)


def save_state(folder, next_iter, synset, optimizer, sampler, best, args, done=False):
    """Write everything the loop needs to continue at `next_iter` to state.pt, atomically; returns next_iter."""
    atomic_save({"next_iter": next_iter, "done": done, "data": synset.data.detach().cpu(),
                 "optimizer": optimizer.state_dict(), "sampler": sampler.state_dict(), "best": best,
                 "rng": rng_state(), "args": vars(args)}, os.path.join(folder, STATE))
    return next_iter


def load_state(folder, args):
    """The state.pt of the run being resumed, checked against its settings; None if it has none yet."""
    path = os.path.join(folder, STATE)
    if not os.path.exists(path):
        return None
    try:
        state = safe_load(path, "run state")
        if not (isinstance(state, dict) and STATE_KEYS <= state.keys()):
            raise UserError("not a state.pt")
    except UserError:
        raise UserError(f"--resume: {path} is unreadable; delete it to restart the run from iteration 0") from None
    changed, next_iter = settings_diff(state["args"], vars(args)), state["next_iter"]
    if changed:
        raise UserError(f"--resume: {path} was written with other settings ({', '.join(changed)}); restore "
                        f"{folder}/args.json or start a new run")
    if next_iter > args.niter:
        raise UserError(f"--resume: the run has done {next_iter} iterations, more than --niter {args.niter}; "
                        f"pass --niter {next_iter} or more")
    return state


def restore_state(state, optimizer, sampler):
    """Put the optimizer, the real-batch streams and every random stream back where state.pt left them."""
    optimizer.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    set_rng_state(state["rng"])
    return state["next_iter"], state["best"]


def check_finite(data, loss, it, folder, saved):
    """Stop with a UserError when the synthetic data or a loss holds NaN or Inf (one device sync)."""
    if bool(torch.isfinite(data.detach().sum() + loss)):
        return
    last = (f"its last good checkpoint, {os.path.join(folder, STATE)} (iteration {saved}), is intact"
            if saved is not None else f"no checkpoint was written yet ({os.path.join(folder, 'data_0.pt')} is "
                                      f"the initial set)")
    raise UserError(f"iteration {it}: NaN or Inf in the synthetic data or a loss, the run stopped; {last}; lower "
                    f"--lr_img and start a new run (or --resume {folder} if the fault was transient)")


def main(args, on_iteration=None):
    """Condense; `on_iteration(it, synset, bank)`, if given, runs after every iteration (for analyses)."""
    # Setup: device, seed, run folder, data.
    device = select_device(args.device)
    seed_everything(args.seed)
    train, test, info = load_dataset(args.dataset, args.data_dir, download=args.download, size=args.size,
                                     nclass=args.nclass, phase=args.phase)
    # NOTE(reference): data_best.pt is chosen on a held-out part of the training set, not on the test split
    val = None
    if args.select_by == "val" and args.eval_every:  # no evaluation, no selection: condense everything
        train, val = holdout(train, info.nclass, args.val_split, seed=args.seed)
        val = val.to(device)
    sampler = ClassSampler(train, info.nclass, args.batch_real, device)
    test = test.to(device)
    network = network_config(args, info)

    # Expert bank: every (init, trained) pair in memory; none means plain DM.
    bank = ExpertBank(args.pretrain_dir, args.num_premodel, network, device, pretrain_command(args)) \
        if args.num_premodel > 0 else None
    prepare_run_dir(args.save_dir, args.resume)
    log = Logger(args.save_dir)
    log(f"DANCE on {dataset_tag(args)}, {device}, git {git_revision()}")
    state = load_state(args.save_dir, args) if args.resume else None
    atomic_write_json(vars(args), os.path.join(args.save_dir, "args.json"))
    if bank is None:
        log("num_premodel 0: plain DM (a fresh random network per iteration, no calibration)")

    # Synthetic set: initialised from real images, or the one a resumed run saved.
    synset = SyntheticSet(info.nclass, args.ipc, info.channels, info.size, args.factor, args.decode_type, device,
                          data=state["data"] if state else None)
    if state is None:
        if args.resume:
            log(f"no {STATE} in {args.save_dir} (stopped before its first checkpoint): restarting from iteration 0")
        synset.init(args.init, sampler)
        synset.save(os.path.join(args.save_dir, "data_0.pt"))
        save_grid(synset.data, os.path.join(args.save_dir, "init.png"))
    optimizer = torch.optim.SGD([synset.data], lr=args.lr_img, momentum=args.mom_img)
    dsa = DiffAug(args.aug_type, batch=True)

    def aug(x, groups=None):
        return dsa(normalize(x, info.mean, info.std), groups)

    update = per_class_update if args.update == "per_class" else joint_update
    recipe = eval_recipe(args, args.eval_epochs)
    first, best = restore_state(state, optimizer, sampler) if state else (0, -1.0)
    saved = first if state else None  # the iteration state.pt holds
    if state and state["done"] and first == args.niter:
        log(f"{args.save_dir} already finished its {args.niter} iterations; pass a larger --niter to continue it")
        return synset
    if state:
        log(f"resuming at iteration {first} from {os.path.join(args.save_dir, STATE)}")
    start = time.time()

    def evaluate_and_save(it):
        nonlocal best
        synset.save(os.path.join(args.save_dir, f"data_{it}.pt"))
        save_grid(synset.data, os.path.join(args.save_dir, f"img{it}.png"))
        if not args.eval_every:
            return
        images, labels = synset.decoded()
        with preserved_rng():  # evaluation never changes the condensation's random streams
            result = evaluate_set(images, labels, test, info, network, recipe, device, args.eval_runs,
                                  seed=args.seed + it, log=lambda m: None, val=val)
        score = statistics.mean(result["val"]) if val is not None else result["mean"]
        log(f"iter {it}: {args.select_by} acc {score:.2f}; test {summary(result)}")
        log.metrics(iter=it, select_acc=score, test_acc=result["mean"], test_std=result["std"],
                    test_best_check=result["best_mean"])
        if score > best:
            best = score
            synset.save(os.path.join(args.save_dir, "data_best.pt"))
            log(f"iter {it}: new best {args.select_by} acc {best:.2f}, saved data_best.pt")

    # Condensation loop (REFERENCE 6.2); SIGINT/SIGTERM stop it at the end of an iteration.
    with StopSignals() as stop:
        for it in range(first, args.niter):
            if bank is not None:
                k = random.randrange(len(bank))
                lam = args.lam_min + (args.lam_max - args.lam_min) * torch.rand(()).item()
                encoder, expert = bank.middle(k, lam), bank.expert(k)
            else:
                encoder, expert = make_network(network, device).requires_grad_(False), None
            with torch.no_grad():
                synset.data.clamp_(0, 1)
            inner, inter = update(synset, sampler, encoder, expert, aug, optimizer, args)
            check_finite(synset.data, inner + inter, it, args.save_dir, saved)
            if on_iteration is not None:
                on_iteration(it, synset, bank)
            if it % 20 == 0 or it == args.niter - 1:
                calib = args.iter_calib if expert is not None else 0
                inner, inter = float(inner) / info.nclass, float(inter) / info.nclass / max(calib, 1)
                per_it = (time.time() - start) / (it + 1 - first)
                log(f"iter {it}: inner loss {inner:.4f}, calibration loss {inter:.4f} ({per_it:.3f} s/iter)")
                log.metrics(iter=it, inner=inner, calibration=inter, sec_per_iter=per_it)
            if args.eval_every and (it + 1) % args.eval_every == 0:
                evaluate_and_save(it + 1)
            # Checkpoint: state.pt lets `--resume` continue from here exactly.
            if stop.signum or (args.ckpt_every and (it + 1) % args.ckpt_every == 0):
                saved = save_state(args.save_dir, it + 1, synset, optimizer, sampler, best, args)
            if stop.signum:
                log(f"{signal.Signals(stop.signum).name}: stopped after iteration {it}, state saved")
                raise RunStopped(f"{signal.Signals(stop.signum).name}: state after iteration {it} saved to "
                                 f"{os.path.join(args.save_dir, STATE)}; continue with: python DANCE.py --resume "
                                 f"{args.save_dir}", stop.signum)
    if not (args.eval_every and args.niter % args.eval_every == 0) or args.niter == 0:
        evaluate_and_save(args.niter)  # the final set is always saved
    save_state(args.save_dir, args.niter, synset, optimizer, sampler, best, args, done=True)
    log(f"done: {args.niter - first} iterations in {time.time() - start:.0f} s; results in {args.save_dir}")
    return synset


if __name__ == "__main__":
    torch.backends.cudnn.benchmark = True
    run_cli(main, lambda: parse("condense"))
