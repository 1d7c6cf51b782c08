"""The files of a condensed set: `data_K.pt` and its description `data_K.json`, written, read and checked here.

`data_K.pt` is the official code's `[data, targets]` pair (float32, undecoded, class-major, [0, 1] pixels), so
either code reads the other's sets. `data_K.json` says how to use it without repeating a flag: the dataset and its
classes, how the storage decodes, the network and evaluation protocol of its run, and the run itself (folder,
iteration, seed, git revision and every setting of its method). A set without one still works with flags.
"""
import json
import os

import torch

from data.datasets import DATASETS
from utils import UserError, atomic_save, atomic_write_json, safe_load

DESCRIPTION_FORMAT = "dance-set/1"
PIXEL_NOISE = 1e-4   # overshoot of [0, 1] that is float noise
PIXEL_LIMIT = 0.5    # overshoot beyond which the tensor is not [0, 1] pixels (0-255, or normalised)

# The settings a description records, by how evaluate.py uses them:
IDENTITY = ("dataset", "size", "nclass", "phase")  # one dataset per call
DECODING = ("factor", "decode_type")                # how the storage decodes, per set
# the run's network and evaluation protocol, per set; flags win
PROTOCOL = ("net_type", "depth", "width", "norm_type", "eval_epochs", "lr", "momentum", "weight_decay",
            "batch_size", "mixup", "beta", "mix_p", "dsa_strategy", "eval_aug", "eval_interval", "precision")
LOCATION = ("data_dir",)                            # where the same data lives; a flag wins

# Settings that change neither a condensed set nor the score that picks data_best.pt. A description leaves them out
# of its run's method, and --resume lets them change:
# - where a run runs and what it writes on the way: device (bit-identity then holds only on the same kind of
#   device), ckpt_every, print_config; resume names the run folder and save_dir becomes it (runs may move);
# - where the same inputs live: data_dir, pretrain_dir, download (a restarted job may land on a node with other
#   mounts; the dataset's name and the experts' network are still checked, their files are vouched for);
# - the periodic evaluations' schedule and size: eval_every, eval_interval, eval_runs (they run under their own
#   random streams; more runs estimate the same score with less noise).
# - what watches the run: logger (--logger's trackers mirror what the run logs anyway).
# Everything else changes the set or the score data_best.pt is chosen by (eval_epochs, the evaluation recipe,
# select_by, val_split).
RESULT_NEUTRAL = frozenset({"save_dir", "resume", "device", "ckpt_every", "print_config", "data_dir", "pretrain_dir",
                            "download", "eval_every", "eval_interval", "eval_runs", "logger"})
# Recorded apart from the method: the seed (the run's own field) and --reproduce (its values are the other settings).
NOT_METHOD = RESULT_NEUTRAL | {"seed", "reproduce"}


def changed_settings(saved, current, may_change=RESULT_NEUTRAL):
    """'key old -> new' for every setting that differs between two runs, except those in `may_change`."""
    return [f"{key} {saved.get(key)} -> {current.get(key)}" for key in sorted(set(saved) | set(current))
            if key not in may_change and saved.get(key) != current.get(key)]


def describe_run(settings, class_names, image_shape, git, processes=1, experts=None):
    """The description of the sets of one condensation run (its iteration filled in by `at_iteration`).

    `settings` are the run's resolved settings (flag -> value), `git` its revision, `processes` how many ran it
    (a per_class run's set depends on it), `experts` the identity of its expert folder ({folder, manifest}; None for
    plain DM).
    """
    described = {k: settings[k] for k in IDENTITY + DECODING + PROTOCOL + LOCATION}
    described["data_dir"] = os.path.abspath(settings["data_dir"])
    method = {k: v for k, v in sorted(settings.items()) if k not in NOT_METHOD | set(described)}
    return {"settings": described, "classes": list(class_names), "image_shape": list(image_shape),
            "ipc": settings["ipc"], "run": {"folder": os.path.abspath(settings["save_dir"]), "iteration": None,
                                            "seed": settings["seed"], "git": git, "method": method,
                                            "processes": processes, "experts": experts}}


def at_iteration(description, iteration, **extra):
    """The run's description of its set after `iteration`, with `extra` top-level fields (e.g. selected_by)."""
    return {**description, "run": {**description["run"], "iteration": iteration}, **extra}


def description_path(path):
    """Where a set's description lives: data_best.pt -> data_best.json."""
    return os.path.splitext(path)[0] + ".json"


def write_set(path, data, targets, description=None):
    """Save [data, targets] in the official format (float32, undecoded, class-major, CPU), with its description.

    The pixels are saved clamped to [0, 1], the state the next iteration starts from (the official code saves
    the last update unclamped). The description is written first: a kill in between leaves a set that still
    works with flags.
    """
    if description is not None:
        atomic_write_json({"format": DESCRIPTION_FORMAT, **description}, description_path(path))
    atomic_save([data.detach().float().clamp(0, 1).cpu(), targets.clone()], path)


def read_description(path):
    """The description written beside a condensed set, or None (e.g. a set from the official code)."""
    sidecar = description_path(path)
    if not os.path.isfile(sidecar):
        return None
    try:
        with open(sidecar) as f:
            desc = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {sidecar} ({e}); delete it to evaluate {path} with flags alone")
    run = desc.get("run") if isinstance(desc, dict) else None
    well_formed = (isinstance(desc, dict) and desc.get("format") == DESCRIPTION_FORMAT
                   and isinstance(desc.get("settings"), dict) and isinstance(run, dict)
                   and isinstance(run.get("method"), dict) and isinstance(run.get("seed"), int)
                   and isinstance(run.get("iteration"), int)
                   and isinstance(desc.get("classes", []), list))
    if not well_formed:
        raise UserError(f"{sidecar} is not a set description written by DANCE.py; move it away to evaluate {path} "
                        f"with flags alone")
    return desc


def check_described_values(path, settings, flags):
    """Each described value has the type (and choice) its flag takes, so a hand-edited file cannot crash later.

    `flags` maps a setting to its flag's (type, choices, default).
    """
    if settings.get("dataset") not in DATASETS:
        raise UserError(f"{path}'s description names dataset {settings.get('dataset')!r}, which is not one of ours; "
                        f"restore or move away {description_path(path)}")
    for key, value in settings.items():
        if key not in flags or (value is None and flags[key][2] is None):
            continue
        kind, choices, _ = flags[key]
        kind = kind or str
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
              else isinstance(value, kind) and not isinstance(value, bool))
        if ok and choices is not None:
            ok = value in choices
        if not ok:
            raise UserError(f"{path}'s description sets {key} to {value!r}, which --{key} does not take; restore "
                            f"or move away {description_path(path)}")


def check_classes(path, description, class_names):
    """Refuse to evaluate a set on other classes than it was condensed from."""
    classes = (description or {}).get("classes")
    if classes is None or list(classes) == list(class_names):
        return
    classes, names = [str(c) for c in classes], [str(n) for n in class_names]
    if len(classes) != len(names):
        raise UserError(f"{path}'s description ({description_path(path)}) lists {len(classes)} classes, but the set "
                        f"is evaluated on data with {len(names)}: fix or remove the description (then pass -d and "
                        f"--data_dir), or evaluate it on the data it was condensed from")
    i = next(i for i, (a, b) in enumerate(zip(classes, names)) if a != b)
    raise UserError(f"{path} was condensed from other classes than the data loaded now (class {i}: '{classes[i]}' in "
                    f"its description, {description_path(path)}, '{names[i]}' now); evaluate it on the data it was "
                    f"condensed from, or fix that description if it is wrong")


def check_ipc(path, description, ipc):
    """Refuse a set whose description states another ipc than its tensor holds."""
    stated = (description or {}).get("ipc")
    if stated is not None and stated != ipc:
        raise UserError(f"{path}'s description ({description_path(path)}) says ipc {stated}, but the set holds {ipc} "
                        f"image(s) per class; fix or remove the description")


def run_origin(description):
    """What an evaluation record keeps of the run a set came from: its seed, method and iteration ({} if unknown)."""
    if not description:
        return {}
    run = description["run"]
    return {"condense_seed": run["seed"], "method": {**run["method"], "iteration": run["iteration"]}}


def load_set(path, nclass, channels, size):
    """Read a saved [data, targets] pair and check it fits the dataset; returns (data, ipc)."""
    obj = safe_load(path, "condensed set")
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2 and all(torch.is_tensor(t) for t in obj)):
        raise UserError(f"{path} is not a [data, targets] pair of tensors; pass a data_*.pt written by DANCE.py")
    data, targets = obj
    if data.dim() != 4 or tuple(data.shape[1:]) != (channels, size, size):
        raise UserError(f"{path} holds images of shape {tuple(data.shape[1:])}, the dataset needs "
                        f"{(channels, size, size)}; pass the set condensed for this dataset (-d)")
    if len(data) == 0 or len(data) % nclass or len(targets) != len(data):
        raise UserError(f"{path} holds {len(data)} images and {len(targets)} labels, not ipc images for "
                        f"each of the dataset's {nclass} classes; pass the set condensed for this dataset")
    ipc = len(data) // nclass
    if not torch.equal(targets.long().cpu(), torch.arange(nclass).repeat_interleave(ipc)):
        raise UserError(f"{path} is not class-major with {ipc} images per class; pass a set written by DANCE.py")
    if not torch.isfinite(data).all():
        raise UserError(f"{path} contains NaN or Inf pixels; use an earlier data_*.pt of that run")
    return checked_pixels(data.float(), path), ipc


def checked_pixels(data, path, warn=print):
    """[0, 1] pixels: float noise is clamped silently, a small overshoot with a warning, anything else refused."""
    lo, hi = float(data.min()), float(data.max())
    over = max(-lo, hi - 1.0)
    if over > PIXEL_LIMIT:
        raise UserError(f"{path} holds pixels in [{lo:.3g}, {hi:.3g}], not [0, 1]: a condensed set stores "
                        f"unnormalised [0, 1] pixels; divide 0-255 data by 255 or undo the normalisation first")
    if over > PIXEL_NOISE:
        warn(f"warning: {path} holds pixels in [{lo:.4f}, {hi:.4f}]; clamped to [0, 1] (the official code saves "
             f"its last update unclamped)")
    return data.clamp(0, 1)
