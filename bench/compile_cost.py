"""What torch.compile costs and saves here: the figures behind --compile auto (models/compilation.py, COSTS).

For each case it measures, in fresh processes, the eager seconds per condensation iteration or training epoch, the
compiled seconds once compiled, and the compilation itself (the first calls' extra time, with an empty kernel
cache, as a machine's first run meets it; later runs reuse cached kernels and compile faster); then fits the eager cost
model (seconds = FLOPs / rate + calls x overhead) to the eager rows and prints the constants next to the ones in use,
with each case's estimate against its measurement.

    python bench/compile_cost.py                    # CPU, the process's default threads, about 5 minutes on 2 cores
    python bench/compile_cost.py --device cuda      # a GPU's figures (then replace COSTS["cuda"])

Cases: condensation at digits shapes (ConvNet-3 width 0.25, 16x16, 1 channel, IPC 10, factor 2, batch_real 64) and
CIFAR-10 shapes (width 1, 32x32, IPC 10, factor 2, batch_real 128), one calibration sweep; evaluation training of
a digits IPC 10 set and a CIFAR-10 IPC 10 set (factor 2: 400 images), batch 64.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CASES = {
    "condense digits": dict(kind="condense", channels=1, size=16, width=0.25, batch_real=64, ipc=10),
    "condense cifar": dict(kind="condense", channels=3, size=32, width=1.0, batch_real=128, ipc=10),
    "evaluate digits": dict(kind="train", channels=1, size=16, width=0.25, images=400),
    "evaluate cifar": dict(kind="train", channels=3, size=32, width=1.0, images=400),
}
FACTOR, NCLASS, WARM, STEPS = 2, 10, 3, 6


def network(c):
    from models import model_config
    return {"net_type": "convnet", "config": model_config("convnet", NCLASS, c["channels"], c["size"], 3, c["width"])}


def workload(c):
    """The auto decision's Workload of one iteration (condense) or one epoch (train)."""
    from models.compilation import condensation_work, training_work
    if c["kind"] == "condense":
        return condensation_work(network(c), 1, NCLASS, c["batch_real"], c["ipc"] * FACTOR ** 2, 1, True)
    return training_work("evaluation networks", network(c), 1, 1, c["images"], 64, 1, 500)  # fit's final test


def step_of(c, device, compile):
    """One condensation iteration or one training epoch of case `c`, as a function."""
    import torch

    from data.augment import DiffAug, normalize
    from models import make_network
    if c["kind"] == "condense":
        from condense.encoders import ExpertBank
        from condense.expert_folder import checkpoint_path
        from condense.updates import SCHEDULES, UpdateSettings
        from data.datasets import Split
        from data.sampler import ClassSampler
        from data.streams import IterationDraws
        from data.synthetic import SyntheticSet
        from utils import atomic_save
        images = torch.randint(0, 256, (NCLASS * 200, c["channels"], c["size"], c["size"]), dtype=torch.uint8)
        sampler = ClassSampler(Split(images, torch.arange(NCLASS).repeat_interleave(200)), NCLASS, c["batch_real"],
                               device)
        folder = tempfile.mkdtemp()
        for stage in ("init", "trained"):
            atomic_save(make_network(network(c), "cpu").state_dict(), checkpoint_path(folder, 0, stage))
        bank = ExpertBank(folder, 1, network(c), device, "", compile=compile)
        dsa, draws = DiffAug("color_crop_cutout", batch=True), IterationDraws(0, NCLASS, device)
        synset = SyntheticSet(NCLASS, c["ipc"], c["channels"], c["size"], FACTOR, "single", device)
        optimizer = torch.optim.SGD([synset.data], lr=0.1, momentum=0.5)
        settings = UpdateSettings(batch_syn_max=200, iter_calib=1, precision="fp32", class_chunk=1)
        align, calibrate = SCHEDULES["per_class"]

        def aug(x, groups=None):
            return dsa(normalize(x, (0.5,) * c["channels"], (0.25,) * c["channels"]), groups, draws)

        def iteration():
            draws.start(draws.iteration + 1)
            with torch.no_grad():
                synset.data.clamp_(0, 1)
            align(synset, sampler, bank.middle(0, 0.5), aug, optimizer, settings, draws)
            calibrate(synset, bank.expert(0), aug, optimizer, settings, draws)
        return iteration
    from data.datasets import Split
    from training.recipe import Recipe, fit
    images = torch.randint(0, 256, (c["images"], c["channels"], c["size"], c["size"]), dtype=torch.uint8)
    labels = torch.arange(NCLASS).repeat_interleave(c["images"] // NCLASS)
    test = Split(torch.randint(0, 256, (500, c["channels"], c["size"], c["size"]), dtype=torch.uint8),
                 torch.arange(500) % NCLASS).to(device)
    recipe = Recipe(epochs=1, batch_size=64, dsa_strategy="color_crop_flip_scale_rotate", mix_p=0.5,
                    eval_interval=0, compile=compile)
    model = make_network(network(c), device)
    mean = (0.5,) * c["channels"]
    return lambda: fit(model, images.to(device), labels, test, mean, mean, recipe, device)


def child(name, device_name, compile):
    """{'first': s of the first WARM calls, 'step': s per call after them} of case `name`, wall clock."""
    import torch

    from utils import select_device
    device = select_device(device_name)
    torch.manual_seed(0)
    step = step_of(CASES[name], device, compile)

    def timed(n):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start
    first = timed(WARM)
    return {"first": first, "step": timed(STEPS) / STEPS}


def measure(name, device, compile, repeats):
    runs = []
    for _ in range(repeats):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--device", device] + (
            ["--compiled"] if compile else [])
        with tempfile.TemporaryDirectory() as cache:  # a cold compile: no kernels cached by an earlier process
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": os.path.join(cache, "triton")}
            out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            raise SystemExit(f"{name} (compile={compile}) failed:\n{out.stderr[-2000:]}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    q = p.parse_args()
    if q.child:
        print(json.dumps(child(q.child, q.device, q.compiled)))
        return
    import numpy as np
    import torch

    from models.compilation import COSTS, estimated_eager_seconds
    from utils import select_device
    device = select_device(q.device)
    rows = {}
    for name in CASES:
        eager, fast = measure(name, q.device, False, q.repeats), measure(name, q.device, True, q.repeats)
        work = workload(CASES[name])
        compile_s = fast["first"] - WARM * fast["step"] - (eager["first"] - WARM * eager["step"])
        rows[name] = dict(eager=eager["step"], compiled=fast["step"], compile_s=compile_s, work=work)
        print(f"{name}: eager {eager['step']:.3f} s, compiled {fast['step']:.3f} s "
              f"({1 - fast['step'] / eager['step']:.0%} saved), compilation {compile_s:.1f} s for {work.graphs} "
              f"graphs; {work.flops / 1e9:.2f} GFLOP and {work.calls:.0f} calls per step", flush=True)
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    a = np.array([[r["work"].flops / threads, r["work"].calls] for r in rows.values()])
    b = np.array([r["eager"] for r in rows.values()])
    inverse_rate, per_call = np.linalg.lstsq(a, b, rcond=None)[0]
    saved = statistics.median(1 - r["compiled"] / r["eager"] for r in rows.values())
    per_graph = statistics.median(r["compile_s"] / r["work"].graphs for r in rows.values())
    costs = COSTS.get(device.type)
    print(f"\nfitted on {device.type} with {threads} thread(s): flops_per_second {1 / inverse_rate:.3g} per thread, "
          f"seconds_per_call {per_call:.2g}, saved {saved:.2f}, seconds_per_graph {per_graph:.1f}")
    print(f"in use ({costs.source}): flops_per_second {costs.flops_per_second:.3g}, seconds_per_call "
          f"{costs.seconds_per_call:.2g}, saved {costs.saved:.2f}, seconds_per_graph {costs.seconds_per_graph:.1f}")
    for name, r in rows.items():
        print(f"  {name}: estimated eager {estimated_eager_seconds(r['work'], device):.3f} s per step, measured "
              f"{r['eager']:.3f} s")


if __name__ == "__main__":
    main()
