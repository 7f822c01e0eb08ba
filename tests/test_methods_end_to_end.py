"""Each method added beside the original eight, launched end to end on digits: once from the CLI
(`python -m kdcore train spec.yaml`) and once from the New experiment page (AppTest) through a worker.
Both use the packaged digits teacher (cnn_small) and a cnn_small student, so every method applies."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
from test_app_support import (
    TEACHER,
    app,
    completed_run,
    no_exception,
    no_local_worker,  # noqa: F401 - autouse: no real worker
)

from kdcore import cli
from kdcore.commands import train as train_command
from kdcore.jobs import RunStore
from kdcore.methods import get_method
from kdcore.paths import run_dir
from kdcore.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DIGITS_TEACHER = ROOT / "kdcore" / "assets" / "teacher_digits.pt"
NEW_METHODS = ["rkd", "pkt", "sp", "vid", "fsp", "crd", "reviewkd", "kdsvd", "dist", "logit_std"]


def method_block(name: str) -> dict:
    """Where the method goes in a spec: the logit block for a logit method, else an entry of `losses`."""
    if get_method(name).slot == "logit":
        return {"logit": {"method": name}}
    return {"losses": [{"method": name}]}


def method_losses(metrics: dict, name: str) -> dict:
    """The method's own loss terms: `loss/<name>_<term>`, or a logit method's terms beside the hard one."""
    if get_method(name).slot == "logit":
        return {k: v for k, v in metrics.items() if k.startswith("loss/") and k not in ("loss/total", "loss/hard")}
    return {k: v for k, v in metrics.items() if k.startswith(f"loss/{name}_")}


def test_every_new_method_is_listed_by_the_cli(capsys):
    assert cli.main(["methods"]) == 0
    listed = capsys.readouterr().out
    for name in NEW_METHODS:
        assert f"\n{name}  (" in "\n" + listed, name
    assert int(listed.strip().splitlines()[-1].split()[0]) >= 18


@pytest.fixture(scope="module")
def teacher_store(tmp_path_factory):
    """A KD_HOME holding one completed digits teacher run whose checkpoint is the packaged teacher."""
    home = tmp_path_factory.mktemp("kdhome")
    mp = pytest.MonkeyPatch()
    mp.setenv("KD_HOME", str(home))
    mp.delenv("KD_DATABASE_URL", raising=False)
    mp.setenv("KD_LOCAL_WORKER", "0")
    store = RunStore()
    teacher_id = completed_run(store, TEACHER)
    run_dir(teacher_id).mkdir(parents=True, exist_ok=True)
    shutil.copy(DIGITS_TEACHER, run_dir(teacher_id) / "checkpoint.pt")
    yield store, teacher_id
    mp.undo()


def launch_from_the_page(store: RunStore, teacher_id: str, name: str):
    """Fill the New experiment form for `name` with its defaults, launch, and return the queued run."""
    before = {r.id for r in store.list_runs()}
    at = app("new_experiment.py")
    at.radio(key="teacher_source").set_value("run").run()
    at.selectbox(key="teacher_run").set_value(teacher_id).run()
    at.selectbox(key="student").set_value("cnn_small").run()
    at.number_input(key="epochs").set_value(2).run()
    at.number_input(key="batch_size").set_value(256).run()  # a few steps over digits: the launch is what is tested
    if get_method(name).slot == "logit":
        at.radio(key="method").set_value(name).run()
    else:
        at.button(key="add_loss").click().run()
        at.selectbox(key="loss_0_method").set_value(name).run()
    at.text_input(key="name").set_value(f"app {name}").run()
    no_exception(at)
    assert not at.button(key="launch").disabled, [m.value for m in at.markdown if m.value.startswith(":red[")]
    at.button(key="launch").click().run()
    no_exception(at)
    (run_id,) = {r.id for r in store.list_runs()} - before
    return store.get(run_id)


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_METHODS)
def test_method_launches_from_the_page_and_trains_from_the_cli(teacher_store, tmp_path, name, capsys, monkeypatch):
    """The page queues the method with the authors' defaults; `python -m kdcore train` runs that very spec
    (teacher: the stored run), so both ways in reach the trainer with the same run description."""
    store, teacher_id = teacher_store
    record = launch_from_the_page(store, teacher_id, name)
    chosen = record.spec.logit if get_method(name).slot == "logit" else record.spec.losses[0]
    assert chosen == get_method(name).params()
    assert record.spec.teacher.run_id == teacher_id and record.spec.student == "cnn_small"

    steps: list[dict] = []  # what the CLI's console sees at each logged step
    original = train_command.ConsoleCallbacks.on_step
    monkeypatch.setattr(train_command.ConsoleCallbacks, "on_step",
                        lambda self, epoch, step, metrics: (steps.append(dict(metrics)), original(self, epoch, step, metrics)))
    path = tmp_path / "spec.yaml"
    path.write_text(record.spec.model_copy(update={"device": "cpu", "probe_size": 0}).to_yaml())
    assert cli.main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0, capsys.readouterr()
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["history"][-1]["epoch"] == 2
    terms = method_losses(steps[-1], name)
    assert terms and all(math.isfinite(v) for v in terms.values()), steps[-1].keys()
    if name == "crd":  # the memory banks travel with the checkpoint, written for the samples seen
        state = ckpt["methods"]
        assert {"0.loss.memory_s", "0.loss.memory_t", "0.loss.normaliser"} <= set(state)
        assert (state["0.loss.normaliser"] > 0).all()
