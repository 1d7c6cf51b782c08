"""Pictures of results: a condensation run's curves (plot_run) and accuracy against IPC from a results file
(plot_summary). matplotlib is imported where used, through its object API with the Agg canvas, so drawing never
touches pyplot's global state or needs a display; PNGs are written atomically."""
import io
import os
import statistics

from reports.records import condensation_method, read_lines
from utils import UserError, atomic_write_bytes

RUN_PLOT = "curves.png"


def _figure(rows, cols, width, height):
    """A matplotlib Figure on the Agg canvas and its axes (a flat list)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def _save(fig, path):
    """Render `fig` to PNG and write it atomically; returns `path`."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(buffer.getvalue(), path)
    return path


def read_metrics(folder):
    """The JSON lines of a run's metrics.jsonl (utils.Logger.metrics), in order; a torn last line is skipped."""
    path = os.path.join(folder, "metrics.jsonl")
    if not os.path.isfile(path):
        raise UserError(f"{folder} has no metrics.jsonl; pass the folder of a DANCE.py run (its --save_dir)")
    return read_lines(path)


def _latest_per_iteration(lines, key):
    """(iterations, rows) of the lines holding `key`, the last line of each iteration winning (a resumed run
    repeats the iterations it redoes)."""
    rows = {line["iter"]: line for line in lines if key in line and "iter" in line}
    its = sorted(rows)
    return its, [rows[k] for k in its]


def plot_run(folder, path=None):
    """Draw a DANCE.py run's inner-class and calibration losses and its periodic test accuracies (mean +- std over
    the evaluation networks, and the selection score when it differs) against the iteration; returns the PNG's path
    (default: curves.png in the run folder)."""
    path = path or os.path.join(folder, RUN_PLOT)
    lines = read_metrics(folder)
    fig, (losses, accs) = _figure(1, 2, 10, 3.8)
    its, rows = _latest_per_iteration(lines, "inner")
    losses.plot(its, [r["inner"] for r in rows], marker=".", label="inner-class (feature means)")
    losses.plot(its, [r["calibration"] for r in rows], marker=".", label="calibration (expert CE)")
    losses.set(xlabel="iteration", ylabel="loss per class", title="condensation losses")
    if rows and min(min(r["inner"], r["calibration"]) for r in rows) > 0:
        losses.set_yscale("log")
    its, rows = _latest_per_iteration(lines, "test_acc")
    if rows:
        mean = [r["test_acc"] for r in rows]
        std = [r.get("test_std", 0.0) for r in rows]
        accs.errorbar(its, mean, yerr=std, marker="o", capsize=3, label="test accuracy (mean +- std over networks)")
        if any(r.get("select_acc") != r["test_acc"] for r in rows):
            accs.plot(its, [r["select_acc"] for r in rows], marker="s", linestyle="--", label="selection score")
    else:
        accs.text(0.5, 0.5, "no periodic evaluation (--eval_every 0)", ha="center", va="center",
                  transform=accs.transAxes)
    accs.set(xlabel="iteration", ylabel="accuracy (%)", title="periodic evaluations")
    for ax in (losses, accs):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.normpath(folder)), fontsize=10)
    return _save(fig, path)


def method_label(entry):
    """What a results line evaluated, as a legend names it: DANCE or DM (a described set), a real-image baseline,
    or the random subsets of --score; with the factor when > 1, the labels when soft, and the network."""
    name = entry["set"]
    if name.startswith("baseline:"):
        label = f"{name.split(':', 1)[1]} (real)"
    elif name == "score:random":
        label = "random (real, redrawn per run)"
    elif "method" in entry:
        label = condensation_method(entry)
    else:
        label = "condensed"
    if entry.get("factor", 1) > 1 and not name.startswith("score:"):
        label += f" f{entry['factor']}"
    if entry.get("labels") == "soft":
        label += ", soft labels"
    return f"{label}, {entry['network']}"


def is_whole_set(entry):
    """True for an evaluation on the whole training set (drawn as a level line, not at an ipc)."""
    return entry["set"] in ("baseline:full", "score:full")


def plot_summary(entries, path):
    """Draw test accuracy (mean +- std of the pooled runs) against ipc, one panel per dataset and one line per
    method_label; repeated evaluations of one key count once (the latest), different sets of a method (condensation
    seeds) pool their runs. Whole-training-set evaluations are dashed level lines. Returns `path`."""
    latest = {}
    for e in entries:
        latest[e.get("key") or id(e)] = e  # the last record of an evaluation is its complete one
    datasets = sorted({e["dataset"] for e in latest.values()})
    fig, axes = _figure(1, len(datasets), 5.5 * len(datasets), 4.2)
    for ax, dataset in zip(axes, datasets):
        series, levels = {}, {}
        for e in latest.values():
            if e["dataset"] != dataset:
                continue
            target = levels if is_whole_set(e) else series.setdefault(method_label(e), {})
            target.setdefault(e["network"] if is_whole_set(e) else e["ipc"], []).extend(e["final"])
        ipcs = sorted({ipc for points in series.values() for ipc in points})
        for label, points in sorted(series.items()):
            xs = sorted(points)
            ax.errorbar(xs, [statistics.mean(points[x]) for x in xs], yerr=[statistics.pstdev(points[x]) for x in xs],
                        marker="o", capsize=3, label=label)
        for network, accs in sorted(levels.items()):
            ax.axhline(statistics.mean(accs), linestyle="--", color="gray", label=f"whole training set, {network}")
        if ipcs and ipcs[-1] >= 10 * ipcs[0]:
            ax.set_xscale("log")
        ax.minorticks_off()
        if ipcs:
            ax.set_xticks(ipcs)
            ax.set_xticklabels([str(i) for i in ipcs])
        ax.set(xlabel="images per class (stored)", ylabel="test accuracy (%)", title=dataset)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)
