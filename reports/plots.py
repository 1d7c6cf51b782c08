"""Pictures of results: a condensation run's curves (plot_run) and accuracy against IPC from a results file
(plot_summary). matplotlib is imported where used, through its object API with the Agg canvas, so drawing never
touches pyplot's global state or needs a display; PNGs are written atomically."""
import io
import json
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


FORMATS = (".png", ".pdf", ".svg")  # a picture's format follows its file name


def picture_format(path, flag="--plot"):
    """The format `path`'s extension names; any other extension is refused."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise UserError(f"{flag} {path}: the file name must end in {', '.join(FORMATS)} (the format follows it); "
                        f"e.g. {os.path.splitext(path)[0]}.png")
    return ext[1:]


def _save(fig, path):
    """Render `fig` in the format its file name names and write it atomically; returns `path`."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format=picture_format(path))
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


# What makes two evaluations of one dataset different experiments (beyond the ipc on the x axis): never pooled
SERIES_FIELDS = ("method", "factor", "decode_type", "labels", "teacher", "network_config", "protocol")


def _settings(entry):
    """Every setting of SERIES_FIELDS as flat name -> value (nested dicts by their innermost key)."""
    flat = {}

    def walk(name, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(key, inner)
        else:
            flat.setdefault(name, json.dumps(value, sort_keys=True, default=str))

    for field in SERIES_FIELDS:
        walk(field, entry.get(field))
    return flat


def summary_series(entries):
    """{dataset: {label: {ipc or None (whole training set): [final accuracies]}}}: repeated evaluations of one key
    count once (the latest) and condensation seeds of one experiment pool their runs, but evaluations at one ipc that
    differ in any setting (method switches, experts, labels and teacher, network, protocol) are never pooled: their
    label carries the settings that tell them apart, and each becomes its own line."""
    latest = {}
    for e in entries:
        latest[e.get("key") or id(e)] = e  # the last record of an evaluation is its complete one
    out = {}
    for dataset in sorted({e["dataset"] for e in latest.values()}):
        by_base = {}
        for e in latest.values():
            if e["dataset"] == dataset:
                base = f"whole training set, {e['network']}" if is_whole_set(e) else method_label(e)
                point = None if is_whole_set(e) else e["ipc"]
                by_base.setdefault(base, []).append((point, _settings(e), e["final"]))
        series = {}
        for base, members in sorted(by_base.items()):
            split = set()  # settings that differ between evaluations at one point
            for point in {p for p, _, _ in members}:
                here = [settings for p, settings, _ in members if p == point]
                split |= {k for k in set().union(*here) if len({settings.get(k) for settings in here}) > 1}
            for point, settings, finals in members:
                label = base + "".join(f", {k} {settings.get(k)}" for k in sorted(split))
                series.setdefault(label, {}).setdefault(point, []).extend(finals)
        out[dataset] = series
    return out


def plot_summary(entries, path):
    """Draw test accuracy (mean +- std of the pooled runs) against ipc, one panel per dataset and one line per
    experiment (summary_series); whole-training-set evaluations are dashed level lines. Returns `path`."""
    picture_format(path)
    panels = summary_series(entries)
    fig, axes = _figure(1, len(panels), 5.5 * len(panels), 4.2)
    for ax, (dataset, all_series) in zip(axes, panels.items()):
        series = {label: points for label, points in all_series.items() if None not in points}
        levels = {label: points[None] for label, points in all_series.items() if None in points}
        ipcs = sorted({ipc for points in series.values() for ipc in points})
        for label, points in sorted(series.items()):
            xs = sorted(points)
            ax.errorbar(xs, [statistics.mean(points[x]) for x in xs], yerr=[statistics.pstdev(points[x]) for x in xs],
                        marker="o", capsize=3, label=label)
        for label, accs in sorted(levels.items()):
            ax.axhline(statistics.mean(accs), linestyle="--", color="gray", label=label)
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
