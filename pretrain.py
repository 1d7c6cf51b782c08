"""Train the expert networks DANCE draws its middle encoders from (REFERENCE 7).

For each expert i: save its initial weights (premodel{i}_init.pth.tar), train it on the real
training set, save the trained weights (premodel{i}_trained.pth.tar), and record it in
manifest.json (model, dataset, seed, epochs, test accuracy). Finished experts are skipped (after
checking that their checkpoints load); the expert in progress saves its full training state after
every epoch (premodel{i}_progress.pt), so a killed run, started again, continues it bit for bit.

    python pretrain.py -d cifar10 --reproduce
"""
import math
import os
import time

from tqdm import tqdm

from arguments import dataset_tag, parse
from data.datasets import holdout, load_dataset
from models import check_network, make_network, network_config, network_difference
from train import Recipe, fit
from utils import (Logger, UserError, atomic_save, atomic_write_json, check_state_dict, expert_path,
                   git_revision, make_dir, read_json, remove_stale_temps, run_cli, safe_load, seed_everything,
                   select_device)

MANIFEST = "manifest.json"


def expert_recipe(args):
    """Expert training: per-sample DSA of aug_type (cutout dropped under CutMix), batch batch_real."""
    ops = [op for op in args.aug_type.split("_") if not (op == "cutout" and args.mixup == "cut")]
    return Recipe(epochs=args.pretrain_epochs, lr=args.lr, momentum=args.momentum,
                  weight_decay=args.weight_decay, batch_size=args.batch_real, dsa_strategy="_".join(ops),
                  mix_p=args.mix_p if args.mixup == "cut" else 0.0, beta=args.beta, eval_interval=0)


def holdout_split(args):
    """The held-out selection split the experts never see (the one DANCE.py --val_split holds out), or None."""
    return {"fraction": args.val_split, "seed": args.seed} if args.val_split else None


def new_manifest(args, network):
    """What the next stage needs to check it loads experts of the right kind."""
    return {"dataset": dataset_tag(args), "network": network, "seed": args.seed,
            "epochs": args.pretrain_epochs, "holdout": holdout_split(args), "experts": {}}


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
    return manifest


def is_finished(folder, index, manifest, model):
    """True when expert `index` is recorded as finished and both checkpoints load into `model`."""
    if str(index) not in manifest["experts"]:
        return False
    for stage in ("init", "trained"):
        path = expert_path(folder, index, stage)
        try:
            check_state_dict(model, safe_load(path, "expert checkpoint"), path)
        except UserError:
            return False
    return True


def progress_path(folder, index):
    """The epoch-by-epoch training state of an unfinished expert."""
    return os.path.join(folder, f"premodel{index}_progress.pt")


PROGRESS_KEYS = {"epoch", "model", "optimizer", "scheduler", "history", "rng", "origin", "seconds"}


def load_progress(path, origin, model):
    """The saved training state at `path` if it is complete and belongs to this expert and settings, else None."""
    try:
        state = safe_load(path, "expert progress")
        if not (isinstance(state, dict) and PROGRESS_KEYS <= state.keys() and state["origin"] == origin):
            return None
        check_state_dict(model, state["model"], path)
        return state
    except UserError:
        return None


def train_expert(index, args, network, train, test, info, device, log):
    """Train one expert, continuing from its last saved epoch if any; save init and trained weights."""
    seed_everything(args.seed * 1000 + index)  # per expert, so any one can be retrained alone
    model = make_network(network, device)
    # the init is a function of the seed, so rewriting it on resume also repairs a damaged copy
    atomic_save(model.state_dict(), expert_path(args.pretrain_dir, index, "init"))
    recipe = expert_recipe(args)
    path, origin = progress_path(args.pretrain_dir, index), {"seed": args.seed * 1000 + index,
                                                              "network": network, "recipe": recipe.as_dict()}
    resumed = load_progress(path, origin, model) if os.path.isfile(path) else None
    done, earlier = (resumed["epoch"], resumed["seconds"]) if resumed else (0, 0.0)
    if resumed:
        log(f"expert {index}: resuming after epoch {done} from {path}")
    elif os.path.isfile(path):
        log(f"expert {index}: {path} is unreadable or from other settings; training from epoch 0")
    start = time.time()
    with tqdm(total=recipe.epochs, initial=done, desc=f"expert {index}", leave=False) as bar:
        def progress(epoch, loss, acc):
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.1f}")
            if not math.isfinite(loss):  # never save a diverged expert (DANCE would read NaN weights)
                raise UserError(f"expert {index}: the training loss became {loss} at epoch {epoch} (lr {recipe.lr}, "
                                f"weight decay {recipe.weight_decay}); lower --lr or --weight_decay and run again")

        def save_progress(state):
            atomic_save({**state, "origin": origin, "seconds": earlier + time.time() - start}, path)

        result = fit(model, train.images, train.labels, test, info.mean, info.std, recipe, device,
                     progress=progress, start=resumed, on_epoch=save_progress)
    atomic_save(model.state_dict(), expert_path(args.pretrain_dir, index, "trained"))
    seconds = earlier + time.time() - start
    log(f"expert {index}: test acc {result['final']:.2f} after {recipe.epochs} epochs ({seconds:.0f} s)")
    return {"test_acc": result["final"], "seconds": round(seconds, 1)}


def discard(path):
    """Remove a file that is no longer needed, if present."""
    try:
        if os.path.exists(path):
            os.remove(path)
    except OSError as e:
        raise UserError(f"could not remove {path}: {e.strerror or e}; check the folder's permissions") from None


def main(args):
    device = select_device(args.device)
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
    make_dir(args.pretrain_dir, "--pretrain_dir")
    remove_stale_temps(args.pretrain_dir)
    log = Logger(args.pretrain_dir)
    log(f"pretrain {dataset_tag(args)} on {device}, git {git_revision()}: {vars(args)}")
    atomic_write_json(vars(args), os.path.join(args.pretrain_dir, "args.json"))
    for index in range(args.pretrain_amount):
        if is_finished(args.pretrain_dir, index, manifest, probe):
            log(f"expert {index}: already trained, skipped")
        else:
            if str(index) in manifest["experts"]:
                log(f"expert {index}: a checkpoint is missing, truncated or mismatched; training it again")
            manifest["experts"][str(index)] = train_expert(index, args, network, train, test, info, device, log)
            atomic_write_json(manifest, os.path.join(args.pretrain_dir, MANIFEST))
        discard(progress_path(args.pretrain_dir, index))  # only once the manifest records the expert
    accs = [manifest["experts"][str(i)]["test_acc"] for i in range(args.pretrain_amount)]
    log(f"{len(accs)} experts in {args.pretrain_dir}: mean test acc {sum(accs) / len(accs):.2f}")


if __name__ == "__main__":
    run_cli(main, lambda: parse("pretrain"))
