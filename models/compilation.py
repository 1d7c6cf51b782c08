"""torch.compile where it pays: `--compile` forces it, `--no-compile` forbids it, and the default (auto) compiles a
group of networks only when the run is long enough to earn its compilation back and a compiler is present.

The decision is deterministic (the same command on the same kind of machine decides the same way, so a resumed run
takes the path it started on): it compares the eager seconds the run's network passes are estimated to take
(`Workload`: forward+backward FLOPs and network calls, from the network's layers and the run's settings) with what
compilation costs, using per-device constants measured by bench/compile_cost.py. Compilation that fails anyway (a
broken toolchain, an operator inductor cannot lower) falls back to eager with one warning line; a run never fails
because of it.
"""
import functools
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass

import torch

CXX = ("c++", "g++", "clang++")  # what inductor's CPU backend runs ($CXX first)


@dataclass(frozen=True)
class DeviceCosts:
    """What compilation costs and saves on one kind of device (bench/compile_cost.py measures them)."""
    flops_per_second: float   # eager forward+backward FLOPs per second per CPU thread (CUDA: per device)
    seconds_per_call: float   # eager overhead of one network call (forward, or forward and backward) beyond FLOPs
    saved: float              # fraction of the eager network time compiled code saves
    seconds_per_graph: float  # compiling one graph (one batch shape and grad mode of one network group)
    source: str               # where the figures come from


# CPU: bench/compile_cost.py on a 2-core AMD EPYC (Zen 3, AVX2), torch 2.14, 2 threads, cold kernel cache: eager
# seconds fitted over ConvNet-3 condensation and evaluation at digits and CIFAR-10 shapes (rate 3.56e10 FLOP/s per
# thread, 5.9 ms per call), compiled code 4-47% faster (median 44%), compilation 28-38 s per group of networks
# (7-10 s per graph). CUDA: not measured yet (no GPU compile timing exists for this code): the CPU's saved fraction
# and a conservative compile time, so a GPU compiles only runs of 20 minutes or more of estimated eager network time;
# run bench/compile_cost.py --device cuda on one to replace them.
COSTS = {
    "cpu": DeviceCosts(flops_per_second=3.6e10, seconds_per_call=6e-3, saved=0.44, seconds_per_graph=8.0,
                       source="measured on the CPU"),
    "cuda": DeviceCosts(flops_per_second=1.0e13, seconds_per_call=1.0e-3, saved=0.3, seconds_per_graph=30.0,
                        source="provisional: not yet measured on a GPU"),
}
# Compile only when the estimated saving is at least this many times the compile time: the estimate is rough (it
# underestimated the digits cases' eager time 1.2-3.5x) and the saving varies by case (4% for digits evaluation).
PAYBACK = 3.0


@dataclass
class Workload:
    """The network passes one group of compiled networks would run: the basis of the auto decision."""
    what: str      # "condensation networks", "evaluation networks", "expert training"
    flops: float   # forward+backward FLOPs over the run
    calls: float   # network calls (each a forward, with or without its backward)
    graphs: int    # distinct graphs compilation builds (batch shapes x grad modes)


def forward_backward_flops(network):
    """(forward FLOPs, forward+backward FLOPs) of one image through `network` (a network_config description): its
    convolutions and linear layers (2 FLOPs per multiply-add), backward taken as twice the forward (input and weight
    gradients). Counted once per process and network on uninitialised CPU weights (no random draws, no meta-device
    start-up, which imports for seconds)."""
    return _flops(json.dumps(network, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _flops(described):
    from models import make_network
    network = json.loads(described)
    with torch.device("meta"):
        net = make_network(network, "meta")
    net = net.to_empty(device="cpu").eval()
    with torch.no_grad():
        for tensor in list(net.parameters()) + list(net.buffers()):
            tensor.zero_()  # what uninitialised memory holds can be denormal, and slow to multiply
    total = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            total.append(2 * output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size))
        elif isinstance(module, torch.nn.Linear):
            total.append(2 * output.numel() * module.in_features)
    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    c, s = network["config"]["channels"], network["config"]["size"]
    with torch.no_grad():
        net(torch.zeros(1, c, s, s))
    for hook in hooks:
        hook.remove()
    return sum(total), 3 * sum(total)


def compiler_missing(device):
    """Why torch.compile cannot build kernels for `device` here (one phrase), or None when it can."""
    if device.type == "cpu":
        compilers = ((os.environ["CXX"],) if os.environ.get("CXX") else ()) + CXX
        if not any(shutil.which(c) for c in compilers):
            return "no C++ compiler (install g++)"
    elif device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed"
    else:
        return f"torch.compile is not used on {device.type} here"
    return None


_PROBED = {}


def compiler_works(device):
    """None when a tiny function compiles and runs forward and backward on `device`, else the failure's first line.

    Run once per process and device kind, before the first network is compiled: it catches a broken toolchain
    (a compiler that cannot build, a Triton that cannot load) before a run's networks meet it."""
    key = device.type
    if key not in _PROBED:
        try:
            x = torch.ones(4, device=device, requires_grad=True)
            torch.compile(lambda t: (t.sin() * 2).sum(), dynamic=False)(x).backward()
            _PROBED[key] = None
        except Exception as e:  # noqa: BLE001 - any failure means eager
            _PROBED[key] = first_line(e)
    return _PROBED[key]


def first_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def estimated_eager_seconds(work, device):
    costs = COSTS[device.type]
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    return work.flops / (costs.flops_per_second * threads) + work.calls * costs.seconds_per_call


def decide(mode, device, *works):
    """(compile?, reason) for the networks that run `works` on `device` under --compile `mode` (True, False or
    'auto'); auto compiles them when any one of the works earns its compilation back."""
    if mode is False:
        return False, "off (--no-compile)"
    missing = compiler_missing(device)
    if missing:
        return False, f"off ({missing})" if mode == "auto" else f"off: --compile asked for, but {missing}; eager"
    costs, pays, estimates = COSTS[device.type], False, []
    for work in works:
        eager = estimated_eager_seconds(work, device)
        saving, cost = costs.saved * eager, work.graphs * costs.seconds_per_graph
        pays = pays or saving >= PAYBACK * cost
        estimates.append((f"{work.what}: " if len(works) > 1 else "") + f"saves ~{duration(saving)} of "
                         f"~{duration(eager)} network time, compiling costs ~{duration(cost)}")
    estimate = "; ".join(estimates)
    if mode == "auto" and not pays:
        return False, f"off (auto: {estimate}; --compile forces it)"
    broken = compiler_works(device)
    if broken:
        return False, f"off: compilation fails here ({broken}); eager"
    return True, f"on ({'auto: ' + estimate if mode == 'auto' else '--compile'}; --no-compile turns it off)"


def duration(seconds):
    if seconds < 90:
        return f"{max(seconds, 0.0):.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def condensation_work(network, iterations, nclass, batch_real, syn_per_class, calibrations, calibrated):
    """The encoders' and experts' passes of `iterations` condensation iterations: per class a forward of the real
    batch (no grad) and a forward+backward of the class's decoded synthetic images; with experts, `calibrations`
    forward+backward passes of all synthetic images through the trained expert."""
    forward, both = forward_backward_flops(network)
    per_iteration = nclass * (batch_real * forward + syn_per_class * both)
    calls = 2 * nclass
    if calibrated:
        per_iteration += calibrations * nclass * syn_per_class * both
        calls += calibrations * nclass
    graphs = 2 + (2 if calibrated else 0)
    return Workload("condensation networks", iterations * per_iteration, iterations * calls, graphs)


def training_work(what, network, trainings, epochs, images, batch_size, tests=0, test_images=0):
    """`trainings` networks each trained `epochs` epochs on `images` in batches of `batch_size` (forward+backward
    with weight gradients, about three forwards), plus `tests` test passes over `test_images` each."""
    forward, both = forward_backward_flops(network)
    train_calls = epochs * math.ceil(images / batch_size)
    test_calls = tests * math.ceil(test_images / 256)
    flops = trainings * (epochs * images * max(both, 3 * forward) + tests * test_images * forward)
    graphs = 2 + (2 if tests else 0)  # full and remainder batches, training and testing
    return Workload(what, flops, trainings * (train_calls + test_calls), graphs)


class Compiled:
    """A network (or function) run through torch.compile, falling back to eager for good, with one warning line,
    when compiled code fails where eager runs. Attributes reach the eager module (train(), eval(), parameters())."""

    def __init__(self, eager, fast):
        self._eager, self._fast = eager, fast

    def __call__(self, *args, **kwargs):
        if self._fast is not None:
            try:
                return self._fast(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - eager decides: a real error raises again below
                result = self._eager(*args, **kwargs)
                self._fast = None
                warn(f"compiled code failed ({first_line(e)}); this network runs eager from now on")
                return result
        return self._eager(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.__dict__["_eager"], name)


def warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def compiled(model, enabled):
    """`model` through torch.compile (sharing its parameters, so in-place writes still reach it) when `enabled`.

    Compilation takes seconds per batch shape on first use in a process; later networks of the same architecture
    reuse the compiled code. Shapes stay static: the few a run meets (real, synthetic, training and test batches
    and their remainders) each get their own kernels, where dynamic shapes failed inside inductor (torch 2.14).
    """
    if not enabled:
        return model
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # one entry per shape and grad mode, shared by the
        if hasattr(config, name):                         # experts, encoder and evaluation networks
            setattr(config, name, max(getattr(config, name), 64))
    return Compiled(model, torch.compile(model, dynamic=False))
