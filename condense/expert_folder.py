"""The expert folder: what pretrain.py writes and DANCE.py and evaluate.py read, and every check of it.

    premodel{i}_init.pth.tar     expert i before training   } plain state_dicts with the official code's file names,
    premodel{i}_trained.pth.tar  expert i after training    } keys and shapes, so either code loads the other's
    manifest.json                the network, data, seed, epochs, held-out split and recipe the experts share, and
                                 each finished expert's test accuracy
    premodel{i}_progress.pt      the training state of unfinished experts after their last epoch
                                 (premodels{i}-{j}-..._progress.pt for experts trained together)
"""
import hashlib
import os

import torch

from models import make_network, network_difference
from utils import UserError, atomic_write_json, read_json, safe_load

MANIFEST = "manifest.json"
PROGRESS_KEYS = {"epoch", "optimizer", "scheduler", "history", "rng", "origin", "seconds"}


def checkpoint_path(folder, index, stage):
    """Expert `index`'s weights at `stage` 'init' or 'trained' (the official file names)."""
    return os.path.join(folder, f"premodel{index}_{stage}.pth.tar")


def progress_path(folder, group):
    """The epoch-by-epoch training state of unfinished experts trained together (one: premodel{i}_progress.pt)."""
    name = f"premodel{group[0]}" if len(group) == 1 else "premodels" + "-".join(map(str, group))
    return os.path.join(folder, f"{name}_progress.pt")


def read_manifest(folder):
    """The folder's manifest, or None when it has none (experts of the official code)."""
    return read_json(os.path.join(folder, MANIFEST))


def new_manifest(dataset, network, seed, epochs, holdout, recipe):
    """The manifest of a new folder: what the next stage checks it loads experts of the right kind by."""
    return {"dataset": dataset, "network": network, "seed": seed, "epochs": epochs, "holdout": holdout,
            "recipe": recipe, "experts": {}}


def open_manifest(folder, expected):
    """The folder's manifest to add experts to (`expected` for a new folder); a folder of other experts is refused
    rather than mixed."""
    manifest = read_manifest(folder)
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


def record_experts(folder, manifest, records):
    """Add finished experts' records to the manifest and write it (atomically)."""
    manifest["experts"].update(records)
    atomic_write_json(manifest, os.path.join(folder, MANIFEST))


def describe_split(split):
    """A held-out split ({"fraction", "seed"} or None, as manifests record it) as a person reads it."""
    if not split:
        return "the whole training set"
    return f"all but a {split['fraction']:g} held-out split (seed {split['seed']})"


def check_state_dict(model, state, path):
    """Refuse a checkpoint whose keys or shapes differ from `model`, naming the first mismatch."""
    if not isinstance(state, dict):
        raise UserError(f"{path} is not a state_dict; recreate it with pretrain.py")
    own = model.state_dict()
    for key, value in own.items():
        if key not in state:
            raise UserError(f"{path} does not match the model: key '{key}' is missing; "
                            f"check --net_type/--depth/--width/--norm_type or retrain the experts")
        if tuple(state[key].shape) != tuple(value.shape):
            raise UserError(f"{path} does not match the model: '{key}' has shape {tuple(state[key].shape)}, "
                            f"the model needs {tuple(value.shape)}; check --net_type/--depth/--width/"
                            f"--norm_type or retrain the experts")
    extra = [k for k in state if k not in own]
    if extra:
        raise UserError(f"{path} does not match the model: unexpected key '{extra[0]}'; "
                        f"check --net_type/--depth/--width/--norm_type or retrain the experts")


def load_weights(path, model, retrain_hint=""):
    """The state_dict at `path`, checked: readable, shaped like `model`, and finite (a diverged expert is refused)."""
    state = safe_load(path, "expert checkpoint")
    check_state_dict(model, state, path)
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise UserError(f"{path} holds NaN or Inf weights (its training diverged); retrain the experts with a "
                        f"lower --lr or --weight_decay{': ' + retrain_hint if retrain_hint else ''}")
    return state


def is_finished(folder, index, manifest, model):
    """True when expert `index` is recorded as finished and both checkpoints load into `model`."""
    if str(index) not in manifest["experts"]:
        return False
    try:
        for stage in ("init", "trained"):
            load_weights(checkpoint_path(folder, index, stage), model)
    except UserError:  # missing, truncated, mismatched or diverged: trained again
        return False
    return True


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


def discard(path):
    """Remove a file that is no longer needed, if present."""
    try:
        if os.path.exists(path):
            os.remove(path)
    except OSError as e:
        raise UserError(f"could not remove {path}: {e.strerror or e}; check the folder's permissions") from None


def check_experts(folder, count, network, split, pretrain_hint, split_hint):
    """Refuse, before anything is loaded, a folder without experts 0..count-1 of `network`, or whose experts saw
    images of the held-out `split` ({"fraction", "seed"}; None: no split) that selection would use."""
    missing = [p for i in range(count) for p in (checkpoint_path(folder, i, "init"),
                                                 checkpoint_path(folder, i, "trained")) if not os.path.isfile(p)]
    if missing:
        raise UserError(f"expert checkpoint {missing[0]} is missing; train the experts first: {pretrain_hint}")
    manifest = read_manifest(folder)
    if manifest is not None:
        difference = network_difference(manifest.get("network", {}), network)
        if difference:
            raise UserError(f"experts in {folder} were trained with another network ({difference}, experts vs "
                            f"this run); match that flag, or pass the --pretrain_dir of matching experts")
    if split is not None and (manifest or {}).get("holdout") != split:
        raise UserError(f"--val_split {split['fraction']:g} holds out images to choose data_best.pt, but the "
                        f"experts in {folder} were trained on {describe_split((manifest or {}).get('holdout'))}, "
                        f"so selection would not be independent; {split_hint}")


def folder_identity(folder):
    """{folder, manifest}: an expert folder's absolute path and a hash of its manifest.json (None when it has none),
    which changes whenever its experts are trained again."""
    path = os.path.join(folder, MANIFEST)
    digest = None
    if os.path.isfile(path):
        with open(path, "rb") as f:
            digest = hashlib.sha1(f.read()).hexdigest()[:16]
    return {"folder": os.path.abspath(folder), "manifest": digest}


def trained_expert(folder, network, device, purpose, pretrain_hint):
    """Expert 0, trained, in eval mode with frozen weights, and its file's identity (path, size, mtime) for records;
    `purpose` says what needs it, `pretrain_hint` how to train it when it is missing."""
    path = checkpoint_path(folder, 0, "trained")
    if not os.path.isfile(path):
        raise UserError(f"{purpose}, and {path} is missing; run: {pretrain_hint}")
    net = make_network(network, device)
    net.load_state_dict(load_weights(path, net))
    stat = os.stat(path)
    return net.eval().requires_grad_(False), [os.path.abspath(path), stat.st_size, stat.st_mtime_ns]
