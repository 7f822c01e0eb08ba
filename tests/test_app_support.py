"""Helpers for the dashboard tests: a store filled the way a worker fills it, without training anything.

Runs are submitted through the store, claimed by a fake worker and fed metric points through the
worker's own StoreCallbacks, so the pages read exactly what a real worker would have written."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs.worker import StoreCallbacks
from kdcore.paths import run_dir
from kdcore.spec import RunSpec

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
WORKER = "test-worker"

TEACHER = {"name": "digits teacher", "dataset": {"name": "digits"}, "student": "cnn_small", "epochs": 3}
SCRATCH = {"name": "digits scratch", "dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 3,
           "transfer": {"kind": "partial_labels", "label_fraction": 0.05}}


def kd_spec(teacher_id: str, rho: float = 4.0, name: str = "digits kd") -> dict:
    return {"name": name, "dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 3,
            "teacher": {"source": "run", "run_id": teacher_id}, "logit": {"rho": rho, "alpha": 0.5, "beta": 0.5},
            "transfer": {"kind": "partial_labels", "label_fraction": 0.05}}


@pytest.fixture(autouse=True)
def no_local_worker(monkeypatch):
    """The app must not start a real worker in these tests; import this fixture into a test module."""
    monkeypatch.setenv("KD_LOCAL_WORKER", "0")


def app(page: str | None = None, **query: str) -> AppTest:
    """The real app (app/main.py with its navigation), on `page` (a file in pages/), without a worker."""
    assert os.environ.get("KD_LOCAL_WORKER") == "0", "use the no_local_worker fixture"
    at = AppTest.from_file(MAIN, default_timeout=60)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page is not None:
        at.switch_page(f"../pages/{page}")
        at.run()
    return at


def claim(store: RunStore, run_id: str) -> StoreCallbacks:
    """Claim `run_id` (it must be the oldest runnable run) as the fake worker would."""
    store.register_worker(WORKER, host="test-host", pid=os.getpid(), device="cpu")
    record = store.claim_next(WORKER, device="cpu")
    assert record is not None and record.id == run_id, f"expected to claim {run_id}, got {record and record.id}"
    cb = StoreCallbacks(store, run_id, WORKER, record.attempts, flush_interval_s=0.0)
    cb.on_start({"device": "cpu", "start_epoch": 0, "start_step": 0})
    return cb


def feed(cb: StoreCallbacks, epochs: range, *, steps_per_epoch: int = 5, kd: bool = False) -> None:
    """Step and epoch metrics as the trainer reports them, for the given epochs (1-based)."""
    for epoch in epochs:
        for i in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + i + 1
            losses = {"loss/hard": 2.0 / step, "loss/total": 2.5 / step, "lr": 0.01, "throughput": 1000.0 + step}
            if kd:
                losses["loss/soft"] = 0.5 / step
            cb.on_step(epoch, step, losses)
        metrics = {"train/loss": 1.0 / epoch, "train/acc": 0.5 + 0.1 * epoch, "val/acc": 0.5 + 0.1 * epoch,
                   "test/acc": 0.5 + 0.1 * epoch, "epoch_time": 0.2}
        if kd:
            metrics.update({"fidelity/agreement": 0.6 + 0.1 * epoch, "fidelity/kl_rho1": 0.3 / epoch,
                            "teacher/test_acc": 0.98})
        cb.on_epoch(epoch, epoch * steps_per_epoch, metrics)
        cb.on_log(f"epoch {epoch}: test acc {0.5 + 0.1 * epoch:.4f}")
    cb.flush()


def write_artifacts(run_id: str, *, teacher: bool, epochs: int = 3, classes: int = 10, probes: int = 20) -> None:
    """probes.pt, spec.yaml, metrics.csv and a small checkpoint.pt in the run's folder."""
    folder = run_dir(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(probes) % classes
    onehot = torch.nn.functional.one_hot(labels, classes).float()
    torch.save({
        "indices": torch.arange(probes), "labels": labels,
        "images": (torch.rand(probes, 1, 8, 8, generator=g) * 255).to(torch.uint8),
        "class_names": [str(c) for c in range(classes)],
        "teacher": 8 * onehot + torch.randn(probes, classes, generator=g) if teacher else None,
        "student": [e * onehot + torch.randn(probes, classes, generator=g) for e in range(1, epochs + 1)],
        "epochs": list(range(1, epochs + 1)),
    }, folder / "probes.pt")
    (folder / "spec.yaml").write_text("student: mlp_64\n")
    (folder / "metrics.csv").write_text("epoch,step,test/acc\n1,5,0.6\n")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, folder / "checkpoint.pt")


def completed_run(store: RunStore, spec: dict, *, kd: bool = False, epochs: int = 3) -> str:
    run_id = store.submit(spec, check=False)
    complete(store, run_id, kd=kd, epochs=epochs)
    return run_id


def filled_store() -> tuple[RunStore, dict[str, str]]:
    """A teacher, a scratch student and a KD student, all completed."""
    store = RunStore()
    teacher = completed_run(store, TEACHER)
    scratch = completed_run(store, SCRATCH)
    kd = completed_run(store, kd_spec(teacher), kd=True)
    return store, {"teacher": teacher, "scratch": scratch, "kd": kd}


# ---- the helpers themselves ----------------------------------------------------------------------
def test_fake_worker_writes_what_a_page_reads(kd_home):
    store = RunStore()
    run_id = store.submit(SCRATCH, check=False)
    cb = claim(store, run_id)
    feed(cb, range(1, 2))
    record = store.get(run_id)
    assert record.status is RunStatus.RUNNING and record.epoch == 1
    names = {p.name for p in store.metrics(run_id)}
    assert {"loss/total", "test/acc", "lr"} <= names
    assert [p.step for p in store.metrics(run_id, since_step=4)] and all(
        p.step > 4 for p in store.metrics(run_id, since_step=4))


def test_filled_store_has_the_trio_completed(kd_home):
    store, ids = filled_store()
    assert {store.get(i).status for i in ids.values()} == {RunStatus.COMPLETED}
    assert store.get(ids["kd"]).final["fidelity/agreement"] == pytest.approx(0.9)
    assert RunSpec.from_dict(store.get(ids["kd"]).spec.to_dict()).teacher.run_id == ids["teacher"]


def complete(store: RunStore, run_id: str, *, kd: bool = False, epochs: int = 3) -> None:
    """Finish an already queued run (it must be the oldest runnable one) as a worker would."""
    cb = claim(store, run_id)
    feed(cb, range(1, epochs + 1), kd=kd)
    write_artifacts(run_id, teacher=kd, epochs=epochs)
    assert store.finish_run(run_id, WORKER, cb.attempt, RunStatus.COMPLETED, final=cb.info.get("final"))


def texts(at: AppTest) -> str:
    """Every piece of text on the page, for asserting what a user reads."""
    parts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning",
                                   "error", "success") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
