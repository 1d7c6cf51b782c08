"""Methods side by side: DANCE, its ablations, the alignments of --align with experts (DANCE's pipeline) and without
(plain DM's), and real-image baselines, over condensation seeds, on digits, patches or real CIFAR-10.

    python bench/methods.py                       # digits: DANCE, ablations, baselines (about 80 minutes, 2 cores)
    python bench/methods.py -d cifar10 --data_dir DATA --report docs/bench_cifar10   # the CIFAR-10 table (~2 h)
    python bench/methods.py -d cifar10 --data_dir DATA --report docs/bench_cifar10 --methods dance dance_mmd \\
        dance_cf dance_moments dm dm_mmd dm_cf dm_moments --skip_whole            # the alignment rows, same experts
    python bench/methods.py -d patches --methods random dm dm_mmd dm_cf dm_moments dance dance_mmd dance_cf \\
        dance_moments --runs 2 --skip_whole
    python bench/methods.py --methods random dm dance --flags="--precision bf16" --out results/bench/digits_bf16

Every row is evaluated with the same protocol (final-epoch test accuracy of --runs fresh networks per set), and
every condensation runs the same iterations; the table gives mean +- std over seeds of each seed's mean, then the
paired differences (seed by seed) between the rows the paper's claims compare, with their standard errors.

Budget: digits and patches use their settings files (ConvNet-3 width 0.25, 300 evaluation epochs, 200 iterations);
cifar10 uses BUDGETS below (width 0.25, 5 experts x 8 epochs shared by all seeds, 300 iterations with the paper's
image learning rate and factor 2, 300 evaluation epochs): sized for 2 CPU cores, not the paper's budget.

Resumable: experts (<out>/experts, or <out>/seed<s>/experts per seed) and condensed sets are reused, and every
row's per-seed figure goes into <report>.json as soon as it is measured (merged under a lock, so one process per
--ipcs can run side by side): a rerun with the same budget skips what that file holds, so committing it keeps the
figures for everyone. <report>.md is rewritten after every row.
"""
import argparse
import fcntl
import functools
import math
import os
import shlex
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import DANCE  # noqa: E402
import evaluate  # noqa: E402
import pretrain  # noqa: E402
from arguments import parse  # noqa: E402
from condense.expert_folder import read_manifest  # noqa: E402
from utils import UserError, atomic_write_json, atomic_write_text, configure_process, read_json  # noqa: E402

DM = ["--num_premodel", "0", "--iter_calib", "0"]
ALIGNS = ("mmd", "cf", "moments")
# key -> (row name, extra DANCE.py flags); None: a real-image baseline of evaluate.py
METHODS = {
    "random": ("random real subset", None),
    "herding": ("herding", None),
    "dm": ("DM", DM),
    **{f"dm_{a}": (f"DM with --align {a}", DM + ["--align", a]) for a in ALIGNS},
    "no_calib": ("DANCE without calibration", ["--iter_calib", "0"]),
    "no_middle": ("DANCE without middle encoders (trained experts)", ["--lam_min", "0", "--lam_max", "0"]),
    "dance": ("DANCE", []),
    **{f"dance_{a}": (f"DANCE with --align {a}", ["--align", a]) for a in ALIGNS},
}
DEFAULT_METHODS = {"cifar10": ["random", "herding", "dm", "no_calib", "dance"]}
# (a, b): the differences a - b the table reports, paired by seed, when both rows ran
PAIRS = [("dance", "dm"), ("dm", "random"), ("dance", "random"), ("dance", "no_calib"), ("dance", "no_middle"),
         ("dance", "herding")] + [(f"{p}_{a}", p) for p in ("dm", "dance") for a in ALIGNS]

# The benchmark budgets of the datasets without an embedded settings file sized for a CPU, per script. CIFAR-10:
# ConvNet-3 at width 0.25 (32 channels); 5 experts x 8 epochs (about 70% test accuracy); 300 condensation
# iterations with the paper's image learning rate (0.01 x ipc), multi-formation factor 2, middle encoders,
# calibration and DSA as the paper; evaluation networks trained with the paper's recipe (DSA, CutMix) for the
# paper's 1,500 epochs at IPC 1 (40 decoded images: one batch, so 1,500 steps) and 300 at IPC 10 (400 images in 7
# batches: 2,100 steps; the paper's 1,500 would cost 5 times more). At IPC 1, 300 epochs (300 steps) left the
# networks undertrained and DANCE level with DM (docs/cifar10.md).
BUDGETS = {
    "cifar10": {
        "common": ["--width", "0.25", "--eval_epochs", "300", "--eval_interval", "100"],
        "pretrain": ["--pretrain_amount", "5", "--pretrain_epochs", "8"],
        "condense": ["--factor", "2", "--niter", "300", "--lr_img_per_ipc", "0.01"],
        "baseline": ["--factor", "2"],
        "eval_epochs_by_ipc": {1: 1500},
        "shared_experts": True,
        "whole_epochs": 20,
    },
}
EMBEDDED = {"digits": {}, "patches": {"baseline": ["--factor", "2"]}}


def budget(dataset):
    return BUDGETS.get(dataset) or EMBEDDED[dataset]


class Record:
    """The per-seed figures of one benchmark (<report>.json), keyed by ipc, row and seed, with the budget they were
    measured at; merged into the file under a lock after every row, so processes running other rows add to it."""

    def __init__(self, path, fingerprint, epochs_of=None):
        """`epochs_of(ipc)`: the evaluation epochs a figure at that ipc must have been measured with (None: the
        budget's flags'); figures of other epochs are measured again."""
        self.path, self.fingerprint, self.epochs_of = path, fingerprint, epochs_of or (lambda ipc: None)
        self.figures = self._read()

    def _read(self):
        data = read_json(self.path) or {"budget": self.fingerprint, "figures": {}}
        if data.get("budget") != self.fingerprint:
            raise UserError(f"{self.path} holds figures measured at another budget ({data.get('budget')}); pass "
                            f"another --report, or the flags it records")
        return data["figures"]

    def get(self, ipc, key, seed):
        """The figure of a row at an ipc and seed, if it was evaluated for the epochs `epochs_of(ipc)` asks."""
        figure = self.figures.get(f"ipc{ipc}", {}).get(key, {}).get(str(seed))
        return figure if figure is not None and figure.get("eval_epochs") == self.epochs_of(ipc) else None

    def add(self, ipc, key, seed, figure):
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.figures = self._read()
            self.figures.setdefault(f"ipc{ipc}", {}).setdefault(key, {})[str(seed)] = figure
            atomic_write_json({"budget": self.fingerprint, "figures": self.figures}, self.path)

    def accuracies(self, ipc, key, seeds):
        """{seed: accuracy} of a row over the seeds that have it (at the budget's evaluation epochs for the ipc)."""
        return {s: f["acc"] for s in seeds if (f := self.get(ipc, key, s))}


def eval_epochs(q, ipc):
    """The evaluation epochs of the budget at an ipc, where they differ from its flags' (else None)."""
    return budget(q.dataset).get("eval_epochs_by_ipc", {}).get(ipc)


def budget_flags(dataset, script):
    """The flags the dataset's budget gives `script` ('pretrain', 'condense', 'evaluate'; 'baseline': evaluate.py's
    real-image rows)."""
    own = budget(dataset)
    return own.get(script, []) if script == "baseline" else own.get("common", []) + own.get(script, [])


def location_flags(dataset, device, data_dir):
    """The dataset and where it and the networks live: not part of a budget."""
    return ["-d", dataset, "--device", device] + (["--data_dir", data_dir] if data_dir else [])


def script_flags(q, script):
    """The flags of `script` for this benchmark, before the row's own."""
    return location_flags(q.dataset, q.device, q.data_dir) + budget_flags(q.dataset, script) + shlex.split(q.flags)


def experts_dir(q, seed):
    return os.path.join(q.out, "experts") if q.shared_experts else os.path.join(q.out, f"seed{seed}", "experts")


def train_experts(q, seed):
    """Train (or find finished) the experts seed `seed` condenses with; shared experts are trained at seed 0."""
    folder = experts_dir(q, seed)
    pretrain.main(parse("pretrain", script_flags(q, "pretrain") + ["--seed", str(0 if q.shared_experts else seed),
                                                                   "--pretrain_dir", folder]))
    return folder


def measure_row(q, seed, ipc, key, experts, epochs):
    """{acc, runs, condense_s, evaluate_s, eval_epochs} of one row at one seed: its set condensed (or reused) and
    evaluated for `epochs` epochs (None: the flags' own)."""
    name, flags = METHODS[key]
    tail = ["--seed", str(seed), "--pretrain_dir", experts]
    evaluation = script_flags(q, "evaluate") + tail + ["--runs", str(q.runs), "--results",
                                                        os.path.join(q.out, f"seed{seed}", "evaluations.jsonl")]
    evaluation += ["--eval_epochs", str(epochs)] if epochs else []
    start, condense_s = time.time(), 0.0
    if flags is None:
        argv = ["--baseline", key, "--ipc", str(ipc)] + budget_flags(q.dataset, "baseline")
    else:
        args = parse("condense", script_flags(q, "condense") + tail + flags +
                     ["--ipc", str(ipc), "--eval_every", "0", "--save_dir",
                      os.path.join(q.out, f"seed{seed}", f"ipc{ipc}_{key}")])
        final = os.path.join(args.save_dir, f"data_{args.niter}.pt")
        if not os.path.isfile(final):  # a rerun reuses finished condensations, redoes broken ones
            shutil.rmtree(args.save_dir, ignore_errors=True)
            DANCE.main(args)
            condense_s = time.time() - start
        argv = ["--data", final]
    result, = evaluate.main(parse("evaluate", evaluation + argv))
    return {"acc": statistics.mean(result["final"]), "runs": result["final"], "condense_s": round(condense_s),
            "evaluate_s": round(time.time() - start - condense_s), "eval_epochs": epochs}


def whole_set(q, experts):
    """The whole training set at the benchmark's protocol (cifar10: fewer epochs, BUDGETS' whole_epochs)."""
    epochs = budget(q.dataset).get("whole_epochs")
    flags = script_flags(q, "evaluate") + ["--seed", "0", "--pretrain_dir", experts, "--runs", str(q.whole_runs),
                                           "--results", os.path.join(q.out, "whole.jsonl"), "--baseline", "full"]
    start = time.time()
    result, = evaluate.main(parse("evaluate", flags + (["--eval_epochs", str(epochs)] if epochs else [])))
    return {"acc": statistics.mean(result["final"]), "runs": result["final"], "epochs": epochs,
            "evaluate_s": round(time.time() - start)}


def run_rows(q, record):
    """Measure every (seed, ipc, row) the record lacks, recording and reporting each as it finishes."""
    for seed in q.seeds:
        experts = train_experts(q, seed)
        for ipc in q.ipcs:
            for key in q.methods:
                if record.get(ipc, key, seed) is None:
                    record.add(ipc, key, seed, measure_row(q, seed, ipc, key, experts, eval_epochs(q, ipc)))
                    write_report(q, record)
                print(f"seed {seed} ipc {ipc} {METHODS[key][0]}: {record.get(ipc, key, seed)['acc']:.2f}", flush=True)
    if not q.skip_whole and record.get(0, "whole", 0) is None:
        record.add(0, "whole", 0, whole_set(q, experts_dir(q, q.seeds[0])))
        write_report(q, record)


def fmt(accs):
    return f"{statistics.mean(accs):.1f} +- {statistics.pstdev(accs):.1f}" if accs else "-"


def paired(a, b):
    """Mean of the seed-by-seed differences a - b over the seeds both have ({seed: acc}), its standard error (sample
    std / sqrt(n)) and n."""
    d = [a[s] - b[s] for s in a if s in b]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return (statistics.mean(d) if d else float("nan")), se, len(d)


def rows_present(record, ipcs, seeds):
    """The rows (in METHODS' order) the record has a figure of at any of the ipcs and seeds."""
    return [k for k in METHODS if any(record.accuracies(ipc, k, seeds) for ipc in ipcs)]


def markdown(record, ipcs, seeds):
    """The accuracy table (one column per ipc, mean +- std over seeds), per-seed figures and paired differences."""
    head = "| method | " + " | ".join(f"IPC {ipc}" for ipc in ipcs) + " |"
    rule = "|---|" + "---|" * len(ipcs)
    keys = rows_present(record, ipcs, seeds)
    lines = [head, rule]
    for key in keys:
        lines.append(f"| {METHODS[key][0]} | " + " | ".join(
            fmt(list(record.accuracies(ipc, key, seeds).values())) for ipc in ipcs) + " |")
    whole = record.get(0, "whole", 0)
    if whole:
        epochs = f", {whole['epochs']} epochs" if whole.get("epochs") else ""
        lines.append(f"| whole training set ({len(whole['runs'])} network{'s' * (len(whole['runs']) > 1)}{epochs}) "
                     f"| " + " | ".join(f"{whole['acc']:.1f}" for _ in ipcs) + " |")
    lines += ["", "Per seed (" + " / ".join(str(s) for s in seeds) + "):", "", head, rule]
    for key in keys:
        cells = [" / ".join(f"{a:.2f}" if (a := record.accuracies(ipc, key, seeds).get(s)) is not None else "-"
                            for s in seeds) for ipc in ipcs]
        lines.append(f"| {METHODS[key][0]} | " + " | ".join(cells) + " |")
    pairs = [(a, b) for a, b in PAIRS if a in keys and b in keys]
    if pairs:
        lines += ["", "Paired differences, seed by seed (points, mean +- standard error, seeds):", "",
                  "| difference | " + " | ".join(f"IPC {ipc}" for ipc in ipcs) + " |", rule]
        for a, b in pairs:
            cells = [paired(record.accuracies(ipc, a, seeds), record.accuracies(ipc, b, seeds)) for ipc in ipcs]
            lines.append(f"| {METHODS[a][0]} - {METHODS[b][0]} | " + " | ".join(
                f"{m:+.1f} +- {se:.1f} ({n})" if n else "-" for m, se, n in cells) + " |")
    return "\n".join(lines) + "\n"


def experts_line(q):
    manifest = read_manifest(experts_dir(q, q.seeds[0])) or {}
    accs = [e["test_acc"] for e in manifest.get("experts", {}).values() if "test_acc" in e]
    return f"Experts: {len(accs)}, mean test accuracy {statistics.mean(accs):.1f}%.\n" if accs else ""


def write_report(q, record):
    ipcs = sorted({int(k[3:]) for k in record.figures if k != "ipc0"}) or q.ipcs
    seeds = sorted({int(s) for ipc in record.figures.values() for row in ipc.values() for s in row})
    text = (f"{q.dataset}: final-epoch test accuracy (%), mean +- std over condensation seeds of each seed's mean over "
            f"{q.runs} evaluation network{'s' * (q.runs > 1)}.\n\nBudget (flags beyond the dataset's defaults): "
            + "; ".join(f"{script} {' '.join(flags) or '-'}" for script, flags in record.fingerprint["flags"].items())
            + "".join(f"; evaluation at IPC {ipc}: --eval_epochs {e}" for ipc, e in
                      sorted(budget(q.dataset).get("eval_epochs_by_ipc", {}).items()))
            + ".\n"
            + experts_line(q) + "\n" + markdown(record, ipcs, seeds or q.seeds))
    atomic_write_text(text, q.report + ".md")
    return text


def fingerprint(q):
    """What the figures depend on besides the row, ipc and seed (a record only mixes figures of one budget): each
    script's flags but the dataset's location and the device."""
    flags = {script: budget_flags(q.dataset, script) + shlex.split(q.flags)
             for script in ("pretrain", "condense", "evaluate")}
    flags["baseline"] = budget_flags(q.dataset, "baseline")
    return {"dataset": q.dataset, "runs": q.runs, "shared_experts": q.shared_experts, "flags": flags,
            "whole_epochs": budget(q.dataset).get("whole_epochs")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", default="digits", choices=("digits", "patches", *BUDGETS))
    p.add_argument("--data_dir", default=None, help="cifar10: the folder holding cifar-10-batches-py")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ipcs", type=int, nargs="+", default=[1, 10])
    p.add_argument("--runs", type=int, default=None,
                   help="evaluation networks per set (default 2 on cifar10, else 1); a row's seed value is their "
                        "mean (one network's accuracy varies by about 0.9 points at IPC 1 on digits, see "
                        "bench/digits_ipc1.py)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="experts and sets; default results/bench/<dataset>")
    p.add_argument("--report", default=None, help="<report>.md and .json (the per-seed figures); default <out>")
    p.add_argument("--skip_whole", action="store_true", help="skip the whole-training-set row (slowest)")
    p.add_argument("--whole_runs", type=int, default=1, help="networks trained on the whole training set")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=None, help="rows to run")
    p.add_argument("--flags", default="", help="extra flags for all three scripts, e.g. '--precision bf16'")
    q = p.parse_args()
    if q.dataset in BUDGETS and not q.data_dir:
        p.error(f"-d {q.dataset} reads real images: pass --data_dir (the folder with cifar-10-batches-py)")
    q.runs = q.runs or (2 if q.dataset in BUDGETS else 1)
    q.methods = q.methods or DEFAULT_METHODS.get(q.dataset, ["random", "herding", "dm", "no_calib", "no_middle",
                                                             "dance"])
    q.shared_experts = budget(q.dataset).get("shared_experts", False)
    q.out = q.out or os.path.join("results", "bench", q.dataset)
    q.report = q.report or q.out
    configure_process()
    start = time.time()
    try:
        record = Record(q.report + ".json", fingerprint(q), functools.partial(eval_epochs, q))
        run_rows(q, record)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n" + write_report(q, record))
    print(f"written: {q.report}.md, {q.report}.json ({time.time() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
