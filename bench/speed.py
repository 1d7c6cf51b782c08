"""Speed of condensation, evaluation and expert training, side by side, in one command.

Every configuration runs in a child process of its own (so the allocator setting and the peak memory are
its own), the configurations of one repeat interleaved (A B A B ...), and each figure is the median over
--repeats. Condensation uses CIFAR-10 shapes on generated data (ConvNet-3 width 128, batch_real 128,
iter_calib 1, factor 2, one expert); --quick shrinks the shapes to check the script in a minute.

    python bench/speed.py                          # CPU, 1 thread, writes results/bench/speed.{md,json}
    python bench/speed.py --device cuda --threads 0
    python bench/speed.py --quick
    python bench/speed.py --against ../old-checkout  # the same children run on another checkout's code too
    python bench/speed.py --compile --allocators 1    # torch.compile rows next to their eager twins
    python bench/speed.py --sections condense --aligns mean mmd cf moments --allocators 1 --ipcs 10 --precisions fp32
    python bench/speed.py --defaults --ipcs 10       # what a user gets by default, against what it replaces

Columns: CPU seconds (user + system) and wall seconds per iteration / epoch, peak resident memory (CPU) or
peak allocated memory (GPU), the host reads per condensation iteration (aten::_local_scalar_dense in a
torch.profiler trace of one iteration, which on a GPU each wait for the device), and the operators one iteration
dispatches (forward and backward, counted at the dispatcher: on a GPU about one kernel launch each, so at CIFAR-10
shapes they, not the arithmetic, set the speed).
"""
import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("SPEED_CODE", ROOT))  # --against runs children on another checkout's code


# ---------------------------------------------------------------------------------------------------
# Children: one configuration each, one JSON line on stdout.

def _clock():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime, time.perf_counter()


def _peak_mib(device):
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _timed(fn, iters, device):
    """(CPU s, wall s) per call of fn over `iters` calls after one warm-up call."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    cpu0, wall0 = _clock()
    for _ in range(iters):
        fn()
    sync()
    cpu1, wall1 = _clock()
    return (cpu1 - cpu0) / iters, (wall1 - wall0) / iters


def count_operators(fn):
    """ATen operators one call of fn dispatches, backward included (a TorchDispatchMode sees every one)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.count += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fn()
    return Counter.count


def child_condense(c):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from data.augment import DiffAug, normalize
    from data.datasets import Split
    from data.sampler import ClassSampler
    from data.synthetic import SyntheticSet
    from models import model_config
    from utils import atomic_save, select_device
    try:
        from models import make_network
    except ImportError:  # a checkout from before 2026-11-25 (--against) kept it in utils
        from utils import make_network
    try:  # the method's parts in condense/ (since 2026-12-04)
        from condense.encoders import ExpertBank
        from condense.expert_folder import checkpoint_path
        from condense.losses import ALIGNMENTS
        from condense.updates import SCHEDULES, UpdateSettings

        def update_step(update, *a, settings, extra):
            align, calibrate = SCHEDULES[update]
            synset, sampler, encoder, expert, aug, optimizer = a
            align(synset, sampler, encoder, aug, optimizer, settings, *extra)
            calibrate(synset, expert, aug, optimizer, settings, *extra)
    except ImportError:  # an older checkout (--against): DANCE.py held them, the settings came as a namespace
        import DANCE
        from DANCE import ExpertBank
        from utils import expert_path as checkpoint_path

        def UpdateSettings(**kw):
            return argparse.Namespace(**kw)

        def update_step(update, *a, settings, extra):
            (DANCE.per_class_update if update == "per_class" else DANCE.joint_update)(*a, settings, *extra)

    device = select_device(c.device)
    torch.manual_seed(0)
    n = c.nclass * c.real_per_class
    images = torch.randint(0, 256, (n, 3, c.size, c.size), dtype=torch.uint8)
    sampler = ClassSampler(Split(images, torch.arange(c.nclass).repeat_interleave(c.real_per_class)), c.nclass,
                           c.batch_real, device)
    network = {"net_type": "convnet", "config": model_config("convnet", c.nclass, 3, c.size, 3, c.width)}
    folder = tempfile.mkdtemp()
    for stage in ("init", "trained"):
        atomic_save(make_network(network, "cpu").state_dict(), checkpoint_path(folder, 0, stage))
    compile_flag = {"compile": True} if getattr(c, "compile", False) else {}  # older checkouts (--against) lack the argument
    bank = ExpertBank(folder, 1, network, device, "", **compile_flag)
    dsa = DiffAug("color_crop_cutout", batch=True)
    try:  # DANCE.py's keyed draws (older checkouts, --against, draw from the global streams)
        from data.streams import IterationDraws
        draws = IterationDraws(0, c.nclass, device)
    except ImportError:
        draws = None

    def aug(x, groups=None):
        x = normalize(x, (0.5,) * 3, (0.25,) * 3)
        return dsa(x, groups) if draws is None else dsa(x, groups, draws)

    synset = SyntheticSet(c.nclass, c.ipc, 3, c.size, 2, "single", device)
    optimizer = torch.optim.SGD([synset.data], lr=0.1, momentum=0.5)
    align = {}
    if getattr(c, "align", "mean") != "mean":  # --aligns: this checkout's other alignments
        own = {"frequencies": c.cf_frequencies} if c.align == "cf" else {}
        align = {"align": functools.partial(ALIGNMENTS[c.align], **own)}
    settings = UpdateSettings(batch_syn_max=200, iter_calib=1, precision=c.precision, class_chunk=c.class_chunk,
                              **align)

    def iteration():
        with torch.no_grad():
            synset.data.clamp_(0, 1)
        extra = () if draws is None else (draws,)
        if draws is not None:
            draws.start(draws.iteration + 1)
        update_step(c.update, synset, sampler, bank.middle(0, 0.5), bank.expert(0), aug, optimizer, settings=settings,
                    extra=extra)

    for _ in range(3 if getattr(c, "compile", False) else 0):  # compilation (one graph per batch shape and grad mode)
        iteration()
    cpu, wall = _timed(iteration, c.iters, device)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        iteration()
    reads = sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")
    ops = count_operators(iteration) if not getattr(c, "compile", False) else float("nan")
    return {"cpu_s": cpu, "wall_s": wall, "peak_mib": _peak_mib(device), "host_reads": reads, "operators": ops}


def _training_data(c):
    """(images, labels, test split, mean, std, network, DSA) of the evaluation/pretraining benchmarks."""
    import torch

    from data.datasets import Split, load_dataset
    from models import model_config

    if c.shape == "digits":
        train, test, info = load_dataset("digits", None)
        if c.ipc:  # a condensed set's size; 0: the whole training set (expert training)
            idx = torch.cat([torch.nonzero(train.labels == k).flatten()[:c.ipc] for k in range(10)])
            train = Split(train.images[idx], train.labels[idx])
        network = model_config("convnet", 10, 1, 16, 3, 0.25)
        return train.images, train.labels, test, info.mean, info.std, network, "color_crop_scale_rotate"
    g = torch.Generator().manual_seed(0)
    n = 10 * (c.ipc or 500)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    test = Split(torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(1000) % 10)
    network = model_config("convnet", 10, 3, 32, 3, 1.0)
    return (images, torch.arange(10).repeat_interleave(n // 10), test, (0.49, 0.48, 0.45), (0.2, 0.2, 0.2),
            network, "color_crop_flip_scale_rotate")


def child_train(c):
    """N networks trained for c.epochs (evaluation recipe), one after another or at once: seconds per epoch."""
    import torch

    from models import make_network
    from training.recipe import Recipe, fit
    from training.vectorised import fit_many
    from utils import select_device

    device = select_device(c.device)
    images, labels, test, mean, std, config, dsa = _training_data(c)
    images, labels, test = images.to(device), labels.to(device), test.to(device)
    compile_flag = {"compile": True} if getattr(c, "compile", False) else {}
    recipe = Recipe(epochs=c.epochs, batch_size=c.batch_size, dsa_strategy=dsa, mix_p=0.5, eval_interval=0,
                    precision=c.precision, **compile_flag)
    torch.manual_seed(0)
    models = [make_network({"net_type": "convnet", "config": config}, device) for _ in range(c.n)]

    def train():
        if c.mode == "together" and c.n > 1:
            fit_many(models, images, labels, test, mean, std, recipe, device)
        else:
            for model in models:
                fit(model, images, labels, test, mean, std, recipe, device)

    cpu, wall = _timed(train, 1, device)  # the untimed first call compiles (with compile)
    return {"cpu_s": cpu / c.epochs, "wall_s": wall / c.epochs, "peak_mib": _peak_mib(device)}


CHILDREN = {"condense": child_condense, "train": child_train}


def run_child(kind, config, allocator, code=ROOT):
    """Run one configuration in a fresh process on the code at `code`; returns its measurements."""
    env = {**os.environ, "DANCE_KEEP_MEMORY": allocator, "SPEED_CODE": os.path.abspath(code)}
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--config", json.dumps(config)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {config} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(kind, config):
    import torch

    import utils

    if hasattr(utils, "configure_process"):  # what every entry point does: allocator, cuDNN, TF32
        utils.configure_process()
    c = argparse.Namespace(**config)
    if c.threads:
        torch.set_num_threads(c.threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = CHILDREN[kind](c)
    if torch.device(c.device).type == "cpu":
        result["peak_mib"] -= base  # what the configuration added to the process after imports
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------------
# The parent: configurations, interleaved repeats, tables.

def with_against(configs, q):
    """Every configuration on this checkout, and (with --against) its twin on the other checkout's code."""
    rows = [(c, allocator, ROOT) for c, allocator in configs]
    if q.against:  # an older checkout knows neither the allocator setting nor bf16: its fp32 rows, as it ran
        rows += [(c, "0", q.against) for c, allocator in configs
                 if allocator == "0" and c["precision"] == "fp32" and not c["compile"] and c["align"] == "mean"]
    return rows


def condense_configs(q):
    shapes = dict(nclass=10, size=32, width=1.0, batch_real=128, real_per_class=500)
    if q.quick:
        shapes = dict(nclass=4, size=16, width=0.25, batch_real=32, real_per_class=64)
    rows = []
    for ipc in q.ipcs or ((1, 10) if q.quick else (1, 10, 50)):
        for update in ("per_class", "joint"):
            if q.defaults:
                rows += default_rows(q, "condense", ipc, {
                    **shapes, "ipc": ipc, "update": update, "device": q.device, "threads": q.threads,
                    "iters": q.iters, "class_chunk": q.class_chunk, "align": "mean", "cf_frequencies": 0})
                continue
            for allocator, precision, compile in (("0", "fp32", False), ("1", "fp32", False), ("all", "fp32", False),
                                                  ("1", "bf16", False), ("1", "fp32", True), ("1", "bf16", True)):
                if (compile and not q.compile) or allocator not in q.allocators or precision not in q.precisions:
                    continue
                # the other alignments next to mean's first fp32 eager row of this schedule
                aligns = q.aligns if (precision, compile, allocator) == ("fp32", False, q.allocators[0]) else ["mean"]
                for align in aligns if "mean" in aligns else ["mean"] + aligns:
                    rows.append(({**shapes, "ipc": ipc, "update": update, "precision": precision, "device": q.device,
                                  "threads": q.threads, "iters": q.iters, "class_chunk": q.class_chunk,
                                  "compile": compile, "align": align, "cf_frequencies": q.cf_frequencies}, allocator))
    return rows


PAPER_ITERATIONS, PAPER_EPOCHS = 10000, 1000  # the runs the default rows decide for: CIFAR-10's paper recipe


def default_choices(q, kind, ipc):
    """(precision, compile) that --precision auto and --compile auto pick on this device for the paper's CIFAR-10
    run at `ipc` (10,000 condensation iterations; evaluation networks trained 1,000 epochs)."""
    from models import model_config
    from models.compilation import condensation_work, decide, training_work
    from utils import resolve_precision, select_device

    device = select_device(q.device)
    network = {"net_type": "convnet", "config": model_config("convnet", 10, 3, 32, 3, 1.0)}
    if kind == "condense":
        work = condensation_work(network, PAPER_ITERATIONS, 10, 128, ipc * 4, 1, True)
    else:
        work = training_work("evaluation networks", network, 5, PAPER_EPOCHS, 10 * ipc * 4, 64, 5, 10000)
    return resolve_precision("auto", device), decide("auto", device, work)[0]


def default_rows(q, kind, ipc, base):
    """The default next to what it replaces: the official code's arithmetic with the allocator of the time (glibc's),
    the previous default (fp32, eager), and the default with each fast path turned off."""
    precision, compile = default_choices(q, kind, ipc)
    rows = [("official-equivalent (fp32, eager, glibc allocator)", "0", "fp32", False),
            ("previous default (fp32, eager)", "1", "fp32", False),
            (f"default ({precision}, {'compiled' if compile else 'eager'})", "1", precision, compile)]
    if precision != "fp32":
        rows.append(("default with --precision fp32", "1", "fp32", compile))
    elif "bf16" in q.precisions:  # no native bf16 here: what forcing it would do (slow: --precisions fp32 skips it)
        rows.append(("default with --precision bf16 (no native bf16 here)", "1", "bf16", compile))
    if compile and precision != "fp32":  # with fp32 chosen, --no-compile is the previous default
        rows.append(("default with --no-compile", "1", precision, False))
    return [({**base, "label": label, "precision": p, "compile": c}, allocator) for label, allocator, p, c in rows]


def train_configs(q):
    """Evaluation (condensed sets) and expert training (the whole digits training set), N = 1 and 5."""
    common = {"device": q.device, "threads": q.threads, "precision": "fp32", "batch_size": 64}
    rows = []
    cases = [("evaluation", "digits", 10, 60), ("evaluation", "cifar", 1, 60), ("evaluation", "cifar", 10, 10),
             ("pretraining", "digits", 0, 3)]
    if q.quick:
        cases = [("evaluation", "digits", 10, 10), ("pretraining", "digits", 0, 1)]
    if q.defaults:  # one evaluation network on a CIFAR-10 IPC 10 set, as the default and what it replaces
        base = {**common, "what": "evaluation", "shape": "cifar", "ipc": 10, "epochs": 10, "n": 1, "mode": "sequential"}
        return [(c, allocator, ROOT) for c, allocator in default_rows(q, "train", 10, base)]
    for what, shape, ipc, epochs in cases:
        for n, mode, compile in ((1, "sequential", False), (5, "sequential", False), (5, "together", False),
                                 (1, "sequential", True), (5, "together", True)):
            if compile and not q.compile:
                continue
            rows.append(({**common, "what": what, "shape": shape, "ipc": ipc, "epochs": epochs, "n": n,
                          "mode": mode, "compile": compile}, "1", ROOT))
    return rows


def train_table(configs, medians):
    lines = ["| what | data | networks | how | compile | wall s/epoch | CPU s/epoch | vs one network | "
             "vs 5 one after another |", "|---|---|---|---|---|---|---|---|---|"]
    by_key = {(c["what"], c["shape"], c["ipc"], c["n"], c["mode"], c["compile"]): m
              for (c, _, _), m in zip(configs, medians)}
    for (c, _, _), m in zip(configs, medians):
        one = by_key[(c["what"], c["shape"], c["ipc"], 1, "sequential", False)]["wall_s"]
        five = by_key[(c["what"], c["shape"], c["ipc"], 5, "sequential", False)]["wall_s"]
        data = f"{c['shape']}, " + (f"IPC {c['ipc']}" if c["ipc"] else "whole training set")
        lines.append(f"| {c['what']} | {data} | {c['n']} | {c['mode']} | {'yes' if c['compile'] else 'no'} | "
                     f"{m['wall_s']:.3f} | {m['cpu_s']:.3f} | {m['wall_s'] / one:.2f}x | {m['wall_s'] / five:.2f}x |")
    return "\n".join(lines)


def median_rows(configs, kind, repeats):
    """Measure every (configuration, allocator, code) `repeats` times, interleaved; medians per row."""
    results = [[] for _ in configs]
    for r in range(repeats):
        for i, (config, allocator, code) in enumerate(configs):
            results[i].append(run_child(kind, config, allocator, code))
            label = {k: v for k, v in config.items()
                     if k in ("update", "ipc", "precision", "what", "shape", "n", "mode", "compile", "align")}
            print(f"  repeat {r + 1}/{repeats} {kind} {label} allocator={allocator} code={code_name(code)}: "
                  f"{results[i][-1]}", flush=True)
    return [{key: statistics.median(m[key] for m in ms) for key in ms[0]} for ms in results]


def code_name(code):
    return "this" if code == ROOT else os.path.basename(os.path.normpath(code))


def condense_table(configs, medians):
    lines = ["| code | IPC | schedule | align | DANCE_KEEP_MEMORY | precision | compile | CPU s/iter | wall s/iter | "
             "peak MiB | host reads/iter | operators/iter |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (config, allocator, code), m in zip(configs, medians):
        align = config["align"] + (f" ({config['cf_frequencies']} freq.)" if config["align"] == "cf" else "")
        lines.append(f"| {code_name(code)} | {config['ipc']} | {config['update']} | {align} | {allocator} | "
                     f"{config['precision']} | {'yes' if config.get('compile') else 'no'} | {m['cpu_s']:.2f} | "
                     f"{m['wall_s']:.2f} | {m['peak_mib']:.0f} | {m['host_reads']:.0f} | {m.get('operators', float('nan')):.0f} |")
    return "\n".join(lines)


def defaults_table(configs, medians, unit):
    """The --defaults rows: each setting's CPU and wall seconds and how many times fewer CPU seconds than the
    previous default of the same IPC and schedule."""
    lines = [f"| setting | IPC | schedule | CPU s/{unit} | wall s/{unit} | peak MiB | vs previous default |",
             "|---|---|---|---|---|---|---|"]
    previous = {(c["ipc"], c.get("update")): m["cpu_s"] for (c, _, _), m in zip(configs, medians)
                if c["label"].startswith("previous default")}
    for (c, _, _), m in zip(configs, medians):
        ratio = previous[(c["ipc"], c.get("update"))] / m["cpu_s"]
        lines.append(f"| {c['label']} | {c['ipc']} | {c.get('update', 'evaluation')} | {m['cpu_s']:.3f} | "
                     f"{m['wall_s']:.3f} | {m['peak_mib']:.0f} | {ratio:.2f}x |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads per child (0: torch's default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iters", type=int, default=2, help="timed condensation iterations per child")
    p.add_argument("--quick", action="store_true", help="small shapes, to check the script")
    p.add_argument("--class_chunk", type=int, default=1, help="joint: classes per forward pass (DANCE.py's CPU default)")
    p.add_argument("--sections", default="condense,train", help="comma-separated: condense, train")
    p.add_argument("--aligns", nargs="+", default=["mean"], choices=["mean", "mmd", "cf", "moments"],
                   help="condensation rows of these --align values too (fp32, eager, the first allocator)")
    p.add_argument("--ipcs", type=int, nargs="+", default=None,
                   help="condensation IPCs (default 1 10 50; --quick 1 10)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--cf_frequencies", type=int, default=1024, help="cf's frequencies in the --aligns rows")
    p.add_argument("--allocators", nargs="+", default=["0", "1", "all"], choices=["0", "1", "all"],
                   help="DANCE_KEEP_MEMORY settings of the condensation rows")
    p.add_argument("--compile", action="store_true", help="add torch.compile rows (each child compiles anew: "
                                                          "tens of seconds more per row)")
    p.add_argument("--defaults", action="store_true",
                   help="the defaults (--precision auto, --compile auto as they decide for the paper's CIFAR-10 runs "
                        "on this device) against the official code's arithmetic, the previous default and each "
                        "opt-out, instead of the full grid")
    p.add_argument("--against", default=None, metavar="CHECKOUT",
                   help="also run every configuration on the code of another checkout (e.g. an older commit)")
    p.add_argument("--out", default=os.path.join("results", "bench", "speed"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    q = p.parse_args()
    if q.child:
        return child_main(q.child, json.loads(q.config))
    import torch

    header = (f"torch {torch.__version__}, device {q.device}, {q.threads or 'default'} thread(s), "
              f"median of {q.repeats} interleaved repeats, {time.strftime('%Y-%m-%d')}")
    report, data = [f"# Speed ({header})"], {"header": header}
    if "condense" in q.sections:
        configs = with_against(condense_configs(q), q)
        medians = median_rows(configs, "condense", q.repeats)
        report += ["", "## Condensation (CIFAR-10 shapes, factor 2, ConvNet-3)" if not q.quick else
                   "## Condensation (quick shapes)", "",
                   defaults_table(configs, medians, "iter") if q.defaults else condense_table(configs, medians)]
        data["condense"] = [{"config": c, "allocator": a, "code": code_name(code), **m}
                            for (c, a, code), m in zip(configs, medians)]
    if "train" in q.sections:
        configs = train_configs(q)
        medians = median_rows(configs, "train", q.repeats)
        report += ["", "## Evaluation and expert training: N networks one after another or at once", "",
                   f"Evaluation recipe (batch 64, DSA, CutMix p 0.5); digits: ConvNet-3 width 0.25 on 16x16; cifar: "
                   f"ConvNet-3 width 1 on generated 32x32 images. Threads: {q.threads or 'default'}.", "",
                   defaults_table(configs, medians, "epoch") if q.defaults else train_table(configs, medians)]
        data["train"] = [{"config": c, **m} for (c, _, _), m in zip(configs, medians)]
    text = "\n".join(report) + "\n"
    print("\n" + text)
    os.makedirs(os.path.dirname(os.path.abspath(q.out)), exist_ok=True)
    with open(q.out + ".md", "w") as f:
        f.write(text)
    with open(q.out + ".json", "w") as f:
        json.dump(data, f, indent=2)


if __name__ == "__main__":
    main()
