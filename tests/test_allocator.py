"""The training process's C allocator: freed memory held for the next step, handed back when a run ends.
Each case runs in a fresh interpreter: the settings are process-wide."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the allocator settings are glibc's")

CHILD = r"""
import json, resource, sys
import torch
from kdcore.train.allocator import hold_freed_memory, return_freed_memory

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

held = sys.argv[1] == "held" and hold_freed_memory()
per_step = []
for _ in range(4):  # four 12 MB blocks alive at once, then freed: a training step's activations in small
    before = faults()
    blocks = [torch.ones(3 << 20) for _ in range(4)]
    del blocks
    per_step.append(faults() - before)
before_return = rss_mb()
returned = return_freed_memory()
print(json.dumps({"held": held, "faults": per_step, "rss_before": before_return, "rss_after": rss_mb(),
                  "returned": returned}))
"""


def _steps(mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_by_default_every_step_faults_its_memory_in_again():
    seen = _steps("default")
    assert not seen["held"]
    first, *later = seen["faults"]
    assert first > 10_000 and all(n > first / 2 for n in later)  # the 48 MB go back to the kernel each time


def test_held_memory_is_reused_by_later_steps_and_handed_back_on_request():
    seen = _steps("held")
    assert seen["held"]
    first, *_, last = seen["faults"]
    assert first > 10_000 and last < first / 20
    # what the steps freed stayed in the process until return_freed_memory handed it back
    assert seen["returned"] and seen["rss_before"] - seen["rss_after"] > 40


def test_a_worker_hands_a_finished_runs_memory_back(monkeypatch):
    from kdcore.jobs import worker

    returned: list[bool] = []
    monkeypatch.setattr(worker, "return_freed_memory", lambda: returned.append(True) or True)
    worker._free_memory()
    assert returned == [True]
