"""Workers that own several devices: multi-device runs through the elastic launcher, no oversubscription,
cancellation reaching every rank with no process left behind (gloo on the CPU)."""
from __future__ import annotations

from pathlib import Path

import pytest

from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs.testing import database_url, start_worker, stop_process, wait_until
from kdcore.paths import run_dir
from kdcore.spec import RunSpec

RUN_TIMEOUT_S = 240


def tiny(**fields) -> RunSpec:
    return RunSpec(**{"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 2, "batch_size": 64,
                      "probe_size": 8, "device": "cpu", **fields})


@pytest.fixture()
def sqlite_url(kd_home) -> str:
    with database_url("sqlite", kd_home) as url:
        yield url


def run_processes(run_id: str) -> list[int]:
    """Pids of every live process belonging to a run (its launcher and ranks carry the run id)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if run_id.encode() in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def test_the_sidebar_counts_each_workers_busy_and_free_devices():
    from types import SimpleNamespace

    from app.widgets import worker_lines

    def w(wid, run=None):
        return SimpleNamespace(id=wid, device="cuda", current_run=run)

    lines = worker_lines([w("gpu-box-s0", "r2"), w("gpu-box-s1"), w("laptop"), w("box2-s0", "a"), w("box2-s1", "b")],
                         {"r2": 2, "a": 1, "b": 1})
    assert lines[0].endswith("`gpu-box` · cuda · 2 busy, 0 free · training `r2` on 2 devices")
    assert lines[1].endswith("`laptop` · cuda · free · idle")
    assert "2 busy, 0 free · training `a`, training `b`" in lines[2]


def test_a_worker_claims_only_runs_that_fit_its_free_devices(sqlite_url):
    store = RunStore(sqlite_url)
    wide = store.submit(tiny(name="wide", devices=2))
    narrow = store.submit(tiny(name="narrow"))
    store.register_worker("w1", host="h", pid=1, device="cpu")
    claimed = store.claim_next("w1", device="cpu", max_devices=1)
    assert claimed is not None and claimed.id == narrow  # the older 2-device run does not fit one device
    assert store.claim_next("w1", device="cpu", max_devices=1) is None
    assert store.claim_next("w1", device="cpu", max_devices=2).id == wide
    two_nodes = store.submit(tiny(name="two nodes", nodes=2))
    assert store.claim_next("w1", device="cpu", max_devices=8) is None  # a worker alone is one node
    assert store.get(two_nodes).status is RunStatus.QUEUED


@pytest.mark.slow
def test_a_two_device_worker_runs_a_two_process_run_and_a_cancel_stops_every_rank(sqlite_url, kd_home):
    store = RunStore(sqlite_url)
    done = store.submit(tiny(name="two ranks", devices=2))
    endless = store.submit(tiny(name="endless", devices=2, epochs=2000, checkpoint_every_s=0))
    worker = start_worker(kd_home, sqlite_url, "--device", "cpu", "--devices", "2")
    try:
        finished = wait_until(lambda: (r := store.get(done)).status in (RunStatus.COMPLETED, RunStatus.FAILED) and r,
                              RUN_TIMEOUT_S, "the 2-process run to end",
                              on_timeout=lambda: (kd_home / "worker.out").read_text()[-4000:])
        assert finished.status is RunStatus.COMPLETED, finished.error
        assert finished.info["world_size"] == 2 and finished.info["device_batch"] == 32
        assert finished.final["test/acc"] > 0.3
        epochs = [p.epoch for p in store.metrics(done, names=["train/acc"], kind="epoch")]
        assert epochs == [1, 2]  # rank 0 alone reported: one point per epoch
        from app.widgets import run_caption

        assert "world size 2 (32 per device, global batch 64, lr scaling: none)" in run_caption(finished)
        checkpoint = run_dir(endless) / "checkpoint.pt"
        wait_until(lambda: checkpoint.is_file() and len(run_processes(endless)) >= 3, RUN_TIMEOUT_S,
                   "the endless run's launcher and two ranks with a checkpoint")
        store.cancel(endless, by="tester")
        # generous deadlines (the ranks get RANK_STOP_GRACE_S after SIGTERM; CI's cores are shared)
        run = wait_until(lambda: (r := store.get(endless)).status is not RunStatus.RUNNING and r, 120,
                         "the cancel to reach the run")
        assert run.status is RunStatus.CANCELLED
        # then the launcher and both ranks are gone, none orphaned
        wait_until(lambda: run_processes(endless) == [], 60, "every process of the run to end",
                   on_timeout=lambda: f"left: {run_processes(endless)}")
        assert checkpoint.is_file()
    finally:
        stop_process(worker)


def rank_pid(run_id: str, rank: int) -> int | None:
    for pid in run_processes(run_id):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
    return None


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_ends_the_attempt_and_the_run_resumes_from_its_checkpoint(sqlite_url, kd_home):
    import os
    import signal

    store = RunStore(sqlite_url)
    # two samples per rank and step through a wide MLP: an epoch lasts long enough to be killed in the middle
    run_id = store.submit(tiny(name="killed rank", devices=2, batch_size=4, epochs=3, checkpoint_every_s=0,
                               student="mlp_1024_1024", optimizer={"lr": 0.005}))
    worker = start_worker(kd_home, sqlite_url, "--device", "cpu", "--devices", "2", "--exit-when-idle")
    try:
        checkpoint = run_dir(run_id) / "checkpoint.pt"

        def mid_epoch_after_a_checkpoint():
            run = store.get(run_id)
            if not (checkpoint.is_file() and run.epoch >= 1 and run.epoch < run.spec.epochs):
                return None
            points = store.metrics(run_id, names=["loss/total"])
            past = points and points[-1].step > run.epoch * run.info["steps_per_epoch"]
            return rank_pid(run_id, 1) if past else None

        victim = wait_until(mid_epoch_after_a_checkpoint, RUN_TIMEOUT_S, "rank 1 mid-epoch after a checkpoint",
                            on_timeout=lambda: (kd_home / "worker.out").read_text()[-4000:])
        os.kill(victim, signal.SIGKILL)
        run = wait_until(lambda: (r := store.get(run_id)).status in (RunStatus.COMPLETED, RunStatus.FAILED) and r,
                         RUN_TIMEOUT_S, "the run to end", on_timeout=lambda: (kd_home / "worker.out").read_text()[-4000:])
        assert run.status is RunStatus.COMPLETED, run.error
        assert run.attempts == 2
        messages = [e.message for e in store.events(run_id)]
        assert any("a rank ended with exit code" in m for m in messages)
        assert any(m.startswith("resumed after epoch") for m in messages)  # from the checkpoint, not from scratch
        steps = [p.step for p in store.metrics(run_id, names=["loss/total"])]
        per_epoch = run.info["steps_per_epoch"]
        assert steps == sorted(set(steps)) and steps[-1] == run.spec.epochs * per_epoch  # gapless, no duplicate
        assert {e * per_epoch for e in range(1, run.spec.epochs + 1)} <= set(steps)
        epochs = [p.epoch for p in store.metrics(run_id, names=["train/acc"], kind="epoch")]
        assert epochs == [1, 2, 3]
    finally:
        stop_process(worker)


@pytest.mark.slow
def test_two_devices_take_two_one_device_runs_at_once_and_never_a_third_device(sqlite_url, kd_home):
    store = RunStore(sqlite_url)
    singles = [store.submit(tiny(name=f"single {i}", epochs=2000, checkpoint_every_s=3600)) for i in range(2)]
    wide = store.submit(tiny(name="wide", devices=2, epochs=1))
    worker = start_worker(kd_home, sqlite_url, "--device", "cpu", "--devices", "2")
    try:
        wait_until(lambda: all(store.get(i).status is RunStatus.RUNNING and store.get(i).step > 0 for i in singles),
                   RUN_TIMEOUT_S, "both 1-device runs training at once",
                   on_timeout=lambda: (kd_home / "worker.out").read_text()[-4000:])
        assert store.get(wide).status is RunStatus.QUEUED  # both devices are busy: the 2-device run waits
        for run_id in singles:
            store.cancel(run_id, by="tester")
        finished = wait_until(lambda: (r := store.get(wide)).status in (RunStatus.COMPLETED, RunStatus.FAILED) and r,
                              RUN_TIMEOUT_S, "the 2-device run once both devices are free",
                              on_timeout=lambda: (kd_home / "worker.out").read_text()[-4000:])
        assert finished.status is RunStatus.COMPLETED, finished.error
        assert all(store.get(i).status is RunStatus.CANCELLED for i in singles)
        assert finished.started_at >= max(store.get(i).finished_at for i in singles)
    finally:
        stop_process(worker)
