"""The condensation loop reads the device at most once per iteration outside log, evaluation and checkpoint steps.

Counted with torch.profiler on the CPU: every read of a tensor's value into Python (`.item()`, `float(t)`,
`bool(t)`, `int(t)`) runs `aten::_local_scalar_dense`, which on a GPU waits for the device.
"""
import pytest
from torch.profiler import ProfilerActivity, profile

import DANCE
from condense import bookkeeping
import pretrain
from arguments import parse
from tests.fixtures import write_fixture

FIRST, LAST = 2, 6  # profiled from the end of iteration 2 to the end of iteration 6: four whole iterations


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    base = tmp_path_factory.mktemp("syncs")
    data_dir = write_fixture("folder", str(base / "data"))
    common = ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--width", "0.0625", "--device", "cpu",
              "--pretrain_dir", str(base / "experts")]
    pretrain.main(parse("pretrain", common + ["--pretrain_amount", "1", "--pretrain_epochs", "1"]))
    return base, common


@pytest.mark.parametrize("update, premodels, align", [("per_class", "1", []), ("joint", "1", []),
                                                     ("per_class", "0", []),
                                                     ("joint", "1", ["--align", "mmd"]),
                                                     ("per_class", "1", ["--align", "cf", "--cf_frequencies", "64"]),
                                                     ("joint", "1", ["--align", "cf", "--cf_frequencies", "64",
                                                                     "--cf_sampling_net"]),
                                                     ("joint", "1", ["--align", "moments"])])
def test_at_most_one_host_read_per_iteration(experts, monkeypatch, update, premodels, align):
    base, common = experts
    monkeypatch.setattr(bookkeeping, "LOG_EVERY", 1000)  # log steps: the first and the last iteration only
    prof = profile(activities=[ProfilerActivity.CPU])

    def hook(k, synset, encoders):
        if k == FIRST:
            prof.start()
        elif k == LAST:
            prof.stop()

    argv = common + ["--ipc", "1", "--factor", "2", "--niter", "8", "--eval_every", "0", "--ckpt_every", "0",
                     "--num_premodel", premodels, "--update", update, "--batch_real", "4",
                     "--save_dir", str(base / f"run_{update}_{premodels}_{'_'.join(align)}")] + align
    DANCE.main(parse("condense", argv), on_iteration=hook)
    reads = sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")
    assert reads <= LAST - FIRST, f"{reads} host reads in {LAST - FIRST} iterations"
