"""Experiment trackers (--logger): TensorBoard and Weights & Biases, behind one small interface.

The scripts call `open_trackers(...)` once and then `scalars`, `image`, `settings` and `close` on what it returns;
with no --logger (the default) that is a no-op. Only rank 0 of a torchrun job tracks (it alone writes files). A
tracker only mirrors what a run already logs: the values are host numbers read where the run reads them anyway.

    python DANCE.py ... --logger tensorboard      # then: tensorboard --logdir results/condense
    WANDB_MODE=offline python DANCE.py ... --logger wandb    # then: wandb sync <run>/wandb/offline-run-*
"""
import importlib.util
import json
import netrc
import os

import numpy as np

from utils import UserError, atomic_write_text

TRACKERS = ("tensorboard", "wandb")
WANDB_ID = "wandb_run_id.txt"  # the W&B run id of a run folder, so a resumed run continues the same W&B run
WANDB_PROJECT = "dance"


def require(names):
    """Refuse a --logger whose package is not installed: one line naming the package and the install command."""
    for name in dict.fromkeys(names or []):
        if importlib.util.find_spec(name) is None:
            raise UserError(f"--logger {name} needs the {name} package: pip install {name}")


class Trackers:
    """Every tracker of one run; each call goes to all of them (none: nothing happens)."""

    def __init__(self, trackers=()):
        self.trackers = list(trackers)

    def __bool__(self):
        return bool(self.trackers)

    def scalars(self, values, step, axis="iteration"):
        """Log {name: number} at `step` of the x axis `axis` (e.g. iteration, epoch, expert, run)."""
        for t in self.trackers:
            t.scalars({k: float(v) for k, v in values.items()}, int(step), axis)

    def image(self, name, picture, step, axis="iteration"):
        """Log a PIL image (an image grid) at `step`."""
        for t in self.trackers:
            t.image(name, picture, int(step), axis)

    def settings(self, settings, step=0):
        """Log the run's resolved settings (flag -> value) once per start, at `step`."""
        for t in self.trackers:
            t.settings(settings, int(step))

    def close(self):
        """Flush and close every tracker (safe to call twice)."""
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            t.close()


class TensorBoard:
    """A SummaryWriter in `log_dir`; `purge_step` drops the events at and after it that an earlier, killed session
    left beyond its last checkpoint (the resumed session writes those steps again)."""

    def __init__(self, log_dir, purge_step=None):
        from torch.utils.tensorboard import SummaryWriter
        self.writer = SummaryWriter(log_dir=log_dir, purge_step=purge_step)

    def scalars(self, values, step, axis):
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def image(self, name, picture, step, axis):
        self.writer.add_image(name, np.asarray(picture.convert("RGB")), step, dataformats="HWC")

    def settings(self, settings, step):
        # as text: the settings hold lists and None, which add_hparams cannot take (and it writes a run of its own)
        text = json.dumps(settings, indent=2, sort_keys=True, default=str)
        self.writer.add_text("settings", "```\n" + text + "\n```", step)

    def close(self):
        self.writer.close()


def wandb_api_key_configured():
    """True when W&B has an API key here (WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc(os.environ.get("NETRC")).hosts
    except (OSError, netrc.NetrcParseError):
        return False
    return any("wandb" in host for host in hosts)


class WandB:
    """A W&B run under `folder` (its files in folder/wandb/). Its id is kept in folder/wandb_run_id.txt when
    `keep_id`, so a resumed run continues the same W&B run. Without an API key and without WANDB_MODE it runs
    offline (never the network; upload later with `wandb sync`). Each scalar is plotted against its own axis."""

    def __init__(self, folder, name, keep_id, say=print):
        import wandb
        mode = None
        if not os.environ.get("WANDB_MODE") and not wandb_api_key_configured():
            mode = "offline"
            say(f"wandb: no API key configured (WANDB_API_KEY or wandb login), so logging offline under "
                f"{os.path.join(folder, 'wandb')}; upload later with: wandb sync {os.path.join(folder, 'wandb')}/"
                f"offline-run-*")
        id_path = os.path.join(folder, WANDB_ID)
        run_id = None
        if keep_id and os.path.isfile(id_path):
            with open(id_path) as f:
                run_id = f.read().strip() or None
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", WANDB_PROJECT), name=name, dir=folder,
                              id=run_id, resume="allow" if keep_id else None, mode=mode,
                              settings=wandb.Settings(console="off"))  # the terminal stays the run's (tqdm)
        if keep_id and run_id is None:
            atomic_write_text(self.run.id + "\n", id_path)
        self.wandb, self.defined = wandb, set()

    def _axis(self, name, axis):
        """Plot `name` against `axis` (defined once per name), not W&B's own step counter."""
        if name not in self.defined:
            if axis not in self.defined:
                self.run.define_metric(axis)
                self.defined.add(axis)
            self.run.define_metric(name, step_metric=axis)
            self.defined.add(name)

    def scalars(self, values, step, axis):
        for name in values:
            self._axis(name, axis)
        self.run.log({**values, axis: step})

    def image(self, name, picture, step, axis):
        self._axis(name, axis)
        self.run.log({name: self.wandb.Image(picture), axis: step})

    def settings(self, settings, step):
        # the run's config; a resumed run may have changed result-neutral flags since it started
        self.run.config.update(settings, allow_val_change=True)

    def close(self):
        self.run.finish()


def open_trackers(names, folder, world, settings, name=None, tensorboard_dir=None, purge_step=None, keep_id=False,
                  say=print):
    """The trackers `names` (--logger) of a run writing in `folder`, on rank 0 only (other ranks: none).

    TensorBoard writes to `tensorboard_dir` (default folder/tensorboard) with `purge_step`; W&B runs under `folder`
    named `name`, keeping its id in the folder when `keep_id`. `settings` are logged once, at `purge_step` or 0."""
    names = list(dict.fromkeys(names or []))
    if not names or not world.main:
        return Trackers()
    require(names)
    os.makedirs(folder, exist_ok=True)
    trackers = []
    for tracker in names:
        if tracker == "tensorboard":
            trackers.append(TensorBoard(tensorboard_dir or os.path.join(folder, "tensorboard"), purge_step))
        elif tracker == "wandb":
            trackers.append(WandB(folder, name or os.path.basename(os.path.abspath(folder)), keep_id, say))
        else:
            raise UserError(f"--logger {tracker}: unknown; choose from: {', '.join(TRACKERS)}")
    result = Trackers(trackers)
    result.settings(settings, purge_step or 0)
    return result
