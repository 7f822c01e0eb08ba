"""The run store (kdcore.jobs): the same tests on SQLite and, when KD_TEST_POSTGRES_URL is set, PostgreSQL."""
from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text, update

from kdcore.errors import KDError
from kdcore.jobs import RunNotFoundError, RunStateError, RunStatus, RunStore
from kdcore.jobs import schema as t
from kdcore.jobs.db import StoreUnavailableError, dispose_engines, write_tx
from kdcore.jobs.testing import claim_all, database_url
from kdcore.jobs.worker import StoreCallbacks
from kdcore.paths import run_dir
from kdcore.spec import RunSpec, SpecError


def tiny(**fields) -> RunSpec:
    return RunSpec(**{"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 2, "batch_size": 64, **fields})


def point(step: int, name: str = "loss/total", value: float = 1.0, epoch: int = 1, kind: str = "step") -> dict:
    return {"step": step, "epoch": epoch, "name": name, "value": value, "wall_time": time.time(), "kind": kind}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request, kd_home, monkeypatch) -> RunStore:
    with database_url(request.param, kd_home) as url:
        monkeypatch.setenv("KD_DATABASE_URL", url)
        yield RunStore(url)


def claim(store: RunStore, worker: str = "w1"):
    store.register_worker(worker, host="test-host", pid=1, device="cpu")
    record = store.claim_next(worker, device="cpu")
    assert record is not None
    return record


def make_stale(store: RunStore, run_id: str) -> None:
    with store.engine.begin() as conn:
        old = store.get(run_id).heartbeat_at - timedelta(hours=1)
        conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(heartbeat_at=old))


# ---- schema and database ----------------------------------------------------------------------------

def test_default_store_is_a_wal_sqlite_file_in_kd_home_with_a_schema_version(kd_home):
    store = RunStore()
    assert (kd_home / "kdstudio.db").is_file()
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        version = conn.execute(select(t.meta_table.c.value).where(t.meta_table.c.key == "schema_version")).scalar()
    assert int(version) == t.SCHEMA_VERSION
    dispose_engines()


def test_kd_database_url_selects_the_database(kd_home, tmp_path, monkeypatch):
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("KD_DATABASE_URL", f"sqlite:///{other}")
    store = RunStore()
    store.submit(tiny(), check=False)
    assert other.is_file() and not (kd_home / "kdstudio.db").exists()
    dispose_engines()


def test_a_store_written_by_a_newer_version_is_refused(store):
    with store.engine.begin() as conn:
        conn.execute(update(t.meta_table).where(t.meta_table.c.key == "schema_version").values(value="999"))
    dispose_engines()
    with pytest.raises(StoreUnavailableError, match="newer KD Studio"):
        RunStore(store.url)


def test_an_unreachable_database_is_one_clear_error(kd_home):
    with pytest.raises(StoreUnavailableError, match="cannot open the run store"):
        RunStore("sqlite:////proc/no/such/dir/x.db")


# ---- submit and read ------------------------------------------------------------------------------------

def test_submit_then_get_round_trips_the_spec(store):
    spec = tiny(name="baseline", tags=["from-spec"])
    run_id = store.submit(spec, owner="ada", tags=["extra", "from-spec"])
    run = store.get(run_id)
    assert run.spec == spec
    assert (run.name, run.status, run.owner, run.attempts) == ("baseline", RunStatus.QUEUED, "ada", 0)
    assert run.tags == ["extra", "from-spec"]
    assert run.worker_id is None and run.started_at is None and run.duration_s is None
    assert (run.dataset, run.student, run.method_label, run.teacher_label) == ("digits", "mlp_64", "scratch", None)
    assert store.get(run_id[:5]).id == run_id  # a unique prefix works too
    assert store.events(run_id)[0].message.startswith("submitted by ada")


def test_submit_accepts_a_dict_and_names_the_run_when_the_spec_does_not(store):
    run_id = store.submit({"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 1})
    assert store.get(run_id).name == "mlp_64 scratch on digits"
    assert store.get(store.submit(tiny(), name="mine")).name == "mine"


def test_an_invalid_spec_is_refused_with_its_reason_and_stores_nothing(store):
    with pytest.raises(SpecError, match=r"logit\.rho"):
        store.submit({"student": "mlp_64", "logit": {"rho": -1}})
    with pytest.raises(SpecError, match="not a known field"):
        store.submit({"student": "mlp_64", "rhoo": 4})
    with pytest.raises(SpecError, match="student"):
        store.submit(tiny(student="no_such_model"))  # found by the model registry, not by pydantic
    assert store.list_runs() == []


def test_unknown_runs_are_one_clear_error(store):
    with pytest.raises(RunNotFoundError, match="no run 'nope'"):
        store.get("nope")
    with pytest.raises(RunNotFoundError):
        store.cancel("deadbeef")


def test_list_runs_filters_and_orders_newest_first(store):
    a = store.submit(tiny(name="alpha run"), owner="ada", tags=["x"], check=False)
    b = store.submit(tiny(name="beta run"), owner="bob", tags=["x", "y"], check=False)
    c = store.submit(tiny(name="gamma"), owner="ada", check=False)
    claim(store)  # a, the oldest, is running now
    assert [r.id for r in store.list_runs()] == [c, b, a]
    assert [r.id for r in store.list_runs(status="running")] == [a]
    assert [r.id for r in store.list_runs(status=["queued", RunStatus.RUNNING])] == [c, b, a]
    assert [r.id for r in store.list_runs(owner="ada")] == [c, a]
    assert [r.id for r in store.list_runs(tag="x")] == [b, a]
    assert [r.id for r in store.list_runs(tag="y")] == [b]
    assert [r.id for r in store.list_runs(search="RUN")] == [b, a]
    assert [r.id for r in store.list_runs(search=c[:4])] == [c]
    assert [r.id for r in store.list_runs(search="%")] == []  # LIKE wildcards are literal
    assert [r.id for r in store.list_runs(limit=1)] == [c]
    with pytest.raises(KDError, match="unknown run status"):
        store.list_runs(status="sleeping")
    assert store.queue_counts() == {"queued": 2, "running": 1, "completed": 0, "failed": 0, "cancelled": 0}


def test_a_sweep_becomes_a_group_of_runs_with_one_sweep_id(store):
    ids = store.submit_sweep(tiny(name="temp"), "logit.rho", [1, 2, 4, 8, 16], owner="ada")
    runs = [store.get(i) for i in ids]
    assert [r.spec.logit.rho for r in runs] == [1, 2, 4, 8, 16]
    assert len({r.sweep_id for r in runs}) == 1 and runs[0].sweep_id is not None
    assert [r.id for r in store.list_runs(sweep_id=runs[0].sweep_id)] == ids[::-1]
    assert runs[0].name == "temp [logit.rho=1]"
    assert store.sweep_ids() == [runs[0].sweep_id]
    # the queue keeps the sweep's order
    assert [claim(store, f"w{i}").id for i in range(5)] == ids

    pairs = store.submit_sweep(tiny(), ["logit.alpha", "logit.beta"], [[0.1, 0.9], [0.5, 0.5]])
    assert [(store.get(i).spec.logit.alpha, store.get(i).spec.logit.beta) for i in pairs] == [(0.1, 0.9), (0.5, 0.5)]
    with pytest.raises(SpecError, match="logit.rho"):  # one bad value refuses the whole sweep
        store.submit_sweep(tiny(), "logit.rho", [2, -1])
    assert len(store.list_runs()) == 7


def test_submit_yaml_with_and_without_a_sweep_block(store):
    one = store.submit_yaml("dataset: {name: digits}\nstudent: mlp_64\nepochs: 1\n", owner="ada")
    assert len(one) == 1 and store.get(one[0]).sweep_id is None
    many = store.submit_yaml("student: mlp_64\nepochs: 1\nsweep: {field: logit.rho, values: [2, 4]}\n")
    assert [store.get(i).spec.logit.rho for i in many] == [2, 4]
    with pytest.raises(SpecError, match="YAML"):
        store.submit_yaml("student: [unclosed")


# ---- claiming -------------------------------------------------------------------------------------------

def test_claims_take_the_oldest_queued_run_once(store):
    first = store.submit(tiny(), check=False)
    second = store.submit(tiny(), check=False)
    a = claim(store, "w1")
    b = claim(store, "w2")
    assert (a.id, b.id) == (first, second)
    assert (a.status, a.worker_id, a.attempts, a.device) == (RunStatus.RUNNING, "w1", 1, "cpu")
    assert a.started_at is not None and a.heartbeat_at is not None
    assert store.claim_next("w3", device="cpu") is None
    assert [w.current_run for w in store.workers() if w.id == "w1"] == [first]


def test_parallel_processes_never_claim_a_run_twice(store):
    ids = set(store.submit(tiny(), check=False) for _ in range(24))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        claimed = pool.starmap(claim_all, [(store.url, f"racer{i}", 0.01) for i in range(4)])
    flat = [run_id for ids_of_one in claimed for run_id in ids_of_one]
    assert sorted(flat) == sorted(ids)  # every run once, none twice
    assert {r.status for r in store.list_runs()} == {RunStatus.COMPLETED}
    assert {r.attempts for r in store.list_runs()} == {1}


# ---- dependencies ---------------------------------------------------------------------------------------

def student_of(teacher_id: str) -> RunSpec:
    return tiny(teacher={"source": "run", "run_id": teacher_id}, logit={"rho": 4})


def test_a_kd_run_waits_until_its_teacher_run_completed(store):
    teacher = store.submit(tiny(name="teacher"))
    student = store.submit(student_of(teacher))
    assert store.get(student).depends_on == teacher
    assert store.get(student).teacher_label == f"run {teacher}"
    t_run = claim(store, "w1")
    assert t_run.id == teacher
    assert store.claim_next("w2", device="cpu") is None  # the student is not runnable yet
    assert store.finish_run(teacher, "w1", 1, RunStatus.COMPLETED, final={"test/acc": 0.9})
    assert claim(store, "w2").id == student


def hint_student_of(teacher_id: str) -> RunSpec:
    return tiny(student="cnn_small", teacher={"source": "run", "run_id": teacher_id}, logit={"rho": 4},
                hints=[{"teacher_layer": "stage1", "student_layer": "stage1", "preset": "fitnets"}])


@pytest.mark.parametrize("declared", ["api", "cli"])
def test_a_run_submitted_after_another_still_waits_for_its_teacher_and_checks_hints_in_the_teacher(
        store, declared, tmp_path, capsys):
    teacher = store.submit(tiny(name="teacher", student="cnn_small"))
    other = store.submit(tiny(name="other"))  # an MLP: it has no layer stage1
    assert claim(store, "w1").id == teacher  # the teacher is still training when the student is submitted
    assert claim(store, "w2").id == other
    assert store.finish_run(other, "w2", 1, RunStatus.COMPLETED)
    if declared == "api":
        student = store.submit(hint_student_of(teacher), depends_on=other)
    else:
        from kdcore.cli import main

        spec_file = tmp_path / "student.yaml"
        spec_file.write_text(hint_student_of(teacher).to_yaml())
        assert main(["submit", str(spec_file), "--after", other]) == 0, capsys.readouterr().err
        student = capsys.readouterr().out.split()[0]
    assert store.claim_next("w3", device="cpu") is None  # `other` completed, but the teacher has not
    assert any(f"waits for runs {teacher}, {other}" in e.message for e in store.events(student))
    assert store.finish_run(teacher, "w1", 1, RunStatus.COMPLETED)
    assert claim(store, "w3").id == student


def test_a_run_waiting_for_two_runs_fails_when_either_fails(store):
    teacher = store.submit(tiny(name="teacher"))
    other = store.submit(tiny(name="other"))
    student = store.submit(student_of(teacher), depends_on=other)
    claim(store, "w1")
    assert claim(store, "w2").id == other
    store.finish_run(other, "w2", 1, RunStatus.FAILED, error="boom")
    assert store.get(student).status is RunStatus.FAILED
    assert store.get(student).error.startswith(f"run {other} failed")
    assert store.get(teacher).status is RunStatus.RUNNING  # the teacher itself is not disturbed


@pytest.mark.parametrize("outcome", ["failed", "cancelled"])
def test_a_kd_run_fails_with_a_clear_reason_when_its_teacher_does_not_complete(store, outcome):
    teacher = store.submit(tiny(name="teacher"))
    student = store.submit(student_of(teacher))
    other = store.submit(tiny(), check=False)
    claim(store, "w1")
    if outcome == "failed":
        store.finish_run(teacher, "w1", 1, RunStatus.FAILED, error="boom")
        reason = f"teacher run {teacher} failed"
    else:
        store.cancel(teacher)
        store.finish_run(teacher, "w1", 1, RunStatus.CANCELLED)
        reason = f"teacher run {teacher} was cancelled"
    run = store.get(student)
    assert run.status is RunStatus.FAILED and run.error.startswith(reason)
    assert any(reason in e.message for e in store.events(student))
    assert store.get(other).status is RunStatus.QUEUED  # nothing else disturbed
    with pytest.raises(SpecError, match=f"run {teacher} {outcome}"):
        store.submit(student_of(teacher))


def test_a_run_waiting_for_a_deleted_run_fails_and_unknown_teachers_are_refused(store):
    teacher = store.submit(tiny(name="teacher"))
    student = store.submit(student_of(teacher))
    grandchild = store.submit(tiny(), depends_on=student)
    store.delete(teacher)
    assert store.get(student).error.startswith(f"teacher run {teacher} was deleted")
    assert store.get(grandchild).error.startswith(f"run {student} failed")  # a chain fails link by link
    with pytest.raises(SpecError, match="teacher.run_id: there is no run"):
        store.submit(student_of("cafef00d"))


# ---- metrics, events, ownership --------------------------------------------------------------------------

def test_metrics_since_step_names_and_kind(store):
    store.submit(tiny(), check=False)
    run = claim(store, "w1")
    points = [point(s, "loss/total", s * 1.0) for s in range(1, 6)] + [point(s, "lr", 0.1) for s in range(1, 6)]
    points.append(point(5, "test/acc", 0.8, kind="epoch"))
    assert store.record_progress(run.id, "w1", 1, points=points, step=5, epoch=1, final={"test/acc": 0.8})
    assert len(store.metrics(run.id)) == 11
    assert [p.step for p in store.metrics(run.id, since_step=3, names=["loss/total"])] == [4, 5]
    assert [(p.name, p.value) for p in store.metrics(run.id, kind="epoch")] == [("test/acc", 0.8)]
    frame = store.metrics_frame(run.id, since_step=4)
    assert list(frame.columns) == ["step", "epoch", "name", "value", "wall_time"] and len(frame) == 3
    record = store.get(run.id)
    assert (record.step, record.epoch, record.final) == (5, 1, {"test/acc": 0.8})
    # a repeated point replaces the stored one (the unique (run, name, step) safety net)
    store.record_progress(run.id, "w1", 1, points=[point(5, "loss/total", 99.0), point(6, "x", float("nan"))])
    assert [p.value for p in store.metrics(run.id, since_step=4, names=["loss/total"])] == [99.0]
    assert store.metrics(run.id, names=["x"]) == []  # NaN points are dropped
    with pytest.raises(KDError, match="metric kind"):
        store.metrics(run.id, kind="bogus")


def test_events_since_id(store):
    run_id = store.submit(tiny(), check=False)
    for i in range(3):
        store.log_event(run_id, f"line {i}", level="warning" if i == 1 else "info")
    events = store.events(run_id)
    assert [e.message for e in events[1:]] == ["line 0", "line 1", "line 2"] and events[2].level == "warning"
    assert [e.message for e in store.events(run_id, since_id=events[2].id)] == ["line 2"]
    assert len(store.events(run_id, limit=2)) == 2


def test_a_worker_that_lost_its_run_can_write_nothing_more(store):
    store.submit(tiny(), check=False)
    old = claim(store, "w1")
    make_stale(store, old.id)
    assert store.reap_stale(stale_after_s=60, max_attempts=3) == [old.id]
    new = claim(store, "w2")
    assert (new.id, new.attempts) == (old.id, 2)
    assert not store.heartbeat("w1", old.id, 1)
    assert not store.record_progress(old.id, "w1", 1, points=[point(1)])
    assert not store.finish_run(old.id, "w1", 1, RunStatus.COMPLETED)
    assert store.should_stop(old.id, "w1", 1) == (False, False)
    assert store.metrics(old.id) == [] and store.get(old.id).status is RunStatus.RUNNING
    assert store.heartbeat("w2", new.id, 2)


def test_stale_runs_are_requeued_then_failed_after_max_attempts(store):
    run_id = store.submit(tiny(), check=False)
    for attempt in (1, 2):
        run = claim(store, f"w{attempt}")
        assert run.attempts == attempt
        make_stale(store, run_id)
        assert store.reap_stale(max_attempts=2) == [run_id]
        assert store.get(run_id).status is (RunStatus.QUEUED if attempt == 1 else RunStatus.FAILED)
    run = store.get(run_id)
    assert "stopped responding on 2 attempts" in run.error
    assert any("stopped heartbeating" in e.message for e in store.events(run_id))
    fresh = store.submit(tiny(), check=False)
    claim(store, "w3")
    assert store.reap_stale() == []  # a heartbeating run is left alone
    assert store.get(fresh).status is RunStatus.RUNNING


def test_a_stale_run_being_cancelled_ends_cancelled(store):
    run_id = store.submit(tiny(), check=False)
    claim(store)
    store.cancel(run_id)
    make_stale(store, run_id)
    store.reap_stale()
    assert store.get(run_id).status is RunStatus.CANCELLED


def test_release_puts_the_run_back_without_counting_an_attempt(store):
    run_id = store.submit(tiny(), check=False)
    run = claim(store)
    assert store.release_run(run_id, "w1", run.attempts, "shutting down")
    assert (store.get(run_id).status, store.get(run_id).attempts) == (RunStatus.QUEUED, 0)
    assert claim(store, "w2").attempts == 1


def test_a_run_handed_back_while_its_cancel_is_pending_ends_cancelled_not_queued(store):
    """A worker that stops before its run saw the cancel must not put the run back in the queue to run again."""
    run_id = store.submit(tiny(), check=False)
    run = claim(store)
    store.cancel(run_id)
    assert store.release_run(run_id, "w1", run.attempts, "the worker is shutting down")
    assert store.get(run_id).status is RunStatus.CANCELLED
    assert store.claim_next("w2", device="cpu") is None
    assert any("while its cancel was pending" in e.message for e in store.events(run_id))
    assert not store.release_run(run_id, "w1", run.attempts, "again")  # no longer this worker's


# ---- the callback's batching --------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_reader_following_since_step_sees_every_point_exactly_once(store):
    store.submit(tiny(), check=False)
    run = claim(store)
    clock = FakeClock()
    cb = StoreCallbacks(store, run.id, "w1", run.attempts, flush_interval_s=1.0, clock=clock)
    seen, cursor, expected = [], -1, []

    def read() -> None:
        nonlocal cursor
        new = store.metrics(run.id, since_step=cursor)
        seen.extend((p.name, p.step) for p in new)
        cursor = max([cursor, *(p.step for p in new)])

    step = 0
    for epoch in (1, 2, 3):
        for _ in range(4):
            step += 1
            clock.now += 1.5  # every step is due for a flush
            cb.on_step(epoch, step, {"loss/total": 1.0 / step, "lr": 0.1})
            expected += [("loss/total", step), ("lr", step)]
            read()
        cb.on_epoch(epoch, step, {"test/acc": 0.5})  # the same step as the epoch's last step
        expected.append(("test/acc", step))
        read()
    cb.on_log("done")
    cb.flush()
    read()
    assert sorted(seen) == sorted(expected)
    assert store.get(run.id).epoch == 3 and "done" in [e.message for e in store.events(run.id)]


def test_points_are_written_in_batches_not_per_step(store):
    store.submit(tiny(), check=False)
    run = claim(store)
    clock = FakeClock()
    cb = StoreCallbacks(store, run.id, "w1", run.attempts, flush_interval_s=1.0, clock=clock)
    for step in range(1, 6):
        clock.now += 0.1
        cb.on_step(1, step, {"loss/total": 1.0})
    assert store.metrics(run.id) == []  # within the interval: still buffered
    clock.now += 1.0
    cb.on_step(1, 6, {"loss/total": 1.0})
    assert [p.step for p in store.metrics(run.id)] == [1, 2, 3, 4, 5]  # step 6 held back until complete


def test_resume_drops_void_points_so_history_has_no_gap_or_duplicate(store):
    store.submit(tiny(), check=False)
    first = claim(store, "w1")
    cb = StoreCallbacks(store, first.id, "w1", first.attempts, flush_interval_s=0.0)
    for step in range(1, 9):
        cb.on_step(1 if step <= 4 else 2, step, {"loss/total": float(step)})
        if step == 4:
            cb.on_epoch(1, 4, {"test/acc": 0.5})  # checkpoint of epoch 1 at step 4
    cb.flush()
    make_stale(store, first.id)  # the worker died during epoch 2
    store.reap_stale()
    second = claim(store, "w2")
    cb2 = StoreCallbacks(store, second.id, "w2", second.attempts, flush_interval_s=0.0)
    cb2.on_resume(1, 4)
    for step in range(5, 9):
        cb2.on_step(2, step, {"loss/total": 100.0 + step})
    cb2.on_epoch(2, 8, {"test/acc": 0.7})
    history = store.metrics(first.id, names=["loss/total"])
    assert [p.step for p in history] == list(range(1, 9))
    assert [p.value for p in history][4:] == [105.0, 106.0, 107.0, 108.0]  # the redone steps
    assert [(p.step, p.value) for p in store.metrics(first.id, names=["test/acc"])] == [(4, 0.5), (8, 0.7)]


def test_should_stop_reads_the_cancel_flag_throttled(store):
    run_id = store.submit(tiny(), check=False)
    run = claim(store)
    clock = FakeClock()
    cb = StoreCallbacks(store, run_id, "w1", run.attempts, stop_check_interval_s=0.5, clock=clock)
    assert cb.should_stop() is False
    store.cancel(run_id)
    assert store.get(run_id).cancel_requested and store.get(run_id).status is RunStatus.RUNNING
    assert cb.should_stop() is False  # not asked again within 0.5 s
    clock.now += 0.6
    assert cb.should_stop() is True and cb.cancel_requested


# ---- cancel, delete, tags, rename, duplicate, artifacts, workers --------------------------------------------

def test_cancel_a_queued_run_at_once_and_refuse_finished_ones(store):
    run_id = store.submit(tiny(), check=False)
    store.cancel(run_id, by="ada")
    run = store.get(run_id)
    assert run.status is RunStatus.CANCELLED and run.finished_at is not None
    assert "cancelled by ada" in store.events(run_id)[-1].message
    with pytest.raises(RunStateError, match="already cancelled"):
        store.cancel(run_id)
    assert store.claim_next("w1", device="cpu") is None


def test_delete_removes_rows_and_artifacts_but_not_a_running_run(store):
    keep = store.submit(tiny(), check=False)
    running = claim(store)
    doomed = store.submit(tiny(), check=False, tags=["t"])
    store.record_progress(running.id, "w1", 1, points=[point(1)])
    folder = run_dir(doomed)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"x")
    store.log_event(doomed, "hello")
    store.delete(doomed)
    assert not folder.exists()
    with pytest.raises(RunNotFoundError):
        store.get(doomed)
    with store.engine.connect() as conn:
        for table in (t.events, t.metrics, t.run_tags, t.artifacts):
            assert conn.execute(select(table).where(table.c.run_id == doomed)).first() is None
    with pytest.raises(RunStateError, match="cancel it before deleting"):
        store.delete(running.id)
    assert running.id == keep and len(store.metrics(keep)) == 1


def test_tags_rename_and_duplicate(store):
    run_id = store.submit(tiny(name="orig", tags=["a"]))
    store.set_tags(run_id, ["b", " c ", "b", ""])
    assert store.get(run_id).tags == ["b", "c"]
    store.rename(run_id, "renamed")
    assert store.get(run_id).name == "renamed"
    with pytest.raises(KDError, match="empty"):
        store.rename(run_id, "  ")
    spec = store.duplicate(run_id)
    assert isinstance(spec, RunSpec) and spec.name == "renamed" and spec.tags == ["b", "c"]
    assert spec.model_dump(exclude={"name", "tags"}) == store.get(run_id).spec.model_dump(exclude={"name", "tags"})
    copy_id = store.submit(spec)
    assert copy_id != run_id and store.get(copy_id).tags == ["b", "c"]


def test_tags_added_to_a_run_keep_its_own(store):
    run_id = store.submit(tiny(tags=["b", "a"]))
    store.add_tags(run_id, ["c", "a", " "])
    assert store.get(run_id).tags == ["a", "b", "c"]
    with pytest.raises(KDError, match="NUL"):
        store.add_tags(run_id, ["d", "e\x00"])
    assert store.get(run_id).tags == ["a", "b", "c"]


def test_notes_are_stored_replaced_cleared_and_held_to_a_limit(store):
    run_id = store.submit(tiny(name="noted"))
    assert store.get(run_id).notes == ""
    store.set_notes(run_id, "  ρ = 4 looked *better*;\nrerun with 3 seeds.  ")
    assert store.get(run_id).notes == "ρ = 4 looked *better*;\nrerun with 3 seeds."
    assert [r.notes for r in store.list_runs()] == ["ρ = 4 looked *better*;\nrerun with 3 seeds."]
    with pytest.raises(KDError, match="at most 20,000 characters"):
        store.set_notes(run_id, "x" * 20_001)
    with pytest.raises(KDError, match="NUL"):
        store.set_notes(run_id, "a\x00b")
    assert store.get(run_id).notes.startswith("ρ = 4")
    store.set_notes(run_id, "")
    assert store.get(run_id).notes == ""
    with pytest.raises(RunNotFoundError):
        store.set_notes("ffffffff", "lost")


def test_a_store_from_before_notes_is_migrated_and_keeps_its_runs(store):
    run_id = store.submit(tiny(name="old run", tags=["kept"]))
    with store.engine.begin() as conn:  # the store as schema 1 left it: no notes column
        conn.execute(text("ALTER TABLE kd_runs DROP COLUMN notes"))
        conn.execute(update(t.meta_table).where(t.meta_table.c.key == "schema_version").values(value="1"))
    dispose_engines()
    reopened = RunStore(store.url)
    record = reopened.get(run_id)
    assert (record.name, record.tags, record.notes) == ("old run", ["kept"], "")
    reopened.set_notes(run_id, "written after the upgrade")
    assert reopened.get(run_id).notes == "written after the upgrade"
    with reopened.engine.connect() as conn:
        version = conn.execute(select(t.meta_table.c.value).where(t.meta_table.c.key == "schema_version")).scalar()
    assert int(version) == t.SCHEMA_VERSION == 2


def test_artifacts_are_registered_or_found_and_must_exist(store, kd_home):
    store.submit(tiny(), check=False)
    run = claim(store)
    folder = run_dir(run.id)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"x")
    (folder / "metrics.csv").write_text("epoch\n")
    assert store.record_progress(run.id, "w1", 1, artifacts={"checkpoint": folder / "checkpoint.pt"})
    with store.engine.connect() as conn:
        stored = conn.execute(select(t.artifacts.c.path)).scalar_one()
    assert stored == f"runs/{run.id}/checkpoint.pt"  # relative to KD_HOME
    assert store.artifacts(run.id) == {"checkpoint": folder / "checkpoint.pt", "metrics_csv": folder / "metrics.csv"}


def test_workers_heartbeat_and_stop(store):
    store.register_worker("w1", host="box", pid=42, device="cuda:0")
    store.register_worker("w2", host="box", pid=43, device="cpu")
    assert {w.id for w in store.workers()} == {"w1", "w2"}
    store.stop_worker("w2")
    assert [w.id for w in store.workers()] == ["w1"]
    w1 = store.workers()[0]
    assert (w1.host, w1.pid, w1.device, w1.alive, w1.current_run) == ("box", 42, "cuda:0", True, None)
    assert {w.id: w.alive for w in store.workers(alive_only=False)} == {"w1": True, "w2": False}
    time.sleep(0.05)
    assert store.workers(stale_after_s=0.01) == []  # no heartbeat lately: not alive
    assert store.heartbeat("w1")
    assert [w.id for w in store.workers(stale_after_s=5)] == ["w1"]


def _current_run(store: RunStore, worker_id: str) -> str | None:
    return next(w.current_run for w in store.workers(alive_only=False) if w.id == worker_id)


def test_an_idle_beat_just_after_a_claim_keeps_the_claimed_run_and_clears_one_no_longer_held(store):
    run_id = store.submit(tiny(), check=False)
    run = claim(store, "w1")
    # the worker's heartbeat thread read "no run" a moment before the claim, and beats after it
    assert store.heartbeat("w1")
    assert _current_run(store, "w1") == run_id
    assert store.finish_run(run_id, "w1", run.attempts, RunStatus.COMPLETED)
    assert _current_run(store, "w1") is None

    # a run another worker holds (this one's was taken over) is cleared by the next idle beat
    other = store.submit(tiny(), check=False)
    claim(store, "w2")
    with store.engine.begin() as conn:
        conn.execute(update(t.workers).where(t.workers.c.id == "w1").values(current_run=other))
    assert store.heartbeat("w1")
    assert _current_run(store, "w1") is None
    assert _current_run(store, "w2") == other


def test_a_beat_for_a_run_that_has_ended_does_not_show_it_again(store):
    run_id = store.submit(tiny(), check=False)
    run = claim(store, "w1")
    assert store.finish_run(run_id, "w1", run.attempts, RunStatus.COMPLETED)
    # the heartbeat thread read the run as current just before it finished
    assert not store.heartbeat("w1", run_id, run.attempts)
    assert _current_run(store, "w1") is None


def test_an_idle_beat_waiting_on_a_claim_being_committed_shows_the_claimed_run(store):
    run_id = store.submit(tiny(), check=False)
    store.register_worker("w1", host="test-host", pid=1, device="cpu")
    with write_tx(store.engine) as conn:  # a claim's writes, not yet committed
        conn.execute(update(t.runs).where(t.runs.c.id == run_id)
                     .values(status=RunStatus.RUNNING.value, worker_id="w1", attempts=1))
        conn.execute(update(t.workers).where(t.workers.c.id == "w1").values(current_run=run_id))
        beat = threading.Thread(target=store.heartbeat, args=("w1",))
        beat.start()
        beat.join(timeout=1.0)
        assert beat.is_alive()  # the idle beat waits for the claim's lock
    beat.join(timeout=60)
    assert not beat.is_alive()
    assert _current_run(store, "w1") == run_id


def _clock_off_by(seconds: float):
    """This process's clock (datetime.now, time.time) runs `seconds` off; the database's does not."""
    import time_machine

    return time_machine.travel(datetime.now(UTC) + timedelta(seconds=seconds), tick=True)


@pytest.mark.parametrize("offset_s", [-120, 120])
def test_a_worker_whose_clock_is_two_minutes_off_never_takes_over_a_healthy_run(store, offset_s):
    run_id = store.submit(tiny(), check=False)
    with _clock_off_by(offset_s):  # the worker running it
        run = claim(store, "wA")
        assert store.heartbeat("wA", run_id, run.attempts)
        assert store.record_progress(run_id, "wA", run.attempts, epoch=1, step=10)
    with _clock_off_by(-offset_s):  # another worker, its clock off the other way, looks for dead workers
        store.register_worker("wB", host="test-host", pid=2, device="cpu")
        assert store.reap_stale() == []
        assert store.claim_next("wB", device="cpu") is None
        assert {w.id for w in store.workers()} == {"wA", "wB"}
    run = store.get(run_id)
    assert (run.status, run.worker_id, run.attempts) == (RunStatus.RUNNING, "wA", 1)
    assert not any("stopped heartbeating" in e.message for e in store.events(run_id))
    with _clock_off_by(-offset_s):  # a run that really went silent is still taken over
        time.sleep(0.05)
        assert store.reap_stale(stale_after_s=0.01) == [run_id]


def test_sqlite_writers_wait_instead_of_failing_while_another_holds_the_lock(kd_home):
    store = RunStore()
    run_id = store.submit(tiny(), check=False)
    other = RunStore(store.url).engine.raw_connection()  # a second connection, as another process would have
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE kd_runs SET name = 'locked' WHERE id = ?", (run_id,))
        import threading

        threading.Timer(0.5, other.commit).start()
        store.rename(run_id, "after")  # blocks until the other writer commits, then succeeds
    finally:
        other.close()
    assert store.get(run_id).name == "after"
    with store.engine.connect() as conn:
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() >= 30_000
    dispose_engines()


# ---- text the columns cannot hold: the same answer on SQLite and PostgreSQL -----------------------------

def test_text_too_long_or_with_nul_is_refused_alike_on_both_databases(store):
    with pytest.raises(KDError, match="the owner can have at most 100 characters, not 150"):
        store.submit(tiny(), owner="o" * 150, check=False)
    with pytest.raises(SpecError, match="name: must not contain a NUL character"):
        store.submit({**tiny().to_dict(), "name": "a\x00b"}, check=False)
    with pytest.raises(KDError, match="a run name must not contain a NUL character"):
        store.submit(tiny(), name="a\x00b", check=False)
    with pytest.raises(KDError, match="must not contain a NUL character"):
        store.submit(tiny(), owner="bo\x00b", check=False)
    with pytest.raises(KDError, match="a worker id can have at most 64 characters, not 100"):
        store.register_worker("w" * 100, host="box", pid=1, device="cpu")
    with pytest.raises(KDError, match="a worker id can have at most 64 characters, not 100"):
        store.claim_next("w" * 100, device="cpu")
    assert store.list_runs() == [] and store.workers(alive_only=False) == []
    run_id = store.submit(tiny(), owner="o" * 100, check=False)  # at the limit: stored as given
    assert store.get(run_id).owner == "o" * 100
    with pytest.raises(KDError, match="a run name must not contain a NUL character"):
        store.rename(run_id, "x\x00y")
    with pytest.raises(KDError, match="must not contain a NUL character"):
        store.set_tags(run_id, ["ok", "b\x00d"])
    assert store.get(run_id).name != "x\x00y" and store.get(run_id).tags == []


def test_a_training_warning_is_a_warning_event_and_stays_in_the_run_info(store):
    store.submit(tiny(), check=False)
    run = claim(store)
    cb = StoreCallbacks(store, run.id, "w1", run.attempts, flush_interval_s=60.0)
    cb.on_start({"student": "mlp_64", "start_epoch": 0, "start_step": 0})
    cb.on_warning("The student stopped learning at epoch 2.")
    assert store.get(run.id).info["warnings"] == ["The student stopped learning at epoch 2."]
    assert [(e.level, e.message) for e in store.events(run.id)][-1] == ("warning",
                                                                        "The student stopped learning at epoch 2.")
    cb.on_epoch(3, 9, {"test/acc": 0.1})
    assert store.get(run.id).info["warnings"] == ["The student stopped learning at epoch 2."]  # kept by later flushes
