"""Everything a condensation run does besides the method: the start or resume of its set, and after each iteration
the finite watch, the stop every rank agrees on, the log, the periodic evaluation and saves, the checkpoint; at the
end the final set, its evaluation and the plot.

Iterations are numbered 1..niter everywhere (logs, files, messages): "iteration k" is the k-th update, and
data_{k}.pt / state.pt "after iteration k" hold the set once k iterations are done. The host reads the device only
at log, evaluation and checkpoint steps (the finite check included). Under torchrun every rank keeps the books of
its share of the classes, and rank 0 alone writes the files.
"""
import signal
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Optional

import torch
from tqdm import tqdm

from condense.run_folder import StopSignals
from data.set_files import at_iteration
from data.synthetic import SyntheticSet
from reports.plots import RUN_PLOT, plot_run
from reports.records import summary
from reports.trackers import Trackers, open_trackers
from training.recipe import Recipe
from training.set_accuracy import evaluate_set
from utils import preserved_rng, save_grid

LOG_EVERY = 20


class StepClock:
    """Seconds per condensation iteration from the steps alone: the time between the end of one iteration's books
    (log, evaluation, checkpoint) and the end of the next step, leaving out the session's first step (it compiles and
    warms up) once a later one is timed."""

    def start(self, now):
        self.mark, self.first, self.total, self.count = now, None, 0.0, 0

    def step_done(self, first):
        seconds = time.time() - self.mark
        if first:
            self.first = seconds
        else:
            self.total, self.count = self.total + seconds, self.count + 1

    def books_done(self):
        self.mark = time.time()

    def per_step(self):
        return self.total / self.count if self.count else self.first


@dataclass(frozen=True)
class Schedule:
    """How long the run is and how often it evaluates and checkpoints (0: never, but at the end)."""
    niter: int
    eval_every: int = 0
    ckpt_every: int = 0


@dataclass(frozen=True)
class PeriodicEvaluation:
    """How the set is scored every eval_every iterations: `runs` fresh networks of `network` trained with `recipe`,
    tested on `test`; the score that picks data_best.pt is their accuracy on `val` (select_by 'val') or `test`."""
    test: object
    val: Optional[object]
    network: dict
    recipe: Recipe
    runs: int = 1
    parallel: int = 0
    seed: int = 0
    select_by: str = "test"


def save_set_grid(synset, class_names, path, per_class=10, classes=20):
    """The stored images as a PNG, one row per class (its first `per_class` images) labelled with the class name,
    for the first `classes` classes; returns the picture (for the trackers)."""
    per = min(synset.ipc, per_class)
    rows = synset.data.detach()[:synset.nclass * synset.ipc].view(synset.nclass, synset.ipc, *synset.data.shape[1:])
    names = list(class_names or range(synset.nclass))[:classes]
    return save_grid(rows[:classes, :per].flatten(0, 1), path, nrow=per, max_images=per * classes, labels=names)


def whole_set(synset, world):
    """The set of every class: this process's under one process, else every rank's share gathered."""
    if world.size == 1:
        return synset
    data = torch.cat(world.gather(synset.data.detach().cpu()))
    return SyntheticSet(len(data) // synset.ipc, synset.ipc, data.shape[1], data.shape[2], synset.factor,
                        synset.decode_type, synset.data.device, data=data)


def total_losses(world, inner, inter):
    """The losses summed over every rank's classes, read on the host (at log steps only)."""
    return [sum(parts) for parts in zip(*world.gather((float(inner), float(inter))))]


class Bookkeeping:
    """The books of one run (a condense.run_folder.Run): `start` the set, then `with books:` (a progress bar, and
    SIGINT/SIGTERM stop the run after the iteration in progress, on every rank together) `after_iteration(k, ...)`
    for k in `remaining()`, then `finish()`."""

    def __init__(self, run, world, info, schedule, evaluation, description, iter_calib):
        """`description`: the run's set description (data/set_files.describe_run); `iter_calib`: calibration
        sweeps per iteration, by which the logged calibration loss is averaged."""
        self.run, self.world, self.info, self.schedule = run, world, info, schedule
        self.evaluation, self.description, self.iter_calib = evaluation, description, iter_calib
        self.log = run.log
        self.done, self.best, self._started = 0, -1.0, None
        self.steps = StepClock()
        self.track = Trackers()  # --logger's trackers, opened by `start`

    def start(self, synset, optimizer, sampler, init, learned=None):
        """Put the set where the run stands: a resumed run's saved share with its momentum, real-image streams,
        random streams and `learned` objects (name -> object with state_dict, saved in every checkpoint), else `init`
        from the real images (saved as data_0.pt). False if the run already finished."""
        self.synset, self.optimizer, self.sampler, self.learned = synset, optimizer, sampler, learned or {}
        rows = slice(synset.first_class * synset.ipc, (synset.first_class + synset.nclass) * synset.ipc)
        initial_grid = None
        if self.run.state is not None:
            with torch.no_grad():
                synset.data.copy_(self.run.state["data"][rows])
        else:
            synset.init(init, sampler)
            initial = whole_set(synset, self.world)
            if self.world.main:
                initial.save(self.run.path("data_0.pt"), at_iteration(self.description, 0))
                initial_grid = save_set_grid(initial, self.info.class_names, self.run.path("init.png"))
        self.done, self.best = self.run.restore(optimizer, sampler, rows, self.learned)
        if self.run.finished:
            self.log(f"{self.run.folder} already finished its {self.schedule.niter} iterations; pass a larger --niter "
                     f"to continue it")
            return False
        self.open_trackers()
        if initial_grid is not None:
            self.track.image("synthetic_set", initial_grid, 0)
        return True

    def open_trackers(self):
        """--logger's trackers (rank 0), on the run's iteration axis. A resumed run appends to the same TensorBoard
        folder and W&B run; TensorBoard drops the steps after the checkpoint it resumes from, which a killed session
        may have logged and this one logs again."""
        settings = self.run.settings
        purge = None
        if settings.get("resume") is not None:  # a run killed before its first checkpoint restarts from scratch
            purge = self.done + 1 if self.run.state is not None else 0
        self.track = open_trackers(settings.get("logger"), self.run.folder, self.world, settings, purge_step=purge,
                                   keep_id=True, say=self.log)

    def remaining(self):
        """The iterations left to run."""
        return range(self.done + 1, self.schedule.niter + 1)

    def __enter__(self):
        self._started, self._exit = time.time(), ExitStack()
        self.steps.start(self._started)
        self._stop = self._exit.enter_context(StopSignals())
        self._bar = self._exit.enter_context(tqdm(total=self.schedule.niter, initial=self.done, desc="condense",
                                                  unit="it", dynamic_ncols=True,
                                                  disable=None if self.world.main else True))
        if self.world.main:
            self.log.echo = self._bar.write
        return self

    def __exit__(self, *exc):
        self._exit.__exit__(*exc)
        if exc[0] is not None:  # a stop or an error: what the trackers hold so far is kept
            self.track.close()
        if self.world.main:
            self.log.echo = print

    def after_iteration(self, k, inner, inter, calibrated):
        """Iteration k's books: `inner` and `inter` are its summed losses (device scalars or 0.0), `calibrated` whether
        the expert calibrated."""
        run, schedule = self.run, self.schedule
        self.steps.step_done(first=k == self.done + 1)
        run.watch_finite(self.synset.data, inner + inter, k)
        self._bar.update()
        stopping = self.world.any(self._stop.signum is not None)
        log_step = k % LOG_EVERY == 0 or k == schedule.niter or k == self.done + 1
        evaluate = bool(schedule.eval_every) and k % schedule.eval_every == 0
        checkpoint = bool(schedule.ckpt_every) and k % schedule.ckpt_every == 0
        if log_step or stopping or evaluate or checkpoint:
            run.check_finite()
        if log_step:
            self._log_losses(k, inner, inter, self.iter_calib if calibrated else 0)
        if evaluate:
            self.save_and_evaluate(k)
        if stopping or checkpoint:
            run.checkpoint(k, self.synset, self.optimizer, self.sampler, self.best,  # --resume continues from here
                           learned=self.learned)
        if stopping:
            run.stop(self._stop.signum or signal.SIGTERM, k)
        self.steps.books_done()

    def _log_losses(self, k, inner, inter, calib):
        """The losses per class (and per calibration sweep), summed over the ranks; the time per iteration."""
        niter, nclass = self.schedule.niter, self.info.nclass
        inner, inter = total_losses(self.world, inner, inter)
        inner, inter = inner / nclass, inter / nclass / max(calib, 1)
        per_it = self.steps.per_step()
        self._bar.set_postfix(inner=f"{inner:.4f}", calib=f"{inter:.4f}")
        self.log(f"iteration {k}/{niter}: inner loss {inner:.4f}, calibration loss {inter:.4f} "
                 f"({per_it:.3f} s/iter, {per_it * (niter - k) / 60:.1f} min left)")
        self.log.metrics(iter=k, inner=inner, calibration=inter, sec_per_iter=per_it)
        self.track.scalars({"loss/inner": inner, "loss/calibration": inter, "time/sec_per_iter": per_it,
                            "lr/images": self.optimizer.param_groups[0]["lr"]}, k)

    def save_and_evaluate(self, k):
        """Save the set after iteration k; with periodic evaluations on, evaluate it and keep data_best.pt by the
        selection score."""
        run, world, ev, log = self.run, self.world, self.evaluation, self.log
        description = at_iteration(self.description, k)
        whole = whole_set(self.synset, world)
        if world.main:
            whole.save(run.path(f"data_{k}.pt"), description)
            grid = save_set_grid(whole, self.info.class_names, run.path(f"img{k}.png"))
            self.track.image("synthetic_set", grid, k)
        if not self.schedule.eval_every:
            return
        split_name = "held-out" if ev.val is not None else "test"
        log(f"iteration {k}: evaluating the set ({ev.runs} network(s), {ev.recipe.epochs} epochs, selection on the "
            f"{split_name} split)")
        images, labels = whole.decoded()
        with preserved_rng():  # evaluation never changes the condensation's random streams
            result = evaluate_set(images, labels, ev.test, self.info, ev.network, ev.recipe, self.synset.data.device,
                                  ev.runs, seed=ev.seed + k, log=lambda m: None, val=ev.val, parallel=ev.parallel,
                                  world=world)
        if result["diverged"]:
            log(f"iteration {k}: warning: evaluation run(s) {result['diverged']} diverged (NaN or Inf loss); their "
                f"accuracy is chance: lower --lr")
        score = statistics.mean(result["val"]) if ev.val is not None else result["mean"]
        log(f"iteration {k}: {ev.select_by} acc {score:.2f}; test {summary(result)} ({result['seconds']:.0f} s)")
        log.metrics(iter=k, select_acc=score, test_acc=result["mean"], test_std=result["std"],
                    test_best_check=result["best_mean"])
        self.track.scalars({"eval/select_acc": score, "eval/test_acc": result["mean"], "eval/test_std": result["std"]},
                           k)
        if score > self.best:
            self.best = score
            if world.main:
                whole.save(run.path("data_best.pt"), at_iteration(self.description, k, selected_by=ev.select_by))
            log(f"iteration {k}: new best {ev.select_by} acc {self.best:.2f}, saved data_best.pt")

    def finish(self):
        """The final set: checked, clamped as saved, saved and evaluated (unless iteration niter just was), the last
        state.pt, and the run's curves drawn."""
        niter, eval_every = self.schedule.niter, self.schedule.eval_every
        try:
            self.run.check_finite()
            with torch.no_grad():
                self.synset.data.clamp_(0, 1)
            if not (eval_every and niter % eval_every == 0) or niter == 0:
                self.save_and_evaluate(niter)
            self.run.checkpoint(niter, self.synset, self.optimizer, self.sampler, self.best, final=True,
                                learned=self.learned)
        finally:
            self.track.close()
        if self.world.main:
            plot_run(self.run.folder)
        self.run.release()
        self.log(f"done: {niter - self.done} iterations in {time.time() - self._started:.0f} s; results in "
                 f"{self.run.folder} (the final set: data_{niter}.pt; losses and accuracies drawn in {RUN_PLOT})")
