"""Start-up settings of every entry point: the glibc allocator keeps freed memory unless turned off."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = """
import sys, torch
sys.path.insert(0, sys.argv[1])
import utils
applied = utils.keep_freed_memory()
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
x = torch.ones(16 * 2**20 // 4)  # 16 MiB: above glibc's default mmap threshold, within mode 1's
peak = resident()
del x
small = (peak - resident()) // 2**20
x = torch.ones(64 * 2**20 // 4)  # 64 MiB: above every threshold; only mode 'all' keeps it
peak = resident()
del x
print(applied, small, (peak - resident()) // 2**20)
"""


def probe(env_value):
    env = {k: v for k, v in os.environ.items() if k != "DANCE_KEEP_MEMORY"}
    if env_value is not None:
        env["DANCE_KEEP_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE, ROOT], env=env, capture_output=True, text=True, timeout=120)
    applied, small, large = out.stdout.split()
    return applied, int(small), int(large)


@pytest.mark.slow
@pytest.mark.skipif(not (sys.platform.startswith("linux") and os.path.exists("/proc/self/statm")),
                    reason="glibc's mallopt and /proc are Linux's")
def test_freed_buffers_stay_in_the_process_unless_turned_off():
    assert probe(None)[:2] == ("1", 0)  # up to 32 MiB: kept for the next step's activations
    applied, small, large = probe("all")
    assert applied == "all" and small == 0 and large == 0  # every buffer kept
    applied, small, large = probe("0")
    assert applied == "None" and small >= 15 and large >= 60  # glibc's default: unmapped at once
