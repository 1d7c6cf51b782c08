"""A condensation run's folder: its settings, log, state.pt checkpoints and --resume, signals, finite checks.

Iterations are numbered 1..niter everywhere (logs, files, messages): "iteration k" is the k-th update, and
data_{k}.pt / state.pt "after iteration k" hold the set once k iterations are done.
"""
import atexit
import glob
import json
import os
import re
import signal
import socket
import threading

import torch

from data.set_files import RESULT_NEUTRAL, changed_settings
from utils import (Logger, RunStopped, UserError, atomic_save, atomic_write_json, git_revision, make_dir,
                   read_json, remove_stale_temps, rng_state, safe_load, set_rng_state)

STATE = "state.pt"
LOCK = "run.lock"  # held by the live process that writes the folder (rank 0)
STATE_FORMAT = 2  # 2: per-class streams keyed by seed and iteration, the momentum as one tensor (2026-12-03)
STATE_KEYS = {"format", "next_iter", "done", "data", "momentum", "sampler", "best", "rng", "args"}
# Settings --resume may change: those that change no result, and niter (no schedule depends on it, so it may grow,
# or shrink down to the iterations done). With another device, bit-identity holds only on the same kind of device.
RESUMABLE = RESULT_NEUTRAL | {"niter"}


def refuse_used_folder(folder, resume):
    """A new run never writes into a folder that already holds condensed sets (checked before any work)."""
    if not resume and glob.glob(os.path.join(folder, "data_*.pt")):
        raise UserError(f"{folder} already holds a condensation run; pass a new --save_dir or --resume {folder}")


def load_state(folder, settings):
    """The state.pt of the run being resumed, checked against its `settings`; None if it has none yet."""
    path = os.path.join(folder, STATE)
    if not os.path.exists(path):
        return None
    try:
        state = safe_load(path, "run state")
        if not (isinstance(state, dict) and {"next_iter", "args"} <= state.keys()):
            raise UserError("not a state.pt")
    except UserError:
        raise UserError(f"--resume: {path} is unreadable; delete it to restart the run from iteration 1") from None
    if state.get("format") != STATE_FORMAT or not STATE_KEYS <= state.keys():
        raise UserError(f"--resume: {path} was written by an earlier DANCE.py, whose random streams differ, so it "
                        f"cannot continue exactly; finish it with the version that started it (git revision in "
                        f"{folder}/log.txt) or start a new run")
    # a setting the run's code did not have yet is taken at the value it resolves to now (its default)
    changed, done = changed_settings({**settings, **state["args"]}, settings, RESUMABLE), state["next_iter"]
    if changed:
        raise UserError(f"--resume: {path} was written with other settings ({', '.join(changed)}); restore "
                        f"{folder}/args.json or start a new run")
    if done > settings["niter"]:
        raise UserError(f"--resume: the run has done {done} iterations, more than --niter {settings['niter']}; "
                        f"pass --niter {done} or more")
    return state


def _process_start(pid):
    """The start time of process `pid` (clock ticks since boot, Linux), None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(owner):
    """True while the process that wrote lock `owner` ({pid, host, start}) still runs (on this host)."""
    if owner.get("host") != socket.gethostname():
        return True  # another machine's process: assume it runs (the folder is shared)
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by another user
    start = _process_start(pid)
    return start is None or owner.get("start") is None or start == owner["start"]  # else a reused pid


def lock_folder(folder):
    """Take `folder`'s run.lock for this process, or refuse while a live process holds it. A lock left by a killed
    process (or by this one) is taken over; the lock file is created exclusively, so two starts cannot both win.
    Returns a function that releases it."""
    path = os.path.join(folder, LOCK)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid())}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = read_json(path) or {}
            except UserError:
                owner = {}  # a lock cut short by a kill
            if owner.get("pid") != me["pid"] and _alive(owner):
                elsewhere = "" if owner.get("host") == me["host"] else (
                    f"; if it is gone (killed on that machine, which this one cannot check), delete {path}")
                raise UserError(f"{folder} is in use by process {owner.get('pid')} on {owner.get('host')} (its "
                                f"{LOCK}); wait for that run to end, or pass another --save_dir{elsewhere}") from None
            os.remove(path)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)

        def release():
            try:
                if (read_json(path) or {}).get("pid") == me["pid"]:
                    os.remove(path)
            except (OSError, UserError):
                pass
        return release
    raise UserError(f"could not take {path}; another run is starting in {folder}: pass another --save_dir")


class Run:
    """One condensation run's folder: created here (after every input was checked), logged, checkpointed.

    Under torchrun every rank reads (the state to resume), and rank 0 alone creates and writes; `log` is quiet
    on the other ranks.
    """

    def __init__(self, folder, settings, resume, world, shape):
        """`settings`: the run's resolved settings (written to args.json, compared on --resume); `shape`: the
        storage of the whole set (nclass * ipc, channels, size, size), which a resumed state.pt must hold."""
        self.folder, self.settings, self.world = folder, settings, world
        refuse_used_folder(folder, resume)
        self.state = load_state(folder, settings) if resume else None
        if self.state is not None:
            self.check_state(shape)  # before anything in the folder is written
        world.barrier()  # every rank has read the folder before rank 0 writes to it
        self.release = lambda: None
        if world.main:
            make_dir(self.folder, "--save_dir")
            self.release = lock_folder(self.folder)
            atexit.register(self.release)
            if resume:
                remove_stale_temps(self.folder)  # a write the kill interrupted; its target file is intact
            self.log = Logger(self.folder)
            atomic_write_json(settings, os.path.join(self.folder, "args.json"))
        else:
            self.log = Logger()
            self.log.echo = lambda line: None
        self.saved = self.state["next_iter"] if self.state else None  # the iteration state.pt is after
        self._first_bad = None  # device scalar: the first iteration with NaN/Inf, -1 while none
        if resume and self.state is None:
            self.log(f"no {STATE} in {self.folder} (stopped before its first checkpoint): restarting from "
                     f"iteration 1")

    def path(self, name):
        return os.path.join(self.folder, name)

    @property
    def finished(self):
        """True when state.pt says the run already did all of --niter."""
        return bool(self.state and self.state["done"] and self.state["next_iter"] == self.settings["niter"])

    def check_state(self, shape):
        """Refuse a state.pt that cannot continue this run, before any of it is used: its set or momentum is not
        `shape` (all classes' storage) or holds NaN or Inf, or a per_class run would continue on another number of
        processes (its momentum steps once per class of each process's share: another schedule)."""
        path, state = os.path.join(self.folder, STATE), self.state
        ran_on = state.get("processes", 1)
        if self.settings.get("update") == "per_class" and ran_on != self.world.size:
            again = (f"torchrun --nproc_per_node {ran_on} DANCE.py" if ran_on > 1 else "python DANCE.py")
            raise UserError(f"--resume: this --update per_class run ran on {ran_on} process(es), and its momentum "
                            f"steps once per class of each process's share, so {self.world.size} would continue "
                            f"another schedule; resume it on {ran_on} ({again} --resume {self.folder})")
        saved = [int(n[5:-3]) for n in os.listdir(self.folder) if re.fullmatch(r"data_\d+\.pt", n)]
        fresh = "start a new run with a new --save_dir" + (
            f" (this run's last saved set, {os.path.join(self.folder, f'data_{max(saved)}.pt')}, stays as it is)"
            if saved else "")
        for name in ("data", "momentum"):
            value = state[name]
            if value is None and name == "momentum":
                continue
            if not torch.is_tensor(value) or tuple(value.shape) != tuple(shape):
                found = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
                raise UserError(f"--resume: {path} holds a {name} of shape {found}, not the {tuple(shape)} this run's "
                                f"settings make; it belongs to another run or is damaged: {fresh}")
            if not torch.isfinite(value).all():
                raise UserError(f"--resume: {path} holds NaN or Inf in its {name}, so it cannot continue the run: "
                                f"{fresh}")

    def restore(self, optimizer, sampler, rows, learned=None):
        """Put this rank's share back (momentum `rows` of the set, real-batch streams), the random streams and the
        state of every `learned` object besides the set (name -> state_dict/load_state_dict, e.g. NCFM's sampling
        network); returns (iterations done, best score)."""
        if self.state is None:
            return 0, -1.0
        for name, thing in (learned or {}).items():
            thing.load_state_dict(self.state["learned"][name])
        momentum = self.state["momentum"]
        if momentum is not None:
            param = optimizer.param_groups[0]["params"][0]
            optimizer.state[param]["momentum_buffer"] = momentum[rows].to(param.device)
        sampler.load_state_dict(self.state["sampler"])
        set_rng_state(self.state["rng"])
        self.log(f"resuming after iteration {self.state['next_iter']} from {self.path(STATE)}")
        return self.state["next_iter"], self.state["best"]

    def checkpoint(self, done, synset, optimizer, sampler, best, final=False, learned=None):
        """Write everything the loop needs to continue after iteration `done` to state.pt, atomically: every
        rank's share gathered, by class, so any number of processes can continue it; `learned` objects (the same on
        every rank) as rank 0 holds them."""
        param = optimizer.param_groups[0]["params"][0]
        momentum = optimizer.state.get(param, {}).get("momentum_buffer")
        shares = self.world.gather((synset.data.detach().cpu(), None if momentum is None else momentum.cpu(),
                                    sampler.state_dict()))
        if self.world.main:
            momenta = [m for _, m, _ in shares]
            passes = {c: p for _, _, s in shares for c, p in s["passes"].items()}
            atomic_save({"format": STATE_FORMAT, "next_iter": done, "done": final,
                         "data": torch.cat([d for d, _, _ in shares]),
                         "momentum": None if momenta[0] is None else torch.cat(momenta),
                         "sampler": {"passes": passes}, "best": best, "rng": rng_state(), "args": self.settings,
                         "processes": self.world.size,
                         "learned": {name: thing.state_dict() for name, thing in (learned or {}).items()}},
                        self.path(STATE))
        self.world.barrier()  # no rank goes on (or exits) before the state is written
        self.saved = done

    def watch_finite(self, data, loss, iteration):
        """Note on the device the first iteration whose synthetic data or loss holds NaN or Inf (no host read)."""
        bad = ~torch.isfinite(data.detach().sum() + loss)
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=data.device)
        self._first_bad.masked_fill_(bad & (self._first_bad < 0), iteration)

    def check_finite(self):
        """At a step that reads the device anyway: stop with a UserError if a watched iteration went bad (on any
        rank: every rank stops).

        Called before every save, so no state.pt or data_*.pt ever holds NaN.
        """
        mine = -1 if self._first_bad is None else int(self._first_bad)
        bad = [i for i in self.world.gather(mine) if i >= 0]
        if not bad:
            return
        iteration = min(bad)
        last = (f"its last good checkpoint, {self.path(STATE)} (after iteration {self.saved}), is intact"
                if self.saved is not None else f"no checkpoint was written yet ({self.path('data_0.pt')} is "
                                               f"the initial set)")
        raise UserError(f"iteration {iteration}: NaN or Inf in the synthetic data or a loss, the run stopped; {last}; "
                        f"lower --lr_img and start a new run with a new --save_dir (or --resume {self.folder} if the "
                        f"fault was transient)")

    def stop(self, signum, iteration):
        """End the run after a signal; state.pt was just written."""
        name = signal.Signals(signum).name
        self.log(f"{name}: stopped after iteration {iteration}, state saved")
        raise RunStopped(f"{name}: state after iteration {iteration} saved to {self.path(STATE)}; continue with: "
                         f"python DANCE.py --resume {self.folder}", signum)


class StopSignals:
    """Within the block, SIGINT and SIGTERM only set `signum`, for a loop to stop at a safe point.

    A second signal stops at once (KeyboardInterrupt), for someone who cannot wait for the safe point.
    Outside the main thread, where Python delivers no signals, it does nothing.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum, self._previous = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        # os.write, not print: a handler may run while the main code is inside a print to the same stream
        os.write(2, f"{signal.Signals(signum).name}: saving the state at the end of this iteration, then "
                    f"stopping (send it again to stop at once)\n".encode())
