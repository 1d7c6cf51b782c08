"""Evaluation records: one JSON line per evaluation, finished runs kept as they go, a summary table."""
import hashlib
import json
import os

from utils import UserError


def runs_path(results):
    """Where finished runs are kept, beside the results file (results/evaluations.runs.jsonl)."""
    root, ext = os.path.splitext(results)
    return f"{root}.runs{ext or '.jsonl'}"


def evaluation_key(description):
    """A stable id of one evaluation (set, data, network, protocol, seed)."""
    return hashlib.sha1(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _append(path, entry):
    """Append one JSON line; a line is written whole or not at all by a single write."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(entry, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise UserError(f"could not append to {path}: {e.strerror}; pass another --results")


def read_lines(path):
    """Every complete JSON line of a file (a torn last line from a crash is skipped)."""
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def finished_runs(results, key):
    """{run index: (final, best)} recorded for this evaluation by an earlier, interrupted call."""
    return {e["run"]: (e["final"], e["best"]) for e in read_lines(runs_path(results)) if e.get("key") == key}


def record_run(results, key, run, final, best):
    """Keep one finished run, so an interrupted evaluation continues with the missing ones."""
    _append(runs_path(results), {"key": key, "run": run, "final": final, "best": best})


def record_evaluation(results, entry):
    """Append the whole evaluation's line to the results file."""
    _append(results, entry)


def summary_table(entries):
    """Markdown table of evaluation records."""
    lines = ["| set | dataset | ipc | factor | network | runs | final acc | best check (reference) |",
             "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        lines.append(f"| {e['set']} | {e['dataset']} | {e['ipc']} | {e['factor']} | {e['network']} | "
                     f"{len(e['final'])} | {e['mean']:.2f} +- {e['std']:.2f} | {e['best_mean']:.2f} |")
    return "\n".join(lines)


def summarize(path):
    """The table of everything recorded in a results file."""
    if not os.path.isfile(path):
        raise UserError(f"--summarize: {path} does not exist; pass the results file evaluate.py wrote")
    entries = read_lines(path)
    if not entries:
        raise UserError(f"--summarize: {path} holds no evaluation; run evaluate.py first")
    return summary_table(entries)
