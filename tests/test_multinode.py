"""Runs over several machines from the queue: the store hands out a c10d rendezvous endpoint and node slots,
claimed atomically on SQLite and PostgreSQL; workers on loopback (gloo, CPU) complete one `nodes: 2` run."""
from __future__ import annotations

import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from test_worker_devices import run_processes

from kdcore.jobs import RunStatus, RunStore
from kdcore.jobs import schema as t
from kdcore.jobs.testing import database_url, start_worker, stop_process, wait_until
from kdcore.paths import run_dir
from kdcore.spec import RunSpec

RUN_TIMEOUT_S = 300


def tiny(**fields) -> RunSpec:
    return RunSpec(**{"dataset": {"name": "digits"}, "student": "mlp_64", "epochs": 2, "batch_size": 64,
                      "probe_size": 8, "device": "cpu", **fields})


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, kd_home) -> str:
    with database_url(request.param, kd_home) as url:
        yield url


def workers(store: RunStore, *ids: str) -> None:
    for worker_id in ids:
        store.register_worker(worker_id, host="h", pid=1, device="cpu")


def test_node_slots_are_claimed_once_each_and_carry_the_rendezvous(store_url):
    store = RunStore(store_url)
    run_id = store.submit(tiny(name="two nodes", nodes=2), check=False)
    single = store.submit(tiny(name="one node"), check=False)
    workers(store, "a", "b", "c")
    # without an endpoint a worker takes no run over several machines (it takes the single-node one)
    assert store.claim_next("a", device="cpu", max_devices=1).id == single
    store.finish_run(single, "a", 1, RunStatus.COMPLETED)
    first = store.claim_next("a", device="cpu", max_devices=1, endpoint="10.0.0.1:29400", host="10.0.0.1")
    assert (first.id, first.node_rank, first.rendezvous, first.worker_id) == (run_id, 0, "10.0.0.1:29400", "a")
    # the run's owner cannot hold a second node; a worker with too few devices takes none
    assert store.claim_next("a", device="cpu", max_devices=1, endpoint="10.0.0.1:29401") is None
    assert store.claim_next("b", device="cpu", max_devices=0, endpoint="10.0.0.2:29400") is None
    second = store.claim_next("b", device="cpu", max_devices=1, endpoint="10.0.0.2:29400", host="10.0.0.2")
    assert (second.id, second.node_rank, second.rendezvous) == (run_id, 1, "10.0.0.1:29400")
    assert second.worker_id == "a" and second.attempts == first.attempts == 1  # ranks report as the owner
    assert store.claim_next("c", device="cpu", max_devices=1, endpoint="10.0.0.3:29400") is None  # both held
    nodes = store.run_nodes(run_id)
    assert [(n["node_rank"], n["worker_id"], n["host"]) for n in nodes] == [(0, "a", "10.0.0.1"), (1, "b", "10.0.0.2")]
    assert store.heartbeat("b", run_id, 1, node_rank=1) and not store.heartbeat("c", run_id, 1, node_rank=1)
    assert store.should_stop(run_id, "b", 1, node_rank=1) == (False, True)
    store.cancel(run_id, by="tester")  # every node's worker reads it
    assert store.should_stop(run_id, "b", 1, node_rank=1) == (True, True)
    assert store.should_stop(run_id, "a", 1) == (True, True)


def two_node_run_on_a_and_b(store_url: str) -> tuple[RunStore, str]:
    """A `nodes: 2` run whose node 0 worker a and node 1 worker b hold; worker c registered and idle."""
    store = RunStore(store_url)
    run_id = store.submit(tiny(name="two nodes", nodes=2), check=False)
    workers(store, "a", "b", "c")
    store.claim_next("a", device="cpu", max_devices=1, endpoint="h1:1")
    store.claim_next("b", device="cpu", max_devices=1, endpoint="h2:1")
    return store, run_id


def test_an_idle_beat_after_a_node_claim_keeps_the_run_on_every_node_worker(store_url):
    store, run_id = two_node_run_on_a_and_b(store_url)
    for worker in ("a", "b", "c"):  # heartbeat threads that read "no run" just before their worker's claim
        assert store.heartbeat(worker)
    current = {w.id: w.current_run for w in store.workers()}
    assert current == {"a": run_id, "b": run_id, "c": None}


def silent_since(store: RunStore, run_id: str, node_rank: int, hours: float) -> None:
    """Node `node_rank`'s last heartbeat moved `hours` back: its worker went silent, without a test waiting."""
    n = t.run_nodes.c
    node = (n.run_id == run_id) & (n.node_rank == node_rank)
    with store.engine.begin() as conn:
        last = conn.execute(select(n.heartbeat_at).where(node)).scalar_one()
        conn.execute(update(t.run_nodes).where(node).values(heartbeat_at=last - timedelta(hours=hours)))


def test_a_dead_node_requeues_the_run_to_resume_and_a_new_attempt_voids_the_old_nodes(store_url):
    store, run_id = two_node_run_on_a_and_b(store_url)
    silent_since(store, run_id, node_rank=1, hours=1)
    assert store.heartbeat("a", run_id, 1)  # the owner lives; node 1's worker went silent
    assert store.reap_stale() == [run_id]
    run = store.get(run_id)
    assert run.status is RunStatus.QUEUED and run.attempts == 1  # the attempt counts: it fails after max attempts
    assert any("worker b stopped heartbeating" in e.message for e in store.events(run_id))
    assert store.should_stop(run_id, "b", 1, node_rank=1)[1] is False  # node 1's worker stops its ranks
    again = store.claim_next("c", device="cpu", max_devices=1, endpoint="h3:1")
    assert (again.attempts, again.node_rank, again.rendezvous) == (2, 0, "h3:1")
    assert [n["worker_id"] for n in store.run_nodes(run_id)] == ["c"]
    # a node whose ranks died puts the run back (counted); a late second report changes nothing
    store.claim_next("b", device="cpu", max_devices=1, endpoint="h2:1")
    assert store.release_node(run_id, "b", 2, 1, "its ranks ended with exit code 1", count_attempt=True)
    assert not store.release_node(run_id, "b", 2, 1, "again", count_attempt=True)
    assert store.get(run_id).status is RunStatus.QUEUED
    store.claim_next("a", device="cpu", max_devices=1, endpoint="h1:1")
    store.claim_next("b", device="cpu", max_devices=1, endpoint="h2:1")
    assert store.release_node(run_id, "b", 3, 1, "exit code 1", count_attempt=True, max_attempts=3)
    run = store.get(run_id)
    assert run.status is RunStatus.FAILED and "node 1" in run.error


def test_a_node_ending_while_the_runs_cancel_is_pending_cancels_the_run(store_url):
    store, run_id = two_node_run_on_a_and_b(store_url)
    store.cancel(run_id)
    assert store.release_node(run_id, "b", 1, 1, "its worker is shutting down", count_attempt=False)
    assert store.get(run_id).status is RunStatus.CANCELLED
    assert store.claim_next("c", device="cpu", max_devices=1, endpoint="h3:1") is None


def test_many_workers_racing_for_nodes_hold_each_node_once(store_url):
    """Claims from threads with their own connections: every node of every run is held by exactly one worker."""
    from concurrent.futures import ThreadPoolExecutor

    store = RunStore(store_url)
    runs = [store.submit(tiny(name=f"r{i}", nodes=3, batch_size=60), check=False) for i in range(3)]
    ids = [f"w{i}" for i in range(12)]
    workers(store, *ids)

    def claim(worker_id):
        record = RunStore(store_url).claim_next(worker_id, device="cpu", max_devices=1, endpoint=f"{worker_id}:1")
        return None if record is None else (record.id, record.node_rank, worker_id)

    with ThreadPoolExecutor(6) as pool:
        claims = [c for c in pool.map(claim, ids) if c is not None]
    # PostgreSQL skips a row another claim holds locked: a worker that found none free then asks again
    claims += [c for w in ids if w not in {c[2] for c in claims} and (c := claim(w)) is not None]
    assert len(claims) == 9 and len({(r, k) for r, k, _ in claims}) == 9
    for run_id in runs:
        held = store.run_nodes(run_id)
        assert [n["node_rank"] for n in held] == [0, 1, 2] and len({n["worker_id"] for n in held}) == 3


@pytest.mark.slow
def test_two_workers_on_loopback_complete_one_two_node_run_from_the_queue(store_url, kd_home):
    store = RunStore(store_url)
    run_id = store.submit(tiny(name="two nodes", nodes=2))
    procs = [start_worker(kd_home, store_url, "--device", "cpu", "--rdzv-host", "127.0.0.1", "--exit-when-idle",
                          "--worker-id", f"node-{i}", log_name=f"worker{i}.out") for i in range(2)]

    def logs():
        return "\n".join((kd_home / f"worker{i}.out").read_text()[-3000:] for i in range(2))

    try:
        run = wait_until(lambda: (r := store.get(run_id)).status.is_terminal and r, RUN_TIMEOUT_S,
                         "the two-node run to end", on_timeout=logs)
        assert run.status is RunStatus.COMPLETED, run.error
        assert run.info["world_size"] == 2 and run.info["nodes"] == 2
        assert run.final["test/acc"] > 0.3
        assert [p.epoch for p in store.metrics(run_id, names=["train/acc"], kind="epoch")] == [1, 2]  # one rank 0
        held = store.run_nodes(run_id)
        assert [n["node_rank"] for n in held] == [0, 1] and {n["worker_id"] for n in held} == {"node-0", "node-1"}
        assert held[0]["endpoint"].startswith("127.0.0.1:")
        for proc in procs:  # both exit once the queue is empty
            assert proc.wait(timeout=120) == 0, logs()
        wait_until(lambda: run_processes(run_id) == [], 30, "no process of the run left",
                   on_timeout=lambda: f"left: {run_processes(run_id)}")
    finally:
        for proc in procs:
            stop_process(proc)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (a worker's launcher in its own session, and the launcher's ranks)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
def test_a_dead_node_requeues_the_run_which_resumes_on_another_worker_and_a_cancel_stops_every_node(kd_home):
    """Node 1's machine dies (its worker, launcher and rank killed): the run goes back to the queue, resumes
    from its checkpoint with a third worker as node 1, and a cancel then stops both nodes' ranks."""
    with database_url("sqlite", kd_home) as url:
        store = RunStore(url)
        run_id = store.submit(tiny(name="endless", nodes=2, epochs=2000, checkpoint_every_s=0))
        procs = [start_worker(kd_home, url, "--device", "cpu", "--rdzv-host", "127.0.0.1",
                              "--worker-id", f"node-{i}", log_name=f"worker{i}.out") for i in range(3)]
        procs[2].send_signal(signal.SIGSTOP)  # the spare machine, held back until node 1's dies

        def logs():
            return "\n".join((kd_home / f"worker{i}.out").read_text()[-2500:] for i in range(3))

        try:
            checkpoint = run_dir(run_id) / "checkpoint.pt"
            wait_until(lambda: checkpoint.is_file() and store.get(run_id).epoch >= 1, RUN_TIMEOUT_S,
                       "both nodes training with a checkpoint", on_timeout=logs)
            node1 = next(n["worker_id"] for n in store.run_nodes(run_id) if n["node_rank"] == 1)
            victim = procs[int(node1.rsplit("-", 1)[1])]
            doomed = [victim.pid, *descendants(victim.pid)]
            for pid in doomed:
                os.kill(pid, signal.SIGKILL)
            victim.wait(timeout=30)
            procs[2].send_signal(signal.SIGCONT)
            wait_until(lambda: store.get(run_id).attempts >= 2 and len(store.run_nodes(run_id)) == 2
                       and any(m.message.startswith("resumed after epoch") for m in store.events(run_id)),
                       RUN_TIMEOUT_S, "the run to resume on two nodes", on_timeout=logs)
            assert node1 not in {n["worker_id"] for n in store.run_nodes(run_id)}
            epochs = [p.epoch for p in store.metrics(run_id, names=["train/acc"], kind="epoch")]
            assert epochs == list(range(1, len(epochs) + 1))  # gapless history across the attempts
            store.cancel(run_id, by="tester")
            run = wait_until(lambda: (r := store.get(run_id)).status.is_terminal and r, 120, "the cancel",
                             on_timeout=logs)
            assert run.status is RunStatus.CANCELLED
            wait_until(lambda: run_processes(run_id) == [], 60, "every node's ranks to stop",
                       on_timeout=lambda: f"left: {run_processes(run_id)}")
            assert all(p.poll() is None for p in procs if p is not victim)  # the workers go on
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)
                stop_process(proc)
        assert not [pid for pid in doomed if Path(f"/proc/{pid}").exists()
                    and "Z" not in (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1])]


@pytest.mark.slow
def test_a_run_whose_other_nodes_never_come_goes_back_to_the_queue_uncounted(kd_home):
    """One machine alone: it holds node 0 while it waits, launches nothing, and hands the run back after
    --node-wait without spending an attempt; a cancel still reaches the run."""
    with database_url("sqlite", kd_home) as url:
        store = RunStore(url)
        run_id = store.submit(tiny(name="lonely", nodes=2))
        worker = start_worker(kd_home, url, "--device", "cpu", "--rdzv-host", "127.0.0.1", "--node-wait", "2")
        try:
            wait_until(lambda: any("only 1 of its 2 nodes found a worker" in e.message for e in store.events(run_id)),
                       RUN_TIMEOUT_S, "node 0 to give up waiting",
                       on_timeout=lambda: (kd_home / "worker.out").read_text()[-3000:])
            assert store.get(run_id).attempts <= 1  # handed back uncounted (and maybe claimed again since)
            assert run_processes(run_id) == []  # no launcher started for a run that cannot assemble
            store.cancel(run_id, by="tester")
            run = wait_until(lambda: (r := store.get(run_id)).status.is_terminal and r, 120, "the cancel")
            assert run.status is RunStatus.CANCELLED
            assert worker.poll() is None
        finally:
            stop_process(worker)
