"""Start-up: what a training run imports. A run must not pay for the dashboard's or other datasets' libraries
(scikit-learn, pandas, torchvision, SQLAlchemy, ...), and importing the library must not import torch._dynamo."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from kdcore.lab.assets import teacher_path

ROOT = Path(__file__).resolve().parents[1]
NOT_AT_RUN_TIME = ["sklearn", "scipy", "pandas", "torchvision", "matplotlib", "PIL", "sqlalchemy", "streamlit",
                   "plotly", "optuna", "pydantic_settings"]

CHILD = r"""
import json, runpy, sys
heavy = json.loads(sys.argv[1])
import kdcore.cli, kdcore.spec, kdcore.train
kdcore.cli.build_parser()  # what `python -m kdcore` builds before it runs a command
after_import = sorted(m for m in heavy + ["torch._dynamo"] if m in sys.modules)
sys.argv = ["kdcore", "train", sys.argv[2], "--quiet", "--fresh", "--out", sys.argv[3]]
try:
    runpy.run_module("kdcore", run_name="__main__", alter_sys=True)
except SystemExit as done:
    assert not done.code, done.code
print(json.dumps({"after_import": after_import, "after_run": sorted(m for m in heavy if m in sys.modules)}))
"""


def test_a_digits_kd_run_from_the_command_line_imports_no_heavy_library(tmp_path):
    spec = yaml.safe_load((ROOT / "examples" / "digits_kd.yaml").read_text())
    spec.update(epochs=1, device="cpu", teacher={"source": "checkpoint", "checkpoint": str(teacher_path("digits"))})
    spec_file = tmp_path / "digits_kd.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KD_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(NOT_AT_RUN_TIME), str(spec_file),
                           str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"after_import": [], "after_run": []}
    assert (tmp_path / "out" / "checkpoint.pt").is_file()


WORKER_CHILD = r"""
import json, sys
import torch
from kdcore.jobs.store import RunStore
from kdcore.jobs.worker import Worker, WorkerConfig

seen = {"before": "torch._dynamo" in sys.modules}
rng, threads = torch.get_rng_state(), torch.get_num_threads()
next_run = Worker._next_run

def first_poll(self):
    seen.setdefault("at_first_poll", "torch._dynamo" in sys.modules)
    return next_run(self)

Worker._next_run = first_poll
Worker(RunStore(sys.argv[1]), WorkerConfig(device="cpu", exit_when_idle=True, poll_interval_s=0.01)).run_forever()
seen.update(same_rng=torch.equal(rng, torch.get_rng_state()), same_threads=threads == torch.get_num_threads())
print(json.dumps(seen))
"""


def test_an_idle_worker_pays_the_first_optimiser_use_before_it_claims_a_run(tmp_path):
    """torch.optim's first use imports torch._dynamo (about a second): a worker does it before its first look at
    the queue, so the first run it claims does not wait for it; and the warm-up leaves no global state behind."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KD_HOME": str(tmp_path / "home")}
    proc = subprocess.run([sys.executable, "-c", WORKER_CHILD, f"sqlite:///{tmp_path / 'kdstudio.db'}"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"before": False, "at_first_poll": True, "same_rng": True, "same_threads": True}


def _digits_spec_file(tmp_path: Path) -> Path:
    spec = yaml.safe_load((ROOT / "examples" / "digits_kd.yaml").read_text())
    spec.update(epochs=1, device="cpu", teacher={"source": "checkpoint", "checkpoint": str(teacher_path("digits"))})
    path = tmp_path / "digits_kd.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _collector_states(monkeypatch) -> dict[str, list]:
    """Whether the garbage collector is on during the run's set-up and at each reported step, and how many objects
    were frozen out of collection when the set-up began and ended and at each step."""
    from kdcore.commands.train import ConsoleCallbacks
    from kdcore.train.trainer import Trainer

    states: dict[str, list] = {"set-up": [], "steps": [], "frozen": [], "frozen at steps": []}
    setup = Trainer._setup

    def recording_setup(self):
        states["set-up"].append(gc.isenabled())
        states["frozen"].append(gc.get_freeze_count())
        setup(self)
        states["frozen"].append(gc.get_freeze_count())

    def recording_step(self, *args):
        states["steps"].append(gc.isenabled())
        states["frozen at steps"].append(gc.get_freeze_count())

    monkeypatch.setattr(Trainer, "_setup", recording_setup)
    monkeypatch.setattr(ConsoleCallbacks, "on_step", recording_step)
    return states


def test_the_command_line_pauses_collection_and_holds_freed_memory_only_in_its_own_process(
        tmp_path, kd_home, monkeypatch):
    from kdcore import cli
    from kdcore.commands import train as train_command
    from kdcore.train import allocator

    spec_file = _digits_spec_file(tmp_path)
    states = _collector_states(monkeypatch)
    held: list[bool] = []
    monkeypatch.setattr(allocator, "hold_freed_memory", lambda: held.append(True) or True)
    frozen = gc.get_freeze_count()
    # a caller passing argv (a test, a notebook) keeps its process's collector exactly as it was
    assert cli.main(["train", str(spec_file), "--quiet", "--fresh", "--out", str(tmp_path / "a")]) == 0
    assert states["set-up"] == [True] and states["steps"] and all(states["steps"])
    assert gc.get_freeze_count() == frozen and gc.isenabled()
    assert not held  # nor its C allocator's settings

    # as the process's entry point: imports frozen, no collection during the set-up, what the set-up built frozen
    # too when collection comes back for training, and freed memory held for the next step (the process lives for
    # this run)
    for recorded in states.values():
        recorded.clear()
    args = cli.build_parser().parse_args(["train", str(spec_file), "--quiet", "--fresh", "--out", str(tmp_path / "b")])
    args.entry_point = True
    try:
        assert train_command.run(args) == 0
        assert states["set-up"] == [False] and states["steps"] and all(states["steps"])
        imports_frozen, set_up_done = states["frozen"]
        # (a frozen object can still be freed, so the count only grows by freezing again)
        assert frozen < imports_frozen and set_up_done < min(states["frozen at steps"])
        assert gc.get_freeze_count() > frozen and gc.isenabled()
        assert held == [True]
    finally:
        gc.enable()
        gc.unfreeze()


COMMAND_CHILD = r"""
import json, runpy, sys
sys.argv = ["kdcore", *sys.argv[1:]]
try:
    runpy.run_module("kdcore", run_name="__main__", alter_sys=True)
except SystemExit as done:
    assert not done.code, done.code
print(json.dumps(sorted(m for m in sys.modules if m.startswith("kdcore.commands."))))
"""


def test_a_command_imports_its_own_module_and_no_other_commands(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KD_HOME": str(tmp_path / "home"),
           "KD_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", COMMAND_CHILD, "cache"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cache folder" in proc.stdout.lower()
    # the cache command and the table formatter it borrows from the layers command: none of the other twelve
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["kdcore.commands.cache", "kdcore.commands.layers"]
