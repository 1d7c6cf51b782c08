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
x = torch.ones(64 * 2**20 // 4)  # 64 MiB, far above glibc's default mmap threshold
peak = resident()
del x
print(applied, (peak - resident()) // 2**20)
"""


def probe(env_value):
    env = {k: v for k, v in os.environ.items() if k != "DANCE_KEEP_MEMORY"}
    if env_value is not None:
        env["DANCE_KEEP_MEMORY"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE, ROOT], env=env, capture_output=True, text=True, timeout=120)
    applied, released = out.stdout.split()
    return applied == "True", int(released)


@pytest.mark.skipif(not (sys.platform.startswith("linux") and os.path.exists("/proc/self/statm")),
                    reason="glibc's mallopt and /proc are Linux's")
def test_freed_buffers_stay_in_the_process_unless_turned_off():
    applied, released = probe(None)
    assert applied and released < 8  # kept for the next step's activations
    applied, released = probe("0")
    assert not applied and released >= 60  # glibc's default: unmapped at once, faulted in again next time
