"""Train the expert networks DANCE draws its middle encoders from (REFERENCE 7).

For each expert i: save its initial weights (premodel{i}_init.pth.tar), train it on the real
training set, save the trained weights (premodel{i}_trained.pth.tar), and record it in
manifest.json (model, dataset, seed, epochs, test accuracy). Experts train --parallel at a time as one
vectorised model (default: all; 1: one after another). Finished experts are skipped (after checking
that their checkpoints load); the experts in progress save their full training state after every epoch
(premodel{i}_progress.pt, or premodels{i}-{j}-..._progress.pt for a group), so a killed run, started
again with the same --parallel, continues them bit for bit.

    python pretrain.py -d cifar10 --reproduce
"""
import math
import os
import time

import torch
from tqdm import tqdm

from arguments import dataset_tag, parse
from data.datasets import holdout, load_dataset
from training.distributed import end_world, start_world
from models import check_network, make_network, network_config, network_difference
from training.recipe import Recipe
from training.vectorised import build_networks, fit_group, group_size, groups_of
from utils import (Logger, UserError, atomic_save, atomic_write_json, check_state_dict, expert_path,
                   git_revision, make_dir, read_json, remove_stale_temps, run_cli, safe_load, seed_everything,
                   select_device)

MANIFEST = "manifest.json"


def expert_recipe(args):
    """Expert training: per-sample DSA of aug_type (cutout dropped under CutMix), batch batch_real."""
    ops = [op for op in args.aug_type.split("_") if not (op == "cutout" and args.mixup == "cut")]
    return Recipe(epochs=args.pretrain_epochs, lr=args.lr, momentum=args.momentum,
                  weight_decay=args.weight_decay, batch_size=args.batch_real, dsa_strategy="_".join(ops),
                  mix_p=args.mix_p if args.mixup == "cut" else 0.0, beta=args.beta, eval_interval=0,
                  precision=args.precision, compile=args.compile)


def holdout_split(args):
    """The held-out selection split the experts never see (the one DANCE.py --val_split holds out), or None."""
    return {"fraction": args.val_split, "seed": args.seed} if args.val_split else None


def new_manifest(args, network):
    """What the next stage needs to check it loads experts of the right kind."""
    return {"dataset": dataset_tag(args), "network": network, "seed": args.seed,
            "epochs": args.pretrain_epochs, "holdout": holdout_split(args), "recipe": expert_recipe(args).as_dict(),
            "experts": {}}


def load_manifest(folder, expected):
    """The folder's manifest; a folder of other experts is refused rather than mixed."""
    manifest = read_json(os.path.join(folder, MANIFEST))
    if manifest is None:
        return expected
    difference = network_difference(manifest.get("network", {}), expected["network"])
    if difference:
        raise UserError(f"{folder} holds experts of another network ({difference}, folder vs now); pass a new "
                        f"--pretrain_dir or match that flag")
    for key, flag in (("dataset", "-d"), ("epochs", "--pretrain_epochs"), ("holdout", "--val_split/--seed")):
        if manifest.get(key) != expected[key]:
            raise UserError(f"{folder} holds experts with another {key} ({manifest.get(key)} vs {expected[key]}, "
                            f"{flag}); pass a new --pretrain_dir or match {flag}")
    recipe = manifest.get("recipe")  # manifests before 2026-11-25 lack it
    changed = [f"{k} {recipe[k]} vs {v}" for k, v in expected["recipe"].items() if recipe and recipe.get(k, v) != v]
    if changed:
        raise UserError(f"{folder} holds experts trained with another recipe ({', '.join(changed)}, folder vs now); "
                        f"pass a new --pretrain_dir or the folder's settings (its args.json)")
    manifest.setdefault("recipe", expected["recipe"])
    return manifest


def is_finished(folder, index, manifest, model):
    """True when expert `index` is recorded as finished and both checkpoints load into `model`."""
    if str(index) not in manifest["experts"]:
        return False
    for stage in ("init", "trained"):
        path = expert_path(folder, index, stage)
        try:
            state = safe_load(path, "expert checkpoint")
            check_state_dict(model, state, path)
        except UserError:
            return False
        if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
            return False  # a diverged expert (written by older code) is trained again
    return True


def progress_path(folder, group):
    """The epoch-by-epoch training state of unfinished experts trained together (one: today's file name)."""
    name = f"premodel{group[0]}" if len(group) == 1 else "premodels" + "-".join(map(str, group))
    return os.path.join(folder, f"{name}_progress.pt")


PROGRESS_KEYS = {"epoch", "optimizer", "scheduler", "history", "rng", "origin", "seconds"}


def load_progress(path, origin, models):
    """The saved training state at `path` if it is complete and belongs to these experts and settings, else None."""
    try:
        state = safe_load(path, "expert progress")
        if not (isinstance(state, dict) and PROGRESS_KEYS <= state.keys() and state["origin"] == origin):
            return None
        if len(models) == 1:
            check_state_dict(models[0], state["model"], path)
        elif {k: tuple(v.shape[1:]) for k, v in state["stacked"].items()} != \
                {k: tuple(v.shape) for k, v in models[0].state_dict().items()}:
            return None
        return state
    except (UserError, KeyError, AttributeError):
        return None


def train_experts(group, args, network, train, test, info, device, log):
    """Train the experts `group` at once (one: alone), continuing from their last saved epoch if any; save init
    and trained weights. Expert i is initialised under seed * 1000 + i, so any one can be retrained alone."""
    models = build_networks(network, device, group, args.seed)
    for index, model in zip(group, models):
        # the init is a function of the seed, so rewriting it on resume also repairs a damaged copy
        atomic_save(model.state_dict(), expert_path(args.pretrain_dir, index, "init"))
    recipe = expert_recipe(args)
    seeds = [args.seed * 1000 + i for i in group]
    origin = {"seed": seeds[0] if len(group) == 1 else seeds, "network": network, "recipe": recipe.as_dict()}
    path = progress_path(args.pretrain_dir, group)
    names = f"expert {group[0]}" if len(group) == 1 else f"experts {', '.join(map(str, group))}"
    resumed = load_progress(path, origin, models) if os.path.isfile(path) else None
    done, earlier = (resumed["epoch"], resumed["seconds"]) if resumed else (0, 0.0)
    if resumed:
        log(f"{names}: resuming after epoch {done} from {path}")
    elif os.path.isfile(path):
        log(f"{names}: {path} is unreadable or from other settings; training from epoch 0")
    start = time.time()
    with tqdm(total=recipe.epochs, initial=done, desc=names, leave=False) as bar:
        def progress(epoch, losses, accs):
            bar.update()
            bar.set_postfix(loss=" ".join(f"{x:.3f}" for x in losses))
            for index, loss in zip(group, losses):
                if not math.isfinite(loss):  # never save a diverged expert (DANCE would read NaN weights)
                    raise UserError(f"expert {index}: the training loss became {loss} at epoch {epoch} (lr "
                                    f"{recipe.lr}, weight decay {recipe.weight_decay}); lower --lr or --weight_decay "
                                    f"and run again")

        def save_progress(state):
            atomic_save({**state, "origin": origin, "seconds": earlier + time.time() - start}, path)

        results = fit_group(models, train.images, train.labels, test, info.mean, info.std, recipe, device,
                            progress=progress, start=resumed, on_epoch=save_progress)
    seconds = earlier + time.time() - start
    records = {}
    for index, model, result in zip(group, models, results):
        atomic_save(model.state_dict(), expert_path(args.pretrain_dir, index, "trained"))
        log(f"expert {index}: test acc {result['final']:.2f} after {recipe.epochs} epochs ({seconds:.0f} s"
            f"{'' if len(group) == 1 else f' for {len(group)} together'})")
        records[str(index)] = {"test_acc": result["final"], "seconds": round(seconds / len(group), 1),
                               "trained_with": group}
    return records


def discard(path):
    """Remove a file that is no longer needed, if present."""
    try:
        if os.path.exists(path):
            os.remove(path)
    except OSError as e:
        raise UserError(f"could not remove {path}: {e.strerror or e}; check the folder's permissions") from None


def rank_log(world, log):
    """Rank 0's log (file and terminal); other ranks print their lines, prefixed, and write nothing."""
    return log if world.main else (lambda msg: print(f"[rank {world.rank}] {msg}", flush=True))


def main(args):
    world, device = start_world(select_device(args.device))
    try:
        train_all(args, world, device)
    except BaseException:
        end_world(world, clean=False)  # torchrun then stops the other ranks
        raise
    end_world(world)


def train_all(args, world, device):
    """Every expert not yet finished; under torchrun, expert i trains on rank i mod N (its own files written
    there) and rank 0 records them all in the manifest."""
    seed_everything(args.seed)
    train, test, info = load_dataset(args.dataset, args.data_dir, download=args.download, size=args.size,
                                     nclass=args.nclass, phase=args.phase)
    if args.val_split:  # DANCE.py with the same --val_split and --seed selects on exactly these images
        train, _ = holdout(train, info.nclass, args.val_split, seed=args.seed, class_names=info.class_names)
    train, test = train.to(device), test.to(device)
    network = network_config(args, info)
    check_network(network)
    manifest = load_manifest(args.pretrain_dir, new_manifest(args, network))
    probe = make_network(network, "cpu")  # a network too large for memory fails here, before any file is written
    if world.main:
        make_dir(args.pretrain_dir, "--pretrain_dir")
        remove_stale_temps(args.pretrain_dir)
    world.barrier()  # the folder exists (and holds no stale temporary files) before any rank writes to it
    log = rank_log(world, Logger(args.pretrain_dir))
    log(f"pretrain {dataset_tag(args)} on {device}"
        f"{f' (rank {world.rank} of {world.size})' if world.size > 1 else ''}, git {git_revision()}: {vars(args)}")
    if world.main:
        atomic_write_json(vars(args), os.path.join(args.pretrain_dir, "args.json"))
    todo = []
    for index in range(args.pretrain_amount):
        if is_finished(args.pretrain_dir, index, manifest, probe):
            if world.main:
                log(f"expert {index}: already trained, skipped")
                discard(progress_path(args.pretrain_dir, [index]))
        else:
            if str(index) in manifest["experts"] and world.main:
                log(f"expert {index}: a checkpoint is missing, truncated or mismatched; training it again")
            todo.append(index)
    world.barrier()  # every rank has read the manifest before rank 0 rewrites it
    mine, trained = world.owned(todo), []
    for group in groups_of(mine, group_size(args.parallel, probe, device, len(mine))):
        records = train_experts(group, args, network, train, test, info, device, log)
        if world.size == 1:
            manifest["experts"].update(records)
            atomic_write_json(manifest, os.path.join(args.pretrain_dir, MANIFEST))
            discard(progress_path(args.pretrain_dir, group))  # only once the manifest records the experts
        trained.append((group, records))
    if world.size > 1:
        everything = [part for rank_parts in world.gather(trained) for part in rank_parts]
        if world.main:
            for group, records in everything:
                manifest["experts"].update(records)
            atomic_write_json(manifest, os.path.join(args.pretrain_dir, MANIFEST))
            for group, _ in everything:
                discard(progress_path(args.pretrain_dir, group))
    if world.main:
        accs = [manifest["experts"][str(i)]["test_acc"] for i in range(args.pretrain_amount)]
        log(f"{len(accs)} experts in {args.pretrain_dir}: mean test acc {sum(accs) / len(accs):.2f}")


if __name__ == "__main__":
    run_cli(main, lambda: parse("pretrain"))
