"""Workers as real processes (`python -m kdcore worker`) on a real database, training real tiny runs.

Every process is bounded by a timeout and stopped in `finally`. The digits dataset with an MLP trains an
epoch in well under a second, so the runs are real but short."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from kdcore.jobs import RunStatus, RunStore, ensure_local_worker
from kdcore.jobs.launcher import local_worker_pid, stop_local_worker
from kdcore.jobs.testing import database_url, start_worker, stop_process, wait_until
from kdcore.paths import run_dir
from kdcore.spec import RunSpec, SpecError

RUN_TIMEOUT_S = 150  # generous: two loaded CPU cores shared with other test processes


def tiny(**fields) -> RunSpec:
    return RunSpec(**{"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 2, "batch_size": 64,
                      "probe_size": 16, **fields})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, kd_home, monkeypatch) -> str:
    with database_url(request.param, kd_home) as url:
        monkeypatch.setenv("KD_DATABASE_URL", url)
        yield url


@pytest.fixture()
def sqlite_url(kd_home) -> str:
    with database_url("sqlite", kd_home) as url:
        yield url


@pytest.fixture()
def workers(kd_home):
    """Start workers with workers(url, ...); all are stopped (and reaped) when the test ends."""
    started: list[subprocess.Popen] = []

    def start(url: str, *args: str, **kwargs) -> subprocess.Popen:
        proc = start_worker(kd_home, url, *args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop_process(proc)


def worker_log(home: Path) -> str:
    path = home / "worker.out"
    return path.read_text(errors="replace")[-6000:] if path.exists() else "(no worker output)"


def wait_for(store: RunStore, run_ids, statuses, home: Path, timeout_s: float = RUN_TIMEOUT_S):
    statuses = set(statuses)

    def done():
        records = [store.get(i) for i in run_ids]
        return records if all(r.status in statuses for r in records) else None

    def explain() -> str:
        states = {i: (store.get(i).status.value, store.get(i).error) for i in run_ids}
        return f"states: {states}\nworker output:\n{worker_log(home)}"

    return wait_until(done, timeout_s, f"runs to reach {sorted(s.value for s in statuses)}", on_timeout=explain)


def claims(store: RunStore, run_id: str) -> list[str]:
    return [e.message for e in store.events(run_id) if e.message.startswith("claimed by")]


def assert_history_is_whole(store: RunStore, run_id: str) -> None:
    """The loss points and per-epoch accuracies of an uninterrupted run: one point per reporting interval
    (chosen by time) in step order, no duplicate, every epoch's last step present; one epoch point each."""
    run = store.get(run_id)
    steps = [p.step for p in store.metrics(run_id, names=["loss/total"])]
    per_epoch = run.info["steps_per_epoch"]
    assert steps == sorted(set(steps)), f"duplicates or disorder in the step history: {steps}"
    assert {e * per_epoch for e in range(1, run.spec.epochs + 1)} <= set(steps), \
        f"an epoch's last step is missing from the step history: {steps}"
    assert steps[-1] == run.spec.epochs * per_epoch
    epoch_points = store.metrics(run_id, names=["train/acc"], kind="epoch")
    assert [p.epoch for p in epoch_points] == list(range(1, run.spec.epochs + 1))
    assert epoch_points[-1].step == steps[-1]


def test_two_workers_execute_six_runs_each_exactly_once_and_a_kd_run_waits_for_its_teacher(db_url, kd_home, workers):
    store = RunStore(db_url)
    teacher = store.submit(tiny(name="teacher", epochs=3))
    student = store.submit(tiny(name="student", teacher={"source": "run", "run_id": teacher}, logit={"rho": 4}))
    others = [store.submit(tiny(name=f"scratch {i}", seed=i)) for i in range(4)]
    ids = [teacher, student, *others]
    first = workers(db_url, "--exit-when-idle")
    second = workers(db_url, "--exit-when-idle")
    runs = wait_for(store, ids, {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}, kd_home)
    assert [r.status for r in runs] == [RunStatus.COMPLETED] * 6, [(r.id, r.error) for r in runs]
    for run in runs:
        assert run.attempts == 1 and len(claims(store, run.id)) == 1, store.events(run.id)
        assert run.info["steps_per_epoch"] > 0 and run.info["student"] == "mlp_64"
        started_lines = [e for e in store.events(run.id) if "transfer samples" in e.message]
        assert len(started_lines) == 1  # the trainer started once
        assert_history_is_whole(store, run.id)
        assert set(store.artifacts(run.id)) == {"checkpoint", "metrics_csv", "probes", "spec_yaml"}
    by_id = {r.id: r for r in runs}
    assert by_id[student].started_at >= by_id[teacher].finished_at
    assert by_id[student].final["teacher/test_acc"] == pytest.approx(by_id[teacher].final["test/acc"], abs=1e-6)
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0  # --exit-when-idle: both drained
    assert {r.worker_id for r in runs} <= {w.id for w in store.workers(alive_only=False)}
    assert store.workers() == []  # both stopped cleanly


def test_a_run_whose_worker_is_killed_resumes_on_another_worker_from_its_checkpoint(db_url, kd_home, workers):
    store = RunStore(db_url)
    # Batches of 1 through a wide MLP make an epoch last seconds even on an idle core, long enough to be
    # killed in the middle of one.
    run_id = store.submit(tiny(name="long", epochs=6, batch_size=1, student="mlp_1024_1024", optimizer={"lr": 0.005},
                               checkpoint_every_s=0))
    procs = {}
    for _ in range(2):
        proc = workers(db_url, stale_after_s=3)
        procs[proc.pid] = proc
    checkpoint = run_dir(run_id) / "checkpoint.pt"

    def mid_epoch_after_a_checkpoint():
        run = store.get(run_id)
        if not (checkpoint.is_file() and run.status is RunStatus.RUNNING and run.epoch >= 1):
            return None
        points = store.metrics(run_id, names=["loss/total"])  # stored points past the checkpoint's epoch
        return run if points and points[-1].step > run.epoch * run.info["steps_per_epoch"] else None

    running = wait_until(mid_epoch_after_a_checkpoint, RUN_TIMEOUT_S, "a checkpoint and points after it",
                         on_timeout=lambda: worker_log(kd_home))
    victim = next(w for w in store.workers() if w.id == running.worker_id)
    points_before_kill = store.metrics(run_id, names=["loss/total"])
    procs[victim.pid].send_signal(signal.SIGKILL)
    procs[victim.pid].wait(timeout=30)

    run = wait_for(store, [run_id], {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}, kd_home)[0]
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.attempts == 2 and run.worker_id != victim.id
    messages = [e.message for e in store.events(run_id)]
    assert any("stopped heartbeating" in m and "resume" in m for m in messages)
    resumed = [m for m in messages if m.startswith("resumed after epoch")]
    assert len(resumed) == 1 and int(resumed[0].split()[3]) >= 1  # from a checkpoint, not from scratch
    assert points_before_kill[-1].step > running.epoch * running.info["steps_per_epoch"]  # points past the
    # checkpoint existed ...
    assert_history_is_whole(store, run_id)  # ... and were replaced, not duplicated or lost


def test_cancelling_a_running_run_stops_it_within_seconds_and_keeps_its_checkpoint(db_url, kd_home, workers):
    store = RunStore(db_url)
    run_id = store.submit(tiny(name="endless", epochs=2000, checkpoint_every_s=0))
    workers(db_url)
    checkpoint = run_dir(run_id) / "checkpoint.pt"
    wait_until(lambda: checkpoint.is_file() and store.get(run_id).epoch >= 1, RUN_TIMEOUT_S, "a first checkpoint",
               on_timeout=lambda: worker_log(kd_home))
    store.cancel(run_id, by="tester")
    # The worker reads the flag between steps; the deadline only bounds a loaded CI machine's delay.
    run = wait_for(store, [run_id], {RunStatus.CANCELLED, RunStatus.COMPLETED, RunStatus.FAILED}, kd_home,
                   timeout_s=90)[0]
    assert run.status is RunStatus.CANCELLED and run.epoch < 2000
    assert checkpoint.is_file() and "checkpoint" in store.artifacts(run_id)
    messages = [e.message for e in store.events(run_id)]
    assert "cancel requested by tester" in messages
    assert any(m.startswith("cancelled after") and "is kept" in m for m in messages)


def test_invalid_and_crashing_runs_do_not_disturb_other_runs(db_url, kd_home, workers):
    store = RunStore(db_url)
    with pytest.raises(SpecError, match=r"epochs") as refused:
        store.submit({"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 0})
    assert "epochs" in str(refused.value)
    diverging = store.submit(tiny(name="diverges", optimizer={"lr": 100}))
    good = store.submit(tiny(name="fine"))
    workers(db_url, "--exit-when-idle")
    bad_run, good_run = wait_for(store, [diverging, good], {RunStatus.COMPLETED, RunStatus.FAILED}, kd_home)
    assert bad_run.status is RunStatus.FAILED and "the loss became" in bad_run.error
    failure = [e for e in store.events(diverging) if e.level == "error"]
    assert len(failure) == 1 and "Traceback (most recent call last)" in failure[0].message
    assert "TrainingDivergedError" in failure[0].message
    assert good_run.status is RunStatus.COMPLETED and good_run.final["test/acc"] > 0.3
    assert len(store.list_runs()) == 2  # the refused spec left nothing behind


def test_ensure_local_worker_starts_one_detached_worker_and_sigterm_hands_its_run_back(kd_home, monkeypatch):
    monkeypatch.delenv("KD_LOCAL_WORKER", raising=False)
    store = RunStore()
    run_id = store.submit(tiny(name="long", epochs=2000, checkpoint_every_s=0))
    pid = ensure_local_worker(kd_home, device="cpu", extra_args=["--poll", "0.2", "--heartbeat", "0.5"])
    try:
        assert pid is not None and local_worker_pid(kd_home) == pid
        assert os.getsid(pid) == pid  # its own session: a Ctrl-C in the dashboard's terminal does not reach it
        assert ensure_local_worker(kd_home) is None  # one is alive: no second worker
        wait_until(lambda: store.get(run_id).epoch >= 1, RUN_TIMEOUT_S, "the embedded worker to train an epoch",
                   on_timeout=lambda: "\n".join(p.read_text()[-3000:] for p in kd_home.glob("worker-*.log")))
        # the claim records the worker's run; a heartbeat decided just before the claim may still write "idle"
        # over it, and the next beat (0.5 s here) puts it back
        wait_until(lambda: [w.current_run for w in store.workers()] == [run_id], 30, "the worker to report its run")
        (worker,) = store.workers()
        assert (worker.pid, worker.device, worker.current_run) == (pid, "cpu", run_id)
        log = kd_home / f"worker-{worker.id}.log"
        assert log.is_file() and f"run {run_id}" in log.read_text()
        assert stop_local_worker(kd_home, timeout_s=60)  # SIGTERM: stop between steps, hand the run back
        assert local_worker_pid(kd_home) is None and store.workers() == []
        run = store.get(run_id)
        assert (run.status, run.attempts, run.worker_id) == (RunStatus.QUEUED, 0, None)
        assert any(e.message.startswith(f"released by worker {worker.id}") for e in store.events(run_id))
        assert (run_dir(run_id) / "checkpoint.pt").is_file()  # the next worker resumes from it
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError, TypeError):
            pass
    monkeypatch.setenv("KD_LOCAL_WORKER", "0")
    assert ensure_local_worker(kd_home) is None  # switched off: nothing started


def test_a_worker_bound_to_one_gpu_sees_only_that_gpu(monkeypatch):
    from kdcore.errors import KDError
    from kdcore.jobs.worker import restrict_visible_device

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    restrict_visible_device("cuda:1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    restrict_visible_device("cuda:1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"  # the second of the GPUs this process may use
    with pytest.raises(KDError, match="does not exist"):
        restrict_visible_device("cuda:3")
    restrict_visible_device("cpu")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    restrict_visible_device("auto")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"


def test_cli_submit_runs_cancel_and_logs(kd_home, sqlite_url, tmp_path):
    import sys

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("name: cli run\ndataset: {name: digits}\nstudent: mlp_64\nepochs: 1\n"
                         "sweep: {field: logit.rho, values: [2, 4]}\n")
    env = dict(os.environ, KD_HOME=str(kd_home), KD_DATABASE_URL=sqlite_url)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kdcore", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    submitted = cli("submit", str(spec_file), "--tag", "cli", "--no-check")
    assert submitted.returncode == 0, submitted.stderr
    ids = submitted.stdout.split()
    assert len(ids) == 2 and "as sweep" in submitted.stderr
    listed = cli("runs")
    assert listed.returncode == 0 and all(i in listed.stdout for i in ids) and "2 queued" in listed.stdout
    cancelled = cli("cancel", ids[0][:6])
    assert cancelled.returncode == 0 and f"{ids[0]}: cancelled" in cancelled.stdout
    again = cli("cancel", ids[0])
    assert again.returncode == 2 and again.stderr.strip() == f"error: run {ids[0]} has already cancelled; " \
                                                             "there is nothing to cancel"
    logs = cli("logs", ids[0])
    assert logs.returncode == 0 and "submitted by" in logs.stdout and "cancelled by" in logs.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: mlp_64\nlogit: {rho: -2}\n")
    refused = cli("submit", str(bad))
    assert refused.returncode == 2 and refused.stderr.startswith("error: logit.rho:")
    assert RunStore(sqlite_url).queue_counts()["queued"] == 1


def test_a_bound_worker_trains_on_its_own_device_whatever_the_spec_wished():
    from kdcore.jobs.worker import Worker
    from kdcore.spec import RunSpec

    spec = RunSpec(device="cuda:1")
    worker = Worker.__new__(Worker)  # only the placement rule, no store or process
    worker._held = []  # holding no share of a device pool
    for bound, expected in (("cuda:3", "cuda"), ("cpu", "cpu"), ("auto", "cuda:1")):
        worker.config = type("C", (), {"device": bound})()
        assert worker._placed(spec).device == expected
