"""The IPC-1 investigation's arithmetic (bench/digits_ipc1.py) on hand-computed cases."""
import argparse
import math

import pytest
import torch

from bench.digits_ipc1 import condense, experts_needed, markdown, network_std, paired


def test_experts_needed_reads_the_largest_pool():
    assert experts_needed(["dm", "dance"]) == 5
    assert experts_needed(["dance", "fixed20"]) == 20


def test_network_std_pools_within_set_variances():
    # set A runs 1, 3 (variance 2, 1 dof); set B runs 2, 4, 6 (variance 4, 2 dof): pooled (2 + 8) / 3
    per_seed = [{"dm": {0.01: {200: [1.0, 3.0]}}}, {"dm": {0.01: {200: [2.0, 4.0, 6.0]}}}]
    assert network_std(per_seed) == pytest.approx(math.sqrt(10 / 3))


def test_paired_difference_and_standard_error():
    # differences 1, 3: mean 2, population std 1, sample std sqrt(2), standard error 1
    assert paired([91.0, 95.0], [90.0, 92.0]) == "2.0 +- 1.0 (1.0)"


def test_markdown_rows_use_seed_means():
    per_seed = [{"dm": {0.01: {200: [90.0, 92.0]}}, "dance": {0.01: {200: [93.0, 93.0]}}},
                {"dm": {0.01: {200: [94.0, 94.0]}}, "dance": {0.01: {200: [94.0, 96.0]}}}]
    q = argparse.Namespace(methods=["dm", "dance"], lrs=[0.01], at=[200])
    lines = markdown(per_seed, q).splitlines()
    assert lines[2].endswith("| 0.01 | 92.5 +- 1.5 |")  # DM seed means 91, 94
    assert lines[3].endswith("| 0.01 | 94.0 +- 1.0 |")  # DANCE seed means 93, 95
    assert lines[4].endswith("| 0.01 | 1.5 +- 0.5 (0.5) |")  # differences 2, 1


@pytest.mark.slow
def test_longer_study_extends_a_shorter_run_exactly(tmp_path):
    common = ["-d", "digits", "--device", "cpu", "--seed", "0", "--pretrain_dir", str(tmp_path / "experts")]
    short = argparse.Namespace(at=[2], niter=2, device="cpu")
    longer = argparse.Namespace(at=[2, 4], niter=4, device="cpu")
    condense(common, "dm", 0.01, short, str(tmp_path / "extended"))
    extended = condense(common, "dm", 0.01, longer, str(tmp_path / "extended"))
    fresh = condense(common, "dm", 0.01, longer, str(tmp_path / "fresh"))
    assert "resuming after iteration 2" in (tmp_path / "extended" / "log.txt").read_text()
    for at in (2, 4):
        assert torch.equal(torch.load(extended[at])[0], torch.load(fresh[at])[0])
    assert not torch.equal(torch.load(fresh[2])[0], torch.load(fresh[4])[0])
