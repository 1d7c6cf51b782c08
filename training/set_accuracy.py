"""The evaluation of a set: train fresh networks on it with the paper's protocol, report their test accuracy.

The library behind evaluate.py and DANCE.py's periodic evaluations (the official test.py `test_data`, with
repeats). Runs train in groups of `parallel` networks at once (training/vectorised.py) where the network allows
it, else one after another (training/recipe.fit). Run r's network is initialised under seed * 1000 + r either
way. Its training draws come from that stream when it trains alone; in a group, the group's first run's stream
drives every network (training/vectorised.py's contract), so a run's accuracy then depends on which runs share
its group, and only a one-network group equals the run trained alone.
"""
import math
import statistics
import time

import torch
from tqdm import tqdm

from models import network_probe
from training.recipe import DEFAULT_TEMPERATURE, Recipe
from training.vectorised import build_networks, fit_group, group_size, groups_of, test_accuracies
from utils import UserError


def eval_recipe(protocol, epochs, compile=False, teacher=None, temperature=DEFAULT_TEMPERATURE):
    """The paper's evaluation recipe from a set's evaluation `protocol` (the settings data/set_files.PROTOCOL names):
    SGD, x0.2 at 2/3 and 5/6, per-sample DSA (or ImageNet's), CutMix; with a `teacher`, trained on its soft labels
    at `temperature` instead of the set's labels."""
    p = protocol
    return Recipe(epochs=epochs, lr=p["lr"], momentum=p["momentum"], weight_decay=p["weight_decay"],
                  batch_size=p["batch_size"], dsa_strategy=p["dsa_strategy"],
                  mix_p=p["mix_p"] if p["mixup"] == "cut" else 0.0, beta=p["beta"], eval_interval=p["eval_interval"],
                  eval_aug=p["eval_aug"], precision=p["precision"], compile=compile, teacher=teacher,
                  temperature=temperature)


def _fit_watched(models, group, runs, images, labels, test, info, recipe, device, progress, strict):
    """Train one group of runs' networks (training/vectorised.fit_group) behind a progress bar; returns their results
    and {run: first epoch whose training loss was NaN or Inf}, or raises a UserError at it when `strict`."""
    name = f"run {group[0] + 1}/{runs}" if len(group) == 1 else f"runs {group[0] + 1}-{group[-1] + 1}/{runs}"
    diverged = {}
    with tqdm(total=recipe.epochs, desc=name, leave=False, disable=not progress) as bar:
        def step(epoch, losses, accs):
            bar.update()
            bar.set_postfix(loss=" ".join(f"{x:.3f}" for x in losses))
            for run, loss in zip(group, losses):
                if not math.isfinite(loss) and run not in diverged:
                    diverged[run] = epoch
                    if strict:
                        raise UserError(f"run {run + 1}: the training loss became {loss} at epoch {epoch} "
                                        f"(lr {recipe.lr}, weight decay {recipe.weight_decay}); lower --lr or "
                                        f"--weight_decay")

        fitted = fit_group(models, images, labels, test, info.mean, info.std, recipe, device, progress=step)
    return fitted, diverged


def evaluate_set(images, labels, test, info, network, recipe, device, runs=1, seed=0, log=print, val=None,
                 done=None, on_run=None, progress=False, strict=False, parallel=0, world=None, per_run=None):
    """Train `runs` fresh networks on (images, labels); return per-run final/best test accuracies.

    `per_run(run)` -> (images, labels), when given, replaces (images, labels) with data of each run's own (a random
    subset redrawn per run); every run then trains alone.

    With a `val` split, each new run's final accuracy on it is returned too (for model selection).
    `done` maps run index -> (final, best) already known; `on_run` is called after each new run;
    `progress` shows a bar of the epochs. A run whose training loss turns NaN or Inf stops the
    evaluation with a UserError when `strict`, else it is logged as diverged (its accuracy is chance).
    Under torchrun (`world` of several ranks) run r trains on rank (position of r among the new runs) mod N;
    every rank returns the whole result, and `on_run` is called for every new run once all have finished.
    """
    if torch.is_tensor(images):
        images = images.to(device)
    if labels is not None:
        labels = labels.to(device)
    done = done or {}
    results, vals, failed = dict(done), {}, []
    start = time.time()
    for run in sorted(done):
        log(f"run {run + 1}/{runs}: final acc {done[run][0]:.2f}  (recorded by an earlier call)")
    todo = [run for run in range(runs) if run not in done]
    sharded = world is not None and world.size > 1
    mine = world.owned(todo) if sharded else todo
    size = group_size(parallel, network_probe(network), device, len(mine)) if mine and per_run is None else 1
    new = {}
    for group in groups_of(mine, size):
        if per_run is not None:
            images, labels = per_run(group[0])
        models = build_networks(network, device, group, seed)
        fitted, diverged = _fit_watched(models, group, runs, images, labels, test, info, recipe, device, progress,
                                        strict)
        if val is not None:
            vals.update(zip(group, test_accuracies(models, val, info.mean, info.std, device, recipe.precision)))
        for run, result in zip(group, fitted):
            final, best = result["final"], result["best"]
            results[run] = new[run] = (final, best)
            if run in diverged:
                failed.append(run + 1)
                log(f"run {run + 1}/{runs}: warning: the training loss became NaN or Inf at epoch {diverged[run]}; "
                    f"lower --lr")
            if on_run is not None and not sharded:
                on_run(run, final, best)
            log(f"run {run + 1}/{runs}: final acc {final:.2f}  (best over test checks {best:.2f})")
    if sharded:  # every rank's runs, on every rank
        for part_new, part_vals, part_failed in world.gather((new, vals, failed)):
            results.update(part_new)
            vals.update(part_vals)
            failed += [r for r in part_failed if r not in failed]
            for run, (final, best) in sorted(part_new.items()):
                if on_run is not None:
                    on_run(run, final, best)
        failed.sort()
    finals = [results[run][0] for run in range(runs)]
    bests = [results[run][1] for run in range(runs)]
    out = {"final": finals, "best": bests, "mean": statistics.mean(finals), "std": statistics.pstdev(finals),
           "best_mean": statistics.mean(bests), "seconds": round(time.time() - start, 1), "diverged": failed}
    if val is not None:
        out["val"] = [vals[run] for run in sorted(vals)]
    return out
