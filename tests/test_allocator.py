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


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any allocator tuning of the user's (glibc's defaults), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _steps(mode: str, **env: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, env=_clean_env(**env),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_held_memory_is_reused_by_later_steps_and_handed_back_on_request():
    seen = _steps("held")
    assert seen["held"]
    first, *later = seen["faults"]
    assert first > 10_000 and later[-1] < first / 20, seen
    # what the steps freed stayed in the process until return_freed_memory handed it back
    assert seen["returned"] and seen["rss_before"] - seen["rss_after"] > 40, seen
    # against glibc's own settings in the same steps, which give (most of) the memory back and fault it in again
    control = _steps("default")
    assert not control["held"]
    assert sum(control["faults"][1:]) > 2 * sum(later), (control, seen)


@pytest.mark.parametrize("tuning", [{"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}])
def test_an_allocator_the_user_tuned_is_left_as_they_set_it(tuning):
    assert not _steps("held", **tuning)["held"]


WORKER_CHILD = r"""
import runpy, sys
import kdcore.train.allocator as allocator

def called(name):  # a line each: the worker command leaves through os._exit
    print(name, flush=True)
    return True

allocator.hold_freed_memory = lambda: called("hold")
allocator.return_freed_memory = lambda: called("return")
sys.argv = ["kdcore", "worker", "--device", "cpu", "--poll", "0.05", "--exit-when-idle", "--quiet"]
runpy.run_module("kdcore", run_name="__main__", alter_sys=True)
"""


def test_a_worker_holds_freed_memory_while_it_trains_and_hands_it_back_after_each_run(tmp_path):
    from kdcore.jobs import RunStatus, RunStore
    from kdcore.jobs.db import dispose_engines
    from kdcore.spec import RunSpec

    url = f"sqlite:///{tmp_path / 'kdstudio.db'}"
    store = RunStore(url)
    ids = [store.submit(RunSpec.from_dict({"name": f"tiny{i}", "dataset": {"name": "digits"}, "student": "mlp_64",
                                           "epochs": 1, "device": "cpu"}), check=False) for i in range(2)]
    dispose_engines()
    env = _clean_env(KD_HOME=str(tmp_path / "home"), KD_DATABASE_URL=url)
    proc = subprocess.run([sys.executable, "-c", WORKER_CHILD], capture_output=True, text=True, env=env, timeout=300)
    assert [store.get(i).status for i in ids] == [RunStatus.COMPLETED] * 2, proc.stderr[-3000:]
    calls = [line for line in proc.stdout.split() if line in ("hold", "return")]
    assert calls[0] == "hold" and calls.count("hold") == 1  # once, as the worker process starts
    assert calls.count("return") >= 2  # at the end of each run
