"""Evaluation records: one JSON line per evaluation, finished runs kept as they go, summary tables."""
import hashlib
import json
import os
import statistics

from reports.dd_ranking import score_table
from utils import UserError

RECORD_KEYS = ("set", "dataset", "ipc", "factor", "network", "final", "mean", "std", "best_mean")


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


def latest_record(results, key, runs=1):
    """The last evaluation recorded in `results` under `key` with at least `runs` runs, or None."""
    found = [e for e in read_lines(results) if e.get("key") == key and len(e.get("final", ())) >= runs]
    return found[-1] if found else None


def record_run(results, key, run, final, best):
    """Keep one finished run, so an interrupted evaluation continues with the missing ones."""
    _append(runs_path(results), {"key": key, "run": run, "final": final, "best": best})


def record_evaluation(results, entry):
    """Append the whole evaluation's line to the results file."""
    _append(results, entry)


def summary(result):
    """One line: mean +- std of the final accuracy, and the reference-style best figure."""
    return (f"final acc {result['mean']:.2f} +- {result['std']:.2f} over {len(result['final'])} runs  "
            f"[reference-style best over test checks: {result['best_mean']:.2f}]")


def condensation_method(entry):
    """How a described set was condensed: DANCE or DM (no experts), with its alignment when not the mean; None for a
    set without a description or a real-image baseline."""
    method = entry.get("method")
    if method is None:
        return None
    name = "DM" if method.get("num_premodel") == 0 else "DANCE"
    align = method.get("align", "mean")  # sets from before --align matched means
    return name if align == "mean" else f"{name} ({align})"


def network_name(entry):
    """The network as a table names it: its name and, when recorded, its width (convnet-3 w0.25)."""
    width = (entry.get("network_config") or {}).get("config", {}).get("width")
    return entry["network"] + (f" w{width:g}" if isinstance(width, (int, float)) else "")


def epochs_of(entry):
    """The evaluation's training epochs, when recorded ('-' for records from before they were)."""
    return (entry.get("protocol") or {}).get("epochs", "-")


def summary_table(entries):
    """Markdown table of evaluation records."""
    lines = ["| set | method | dataset | ipc | factor | network | epochs | runs | final acc | best check (reference) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        network = network_name(e) + (" (soft labels)" if e.get("labels") == "soft" else "")
        lines.append(f"| {e['set']} | {condensation_method(e) or '-'} | {e['dataset']} | {e['ipc']} | {e['factor']} | "
                     f"{network} | {epochs_of(e)} | {len(e['final'])} | {e['mean']:.2f} +- {e['std']:.2f} | "
                     f"{e['best_mean']:.2f} |")
    return "\n".join(lines)


def group_key(entry):
    """What makes two evaluations the same experiment up to the condensation seed (None: not groupable)."""
    method = entry.get("method")
    if method is None:
        return None
    return json.dumps({"method": method, "dataset": entry["dataset"], "ipc": entry["ipc"], "factor": entry["factor"],
                       "network": entry.get("network_config"), "protocol": entry.get("protocol")}, sort_keys=True)


def seed_table(entries):
    """Markdown table over condensation seeds: sets condensed alike but for --seed, one mean per set."""
    groups = {}
    for e in entries:
        key = group_key(e)
        if key is not None:
            groups.setdefault(key, {})[e["condense_seed"]] = e  # the latest evaluation of each seed
    rows = [g for g in groups.values() if len(g) > 1]
    if not rows:
        return ""
    lines = ["| sets (first) | method | dataset | ipc | factor | network | epochs | condensation seeds | "
             "mean of set means |", "|---|---|---|---|---|---|---|---|---|"]
    for group in rows:
        seeds = sorted(group)
        means = [group[s]["mean"] for s in seeds]
        e = group[seeds[0]]
        lines.append(f"| {e['set']} | {condensation_method(e)} | {e['dataset']} | {e['ipc']} | {e['factor']} | "
                     f"{network_name(e)} | {epochs_of(e)} | {', '.join(map(str, seeds))} | "
                     f"{statistics.mean(means):.2f} +- {statistics.pstdev(means):.2f} |")
    return "\n".join(lines)


def read_records(path, what):
    """Every evaluation record of a results file; a line that is not one is a UserError naming it."""
    entries = []
    with open(path) as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
            if number == len(lines) and not line.endswith("\n") and line.startswith("{"):
                raise UserError(f"{what}: the last line of {path} was cut short (a write that stopped midway); the "
                                f"{len(entries)} record(s) before it are intact: delete that line (sed -i '$d' "
                                f"{path}) and go on") from None
        if not isinstance(entry, dict) or not all(k in entry for k in RECORD_KEYS):
            raise UserError(f"{what}: line {number} of {path} is not an evaluation record; pass the results file "
                            f"evaluate.py wrote (not its .runs file or another JSON-lines file)")
        entries.append(entry)
    return entries


def check_results_file(path):
    """Refuse up front to append to a file that is not an evaluation results file (--summarize would refuse it)."""
    if os.path.isfile(path):
        read_records(path, "--results")


def load_results(path):
    """Every evaluation record of the results file --summarize names; a missing, empty or foreign file is refused."""
    if os.path.isdir(path):
        raise UserError(f"--summarize: {path} is a folder; pass the results file evaluate.py wrote, e.g. "
                        f"{os.path.join(path, 'evaluations.jsonl')}")
    if not os.path.isfile(path):
        raise UserError(f"--summarize: {path} does not exist; pass the results file evaluate.py wrote")
    entries = read_records(path, "--summarize")
    if not entries:
        raise UserError(f"--summarize: {path} holds no evaluation; run evaluate.py first")
    return entries


def summarize(path):
    """The tables of everything recorded in a results file: every evaluation, across condensation seeds, and the
    DD-Ranking scores of the sets evaluated with --score."""
    entries = load_results(path)
    seeds, scores = seed_table(entries), score_table(entries)
    return (summary_table(entries) + (f"\n\nAcross condensation seeds (std over seeds):\n{seeds}" if seeds else "")
            + (f"\n\nDD-Ranking scores (fractions, mean +- std over runs; evaluate.py --score):\n{scores}"
               if scores else ""))
