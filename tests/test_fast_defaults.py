"""The fast defaults: --precision auto (bf16 where the device computes it natively) and --compile auto (compile
where the run earns it back, eager on any failure), each selection checked with the device's abilities faked."""
import json

import pytest
import torch

import DANCE
import evaluate
import models.compilation as compilation
import utils
from arguments import parse
from arguments.values import condensation_compile, load_data, network_of
from models.compilation import Compiled, Workload, decide
from tests.fixtures import write_fixture
from utils import native_bf16, precision_line, resolve_precision

CPU = torch.device("cpu")


def cpuinfo(tmp_path, monkeypatch, flags):
    path = tmp_path / "cpuinfo"
    monkeypatch.delenv("DANCE_NATIVE_BF16", raising=False)  # tests/conftest.py pins it for the rest of the suite
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    monkeypatch.setattr(utils, "CPUINFO", str(path))


@pytest.mark.parametrize("flags, native", [("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True),
                                           ("avx512f avx512bw", False), ("", False)])
def test_cpu_native_bf16_comes_from_the_cpu_flags(tmp_path, monkeypatch, flags, native):
    cpuinfo(tmp_path, monkeypatch, flags)
    assert native_bf16(CPU)[0] is native
    assert resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"


def test_unreadable_cpu_flags_mean_fp32(monkeypatch):
    monkeypatch.delenv("DANCE_NATIVE_BF16", raising=False)
    monkeypatch.setattr(utils, "CPUINFO", "/nonexistent/cpuinfo")
    assert native_bf16(CPU) == (False, "the CPU's flags are unreadable (no /proc/cpuinfo)")
    assert resolve_precision("auto", CPU) == "fp32"


@pytest.mark.parametrize("capability, native", [((8, 0), True), ((9, 0), True), ((7, 5), False)])
def test_cuda_native_bf16_from_compute_capability(monkeypatch, capability, native):
    monkeypatch.delenv("DANCE_NATIVE_BF16", raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert native_bf16(torch.device("cuda")) == (native, f"CUDA compute capability {capability[0]}.{capability[1]}")
    assert resolve_precision("auto", torch.device("cuda")) == ("bf16" if native else "fp32")


@pytest.mark.parametrize("value", ["0", "1"])
def test_the_environment_overrides_the_detection(tmp_path, monkeypatch, value):
    cpuinfo(tmp_path, monkeypatch, "avx512_bf16" if value == "0" else "")
    monkeypatch.setenv("DANCE_NATIVE_BF16", value)
    assert native_bf16(CPU) == (value == "1", f"DANCE_NATIVE_BF16={value}")
    assert resolve_precision("auto", CPU) == ("bf16" if value == "1" else "fp32")


def test_precision_line_says_what_runs_and_why(tmp_path, monkeypatch):
    cpuinfo(tmp_path, monkeypatch, "avx512_bf16")
    assert precision_line("bf16", CPU) == ("precision bf16 autocast (CPU flags: avx512_bf16; --precision fp32 gives "
                                           "the paper's arithmetic)")
    assert "bf16 would be faster here" in precision_line("fp32", CPU)
    cpuinfo(tmp_path, monkeypatch, "")
    assert "runs emulated, slower than fp32" in precision_line("bf16", CPU)


@pytest.mark.parametrize("native", [True, False])
def test_parse_resolves_auto_and_reproduce_keeps_fp32(tmp_path, monkeypatch, native):
    cpuinfo(tmp_path, monkeypatch, "avx512_bf16" if native else "")
    expected = "bf16" if native else "fp32"
    for script in ("pretrain", "condense", "evaluate"):
        assert parse(script, ["-d", "digits", "--device", "cpu"] + (["--baseline", "random"] if script == "evaluate"
                                                                    else [])).precision == expected
    assert parse("condense", ["-d", "cifar10", "--reproduce", "--device", "cpu"]).precision == "fp32"
    assert parse("condense", ["-d", "cifar10", "--reproduce", "--device", "cpu", "--precision", "bf16"]).precision \
        == "bf16"


def test_compile_flag_forms():
    assert parse("condense", ["-d", "digits"]).compile == "auto"
    assert parse("condense", ["-d", "digits", "--compile"]).compile is True
    assert parse("condense", ["-d", "digits", "--no-compile"]).compile is False


def test_the_chosen_precision_is_recorded_in_args_json_the_set_and_the_evaluation(tmp_path, monkeypatch):
    cpuinfo(tmp_path, monkeypatch, "avx512_bf16")
    run = tmp_path / "run"
    DANCE.main(parse("condense", ["-d", "digits", "--device", "cpu", "--num_premodel", "0", "--ipc", "1", "--niter",
                                  "2", "--eval_every", "0", "--save_dir", str(run)]))
    assert json.loads((run / "args.json").read_text())["precision"] == "bf16"
    assert json.loads((run / "data_2.json").read_text())["settings"]["precision"] == "bf16"
    assert "precision bf16 autocast (CPU flags: avx512_bf16" in (run / "log.txt").read_text()
    cpuinfo(tmp_path, monkeypatch, "")  # evaluated elsewhere: the set's own precision, as recorded
    results = tmp_path / "r.jsonl"
    evaluate.main(parse("evaluate", ["--data", str(run / "data_2.pt"), "--runs", "1", "--eval_epochs", "2",
                                     "--device", "cpu", "--results", str(results)]))
    record = json.loads(results.read_text().splitlines()[-1])
    assert record["protocol"]["precision"] == "bf16"


def big(graphs=4):
    return Workload("condensation networks", flops=1e16, calls=1e6, graphs=graphs)


def small():
    return Workload("condensation networks", flops=1e9, calls=100, graphs=4)


@pytest.fixture
def compiler_ok(monkeypatch):
    probes = []
    monkeypatch.setattr(compilation, "compiler_missing", lambda device: None)
    monkeypatch.setattr(compilation, "compiler_works", lambda device: probes.append(device) or None)
    return probes


def test_auto_compiles_long_runs_and_leaves_short_ones_eager(compiler_ok):
    on, why = decide("auto", CPU, big())
    assert on and why.startswith("on (auto: saves ~") and "--no-compile turns it off" in why
    off, why = decide("auto", CPU, small())
    assert not off and why.startswith("off (auto: saves ~") and "--compile forces it" in why
    assert len(compiler_ok) == 1  # the toolchain is probed only when compilation was chosen
    assert decide(True, CPU, small())[0] is True
    assert decide(False, CPU, big()) == (False, "off (--no-compile)")


def test_the_decision_follows_the_measured_cost_model(compiler_ok):
    costs = compilation.COSTS["cpu"]
    threads = torch.get_num_threads()
    # the saving exactly at PAYBACK x the compile time: compiled; a little less: eager
    graphs = 4
    needed = compilation.PAYBACK * graphs * costs.seconds_per_graph / costs.saved  # eager seconds that pay
    flops = needed * costs.flops_per_second * threads
    assert decide("auto", CPU, Workload("x", flops * 1.01, 0, graphs))[0] is True
    assert decide("auto", CPU, Workload("x", flops * 0.99, 0, graphs))[0] is False


def test_no_compiler_means_eager_never_a_failed_run(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    assert decide("auto", CPU, big()) == (False, "off (no C++ compiler (install g++))")
    on, why = decide(True, CPU, big())
    assert not on and why == "off: --compile asked for, but no C++ compiler (install g++); eager"
    assert parse("pretrain", ["--device", "cpu", "--compile"]).compile is True  # accepted, runs eager


def test_a_toolchain_that_fails_its_probe_means_eager(monkeypatch):
    monkeypatch.setattr(compilation, "compiler_missing", lambda device: None)
    monkeypatch.setattr(compilation, "_PROBED", {})

    def broken(*args, **kwargs):
        raise RuntimeError("cc1plus: fatal error: killed\nmore detail")
    monkeypatch.setattr(torch, "compile", broken)
    assert compilation.compiler_works(CPU) == "RuntimeError: cc1plus: fatal error: killed"
    assert decide(True, CPU, big()) == (False, "off: compilation fails here (RuntimeError: cc1plus: fatal error: "
                                               "killed); eager")


def test_compiled_code_that_fails_falls_back_to_eager_with_one_warning(capsys):
    net = torch.nn.Linear(3, 2)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("InductorError: LoweringException: something inductor cannot lower")
    run = Compiled(net, failing)
    x = torch.ones(4, 3)
    torch.testing.assert_close(run(x), net(x))
    torch.testing.assert_close(run(x), net(x))
    assert len(calls) == 1  # never tried again
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: compiled code failed (RuntimeError: InductorError: LoweringException: something "
                        "inductor cannot lower); this network runs eager from now on"]
    assert run.weight is net.weight and list(run.parameters()) == list(net.parameters())
    run.eval()
    assert not net.training


def test_an_error_eager_also_raises_is_not_hidden(capsys):
    net = torch.nn.Linear(3, 2)
    run = Compiled(net, lambda x: net(x))
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        run(torch.ones(4, 5))
    assert "warning" not in capsys.readouterr().err


def test_quickstart_sized_runs_stay_eager_and_the_papers_runs_compile(compiler_ok, tmp_path):
    def choice(argv):
        args = parse("condense", argv + ["--device", "cpu"])
        _, _, info = load_data(args)
        return condensation_compile(args, CPU, network_of(args, info), info, 10000)
    on, why = choice(["-d", "digits", "--ipc", "10"])
    assert not on and why.startswith("off (auto: condensation networks: saves ~") and "; evaluation networks: " in why
    data_dir = write_fixture("cifar10", str(tmp_path / "cifar"))  # CIFAR-10's on-disk format, a few images
    on, why = choice(["-d", "cifar10", "--reproduce", "--ipc", "10", "--factor", "2", "--data_dir", data_dir])
    assert on, why


def test_a_new_run_records_its_compile_decision_and_resume_keeps_it(tmp_path, compiler_ok, monkeypatch):
    run = tmp_path / "run"
    flags = ["-d", "digits", "--device", "cpu", "--num_premodel", "0", "--ipc", "1", "--eval_every", "0"]
    DANCE.main(parse("condense", flags + ["--niter", "1", "--save_dir", str(run)]))
    assert json.loads((run / "args.json").read_text())["compile"] is False  # decided, not 'auto'
    decided = []
    monkeypatch.setattr("arguments.values.decide", lambda mode, device, work: decided.append(mode) or (False, "off"))
    DANCE.main(parse("condense", ["--resume", str(run), "--niter", "2"]))
    assert decided and set(decided) == {False}  # the resumed run is handed the recorded decision, not auto


def test_flops_of_a_small_convnet_by_hand():
    from models import model_config
    from models.compilation import forward_backward_flops
    network = {"net_type": "convnet", "config": model_config("convnet", 2, 3, 8, 1, 1 / 16)}  # 8 channels, 3x3, pad 1
    conv = 2 * (8 * 8 * 8) * (3 * 3 * 3)  # 2 FLOPs x 512 outputs x 27 multiply-adds each
    linear = 2 * 2 * (8 * 4 * 4)          # after the 2x2 average pool: 128 features to 2 classes
    assert forward_backward_flops(network) == (conv + linear, 3 * (conv + linear))
