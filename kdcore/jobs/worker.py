"""A worker: claims queued runs from the store one at a time, trains them and reports back.

A worker is its own process (`python -m kdcore worker`), never a thread of the dashboard. It trains each
claimed run in-process through `kdcore.train.train` with `StoreCallbacks`, which batch metric points into
the store, read the cancel flag between steps, and notice when another worker has taken the run over.
A background thread heartbeats so that a killed worker's run is reclaimed and resumed elsewhere."""
from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from kdcore.errors import KDError
from kdcore.jobs.launcher import new_worker_id
from kdcore.jobs.records import RunRecord, RunStatus
from kdcore.jobs.store import ARTIFACT_FILES, HEARTBEAT_INTERVAL_S, MAX_ATTEMPTS, STALE_AFTER_S, RunStore
from kdcore.paths import run_dir
from kdcore.train.allocator import return_freed_memory
from kdcore.train.callbacks import NullCallbacks

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5  # metric points reach the store at least this often while steps arrive
STOP_CHECK_INTERVAL_S = 0.5  # how often should_stop() asks the store whether the run was cancelled


def _existing_artifacts(run_id: str) -> dict[str, Path]:
    folder = run_dir(run_id)
    return {kind: folder / name for kind, name in ARTIFACT_FILES.items() if (folder / name).is_file()}


class StoreCallbacks(NullCallbacks):
    """Trainer callbacks that write to the store.

    Points are buffered and written in one transaction at least every `flush_interval_s` while steps
    arrive, and at every epoch end. The points of the newest step are held back until a later step (or
    the epoch end) arrives, so every step's points -- step metrics and epoch metrics alike -- land in one
    transaction, in step order: a reader asking for "points after step S" never misses any."""

    def __init__(self, store: RunStore, run_id: str, worker_id: str, attempt: int, *,
                 flush_interval_s: float = FLUSH_INTERVAL_S, stop_check_interval_s: float = STOP_CHECK_INTERVAL_S,
                 device_label: str | None = None, clock: Callable[[], float] = time.monotonic, node_rank: int = 0):
        self.store, self.run_id, self.worker_id, self.attempt = store, run_id, worker_id, attempt
        self.node_rank = node_rank  # k > 0: this worker holds node k of a run over several machines
        self.flush_interval_s, self.stop_check_interval_s = flush_interval_s, stop_check_interval_s
        self.device_label = device_label
        self.clock = clock
        self.info: dict[str, Any] = {}
        self.cancel_requested = False  # the user cancelled the run
        self.lost = False  # another worker owns the run now: write nothing more
        self.shutdown = threading.Event()  # this worker is stopping: hand the run back
        self._lock = threading.Lock()
        self._points: list[dict[str, Any]] = []
        self._events: list[tuple[datetime, str, str]] = []
        self._progress: dict[str, Any] = {}
        self._truncate: int | None = None
        self._last_flush = clock()
        self._last_stop_check = float("-inf")

    # ---- trainer hooks -------------------------------------------------------------------------
    def on_start(self, info: dict) -> None:
        self.info = dict(info)
        device = self.device_label or str(info.get("device") or "") or None
        with self._lock:
            self._progress.update(device=device, info=self.info, epoch=int(info.get("start_epoch", 0)),
                                  step=int(info.get("start_step", 0)))
        self.flush()

    def on_resume(self, epoch: int, step: int) -> None:
        # Points after the checkpoint's step were written by the worker that died; the steps are redone.
        self.drop_points_after(epoch, step, f"resuming after epoch {epoch} (step {step}) from the checkpoint; "
                                            "later points of the previous attempt dropped")

    def drop_points_after(self, epoch: int, step: int, message: str) -> None:
        """Void every point after `step` (buffered and stored) and set the progress back to (epoch, step)."""
        with self._lock:
            self._points = [p for p in self._points if p["step"] <= step]
            self._truncate = step if self._truncate is None else min(self._truncate, step)
            self._progress.update(epoch=epoch, step=step)
            self._events.append((_utcnow(), "info", message))
        self.flush()

    def on_step(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        now = time.time()
        with self._lock:
            self._points.extend({"step": step, "epoch": epoch, "name": k, "value": v, "wall_time": now,
                                 "kind": "step"} for k, v in metrics.items())
            self._progress["step"] = step
        if self.clock() - self._last_flush >= self.flush_interval_s:
            self.flush(hold_back_step=step)

    def on_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        now = time.time()
        with self._lock:
            self._points.extend({"step": step, "epoch": epoch, "name": k, "value": v, "wall_time": now,
                                 "kind": "epoch"} for k, v in metrics.items())
            self._progress.update(epoch=epoch, step=step, final=dict(metrics),
                                  artifacts=_existing_artifacts(self.run_id))
        self.flush()

    def on_log(self, message: str) -> None:
        with self._lock:
            self._events.append((_utcnow(), "info", str(message)))

    def on_warning(self, message: str) -> None:
        """A warning event in the log, and in the run's info, where the run view shows it above the charts."""
        self.info.setdefault("warnings", []).append(str(message))
        with self._lock:
            self._events.append((_utcnow(), "warning", str(message)))
            self._progress["info"] = self.info
        self.flush()

    def should_stop(self) -> bool:
        if self.shutdown.is_set() or self.lost or self.cancel_requested:
            return True
        now = self.clock()
        if now - self._last_stop_check >= self.stop_check_interval_s:
            self._last_stop_check = now
            try:
                cancel, owned = self.store.should_stop(self.run_id, self.worker_id, self.attempt, self.node_rank)
            except SQLAlchemyError as err:  # a database hiccup must not kill the run; ask again later
                log.warning("run %s: could not read the cancel flag (%s)", self.run_id, err.__class__.__name__)
                return False
            self.cancel_requested = self.cancel_requested or cancel
            self.lost = self.lost or not owned
        return self.cancel_requested or self.lost

    # ---- writing -----------------------------------------------------------------------------------
    def log(self, message: str, level: str = "info") -> None:
        with self._lock:
            self._events.append((_utcnow(), level, message))

    def flush(self, hold_back_step: int | None = None) -> bool:
        """Write buffered points (except those of `hold_back_step`), log lines and progress. Returns
        False when nothing could be written (ownership lost, or the database failed: kept for later)."""
        if self.lost:
            return False
        with self._lock:
            if hold_back_step is None:
                points, kept = self._points, []
            else:
                points = [p for p in self._points if p["step"] < hold_back_step]
                kept = [p for p in self._points if p["step"] >= hold_back_step]
            events, progress, truncate = self._events, dict(self._progress), self._truncate
            self._points, self._events, self._progress, self._truncate = kept, [], {}, None
        try:
            owned = self.store.record_progress(
                self.run_id, self.worker_id, self.attempt, points=points, events=events,
                truncate_after_step=truncate, epoch=progress.get("epoch"), step=progress.get("step"),
                final=progress.get("final"), device=progress.get("device"), info=progress.get("info"),
                artifacts=progress.get("artifacts"))
        except SQLAlchemyError as err:
            log.warning("run %s: writing metrics failed (%s); retrying at the next flush",
                        self.run_id, err.__class__.__name__)
            with self._lock:  # put everything back, in order, for the next try
                self._points = points + self._points
                self._events = events + self._events
                self._progress = {**progress, **self._progress}
                if truncate is not None:
                    self._truncate = truncate if self._truncate is None else min(truncate, self._truncate)
            self._last_flush = self.clock()
            return False
        self._last_flush = self.clock()
        if not owned:
            self.lost = True
            log.warning("run %s: worker %s no longer owns it (taken over or deleted); stopping", self.run_id,
                        self.worker_id)
        return owned


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class WorkerConfig:
    device: str = "auto"
    poll_interval_s: float = 1.0
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    stale_after_s: float = STALE_AFTER_S
    max_attempts: int = MAX_ATTEMPTS
    exit_when_idle: bool = False  # stop once no run is queued or running (tests, batch jobs)
    max_runs: int | None = None  # stop after executing this many runs
    devices: int = 1  # devices this worker owns (GPUs, or CPU processes): it claims runs asking for no more
    db_url: str | None = None  # where the ranks of a multi-device run find the store
    # Runs over several machines: the address the other machines reach this one at (default: its host name)
    # and the first port of the c10d rendezvous it hosts for a run it claims as node 0 (one port per device
    # from there; default: any free port)
    rendezvous_host: str | None = None
    rendezvous_port: int | None = None
    node_wait_s: float = 600.0  # how long node 0 waits for the other nodes' workers before handing the run back


class Worker:
    """Claims and executes runs until asked to stop. `run_forever()` returns the number of runs executed."""

    def __init__(self, store: RunStore, config: WorkerConfig | None = None, worker_id: str | None = None,
                 pool=None):
        self.store = store
        self.pool = pool  # a DevicePool shared with this worker's other slots, or None: all devices are ours
        self._held: list[int] = []  # positions of the devices the current run holds (with a pool)
        self.config = config or WorkerConfig()
        self.id = worker_id or new_worker_id()
        self.host = socket.gethostname()
        self.device_label = _device_label(self.config.device)
        self._stop = threading.Event()
        self._current: tuple[str, int, StoreCallbacks] | None = None
        self._current_lock = threading.Lock()
        self._heartbeat_thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Stop after handing the current run back to the queue (it resumes elsewhere from its checkpoint)."""
        self._stop.set()
        with self._current_lock:
            if self._current is not None:
                self._current[2].shutdown.set()

    def install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            if self._stop.is_set():  # second signal: stop now
                raise KeyboardInterrupt
            log.info("signal %s: stopping after handing back the current run", signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run_forever(self) -> int:
        self.store.register_worker(self.id, host=self.host, pid=os.getpid(), device=self.device_label)
        log.info("worker %s started (pid %d, device %s, store %r)", self.id, os.getpid(), self.device_label,
                 self.store)
        self._heartbeat_thread = threading.Thread(target=self._heartbeat_loop, name="kd-heartbeat", daemon=True)
        self._heartbeat_thread.start()
        # Import the trainer (torch and friends: seconds) and pay PyTorch's one-offs before claiming, not while
        # a claimed run waits.
        import kdcore.train  # noqa: F401
        warm_up()
        executed = 0
        try:
            while not self._stop.is_set():
                record = self._next_run()
                if record is None:
                    if self.config.exit_when_idle and self._queue_is_empty():
                        log.info("no queued or running run left; exiting")
                        break
                    self._stop.wait(self.config.poll_interval_s)
                    continue
                self.execute(record)
                executed += 1
                if self.config.max_runs is not None and executed >= self.config.max_runs:
                    break
        finally:
            self._stop.set()
            self._heartbeat_thread.join(timeout=30)  # its last beat must not land after "stopped"
            try:
                self.store.stop_worker(self.id)
            except SQLAlchemyError:
                log.exception("could not mark worker %s stopped", self.id)
            log.info("worker %s stopped after %d run(s)", self.id, executed)
        return executed

    def _next_run(self) -> RunRecord | None:
        try:
            for run_id in self.store.reap_stale(stale_after_s=self.config.stale_after_s,
                                                max_attempts=self.config.max_attempts):
                log.warning("run %s: its worker stopped heartbeating; reclaimed", run_id)
            self.store.resolve_dependencies()
            if self.pool is None:
                return self.store.claim_next(self.id, device=self.device_label, max_devices=self.config.devices,
                                             endpoint=self._rendezvous_endpoint(0), host=self.rendezvous_host)
            with self.pool.claiming():
                free = self.pool.free()
                record = self.store.claim_next(
                    self.id, device=self.device_label, max_devices=free, host=self.rendezvous_host,
                    endpoint=self._rendezvous_endpoint(self.pool.first_free())) if free else None
                if record is not None:
                    self._held = self.pool.take(record.spec.devices)
                return record
        except SQLAlchemyError as err:
            log.warning("the store is unavailable (%s); retrying", err.__class__.__name__)
            return None

    @property
    def rendezvous_host(self) -> str:
        return self.config.rendezvous_host or self.host

    def _rendezvous_endpoint(self, device_index: int) -> str:
        """Where this worker would host the c10d rendezvous of a run over several machines it claims as
        node 0: a port per device from --rdzv-port (runs on disjoint devices never share one), else a free one."""
        if self.config.rendezvous_port:
            port = self.config.rendezvous_port + device_index
        else:
            with socket.socket() as s:
                s.bind(("", 0))
                port = s.getsockname()[1]
        return f"{self.rendezvous_host}:{port}"

    def _queue_is_empty(self) -> bool:
        try:
            counts = self.store.queue_counts()
        except SQLAlchemyError:
            return False
        return counts["queued"] == 0 and counts["running"] == 0

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.config.heartbeat_interval_s):
            with self._current_lock:
                current = self._current
            run_id, attempt, cb = current if current is not None else (None, None, None)
            try:
                owned = self.store.heartbeat(self.id, run_id, attempt, cb.node_rank if cb is not None else 0)
            except SQLAlchemyError as err:
                log.warning("heartbeat failed (%s)", err.__class__.__name__)
                continue
            if cb is not None and not owned:
                cb.lost = True

    # ---- one run -----------------------------------------------------------------------------------
    def execute(self, record: RunRecord) -> RunStatus | None:
        """Train one claimed run and record how it ended. Returns its final status, or None when the run
        was handed back or taken over."""
        from kdcore.train import train
        from kdcore.train.checkpoint import CHECKPOINT_NAME

        run_id, attempt = record.id, record.attempts
        out_dir = run_dir(run_id)
        cb = StoreCallbacks(self.store, run_id, self.id, attempt, node_rank=record.node_rank,
                            device_label=None if self.config.device == "auto" else self.device_label)
        if self._stop.is_set():
            cb.shutdown.set()
        with self._current_lock:
            self._current = (run_id, attempt, cb)
        log.info("run %s (%s): attempt %d started%s", run_id, record.name, attempt,
                 f" as node {record.node_rank} of {record.spec.nodes}" if record.spec.nodes > 1 else "")
        try:
            if attempt > 1 and record.node_rank == 0 and not (out_dir / CHECKPOINT_NAME).is_file():
                cb.drop_points_after(0, 0, "the previous attempt left no checkpoint: starting over, "
                                           "its points dropped")
            if record.spec.world_size > 1:
                return self._execute_launched(record, cb)
            try:
                result = train(self._placed(record.spec), out_dir, cb, resume=True)
            except (KeyboardInterrupt, SystemExit):
                cb.flush()
                self.store.release_run(run_id, self.id, attempt, "the worker was interrupted")
                raise
            except Exception as err:  # noqa: BLE001 - any failure of a run ends that run, not the worker
                return self._fail(cb, err)
            cb.flush()
            return self._finish(cb, result)
        finally:
            with self._current_lock:
                self._current = None
            if self.pool is not None:
                self.pool.give_back(self._held)
                self._held = []
            _free_memory()

    def _execute_launched(self, record: RunRecord, cb: StoreCallbacks) -> RunStatus | None:
        """A run over several devices: its ranks start through PyTorch's elastic launcher, rank 0 reporting to
        the store as this worker (`python -m kdcore worker --rank-of RUN`). This process keeps heartbeating,
        watches for a cancel or a shutdown and then stops every rank (SIGTERM through the launcher, which
        forwards it; SIGKILL to the launcher's process group after a grace period). A rank that dies ends
        the attempt: the run goes back to the queue and resumes from its last checkpoint.

        A run over several machines: this worker's launcher is one node of it and meets the others at the
        rendezvous the store handed out (hosted by node 0's launcher). The global rank 0 may land on any node;
        it reports to the store as the run's owner, the worker holding node 0."""
        from kdcore.train.distributed import launcher_command

        spec = record.spec
        script = ["worker", "--rank-of", record.id, "--worker-id", record.worker_id or self.id,
                  "--device", self.config.device, "--quiet",
                  *(["--db", self.config.db_url] if self.config.db_url else [])]
        if spec.nodes > 1:
            cmd = launcher_command(script, devices=spec.devices, nodes=spec.nodes, endpoint=record.rendezvous,
                                   run_id=f"{record.id}-{cb.attempt}", node_rank=record.node_rank)
        else:
            cmd = launcher_command(script, devices=spec.devices, run_id=record.id)
        if spec.nodes > 1 and record.node_rank == 0 and not self._all_nodes_joined(record, cb):
            return None
        proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, env=self._device_env())
        stopping_since = None
        while proc.poll() is None:
            if stopping_since is None and cb.should_stop():
                log.info("run %s: stopping its %d ranks", record.id, spec.world_size)
                proc.send_signal(signal.SIGTERM)
                stopping_since = time.monotonic()
            elif stopping_since is not None and time.monotonic() - stopping_since > RANK_STOP_GRACE_S:
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
        _kill_group(proc.pid)  # nothing of the run outlives it
        code = proc.returncode
        if cb.lost:
            return None
        status = self.store.get(record.id).status
        if status is not RunStatus.RUNNING:  # rank 0 recorded the end (completed, failed, cancelled)
            return status if status.is_terminal else None  # (or another node requeued the run)
        if record.node_rank:
            return self._end_node(record, cb, code)
        if cb.cancel_requested:
            self.store.finish_run(record.id, self.id, cb.attempt, RunStatus.CANCELLED,
                                  message="cancelled: every rank stopped; the last checkpoint is kept",
                                  artifacts=_existing_artifacts(record.id) or None)
            return RunStatus.CANCELLED
        if cb.shutdown.is_set():
            self.store.release_run(record.id, self.id, cb.attempt, "the worker is shutting down; the run resumes "
                                                                   "from its last checkpoint")
            return None
        if cb.attempt >= self.config.max_attempts:
            error = f"a rank of the run ended with exit code {code} on each of {cb.attempt} attempts"
            self.store.finish_run(record.id, self.id, cb.attempt, RunStatus.FAILED, error=error,
                                  message=f"failed: {error}", level="error",
                                  artifacts=_existing_artifacts(record.id) or None)
            return RunStatus.FAILED
        self.store.release_run(record.id, self.id, cb.attempt, f"a rank ended with exit code {code}; the run "
                               "resumes from its last checkpoint", count_attempt=True)
        return None

    def _all_nodes_joined(self, record: RunRecord, cb: StoreCallbacks) -> bool:
        """Node 0 of a run over several machines launches once every node has a worker. Until then it only
        watches for a cancel or a shutdown; after `node_wait_s` it hands the run back (not counted as an
        attempt) rather than hold its devices for machines that are not there."""
        deadline = time.monotonic() + self.config.node_wait_s
        while True:
            try:
                joined = len(self.store.run_nodes(record.id))
            except SQLAlchemyError as err:  # a database hiccup: ask again at the next look
                log.warning("run %s: could not count its nodes (%s)", record.id, err.__class__.__name__)
                joined = 0
            if joined >= record.spec.nodes:
                return True
            if cb.should_stop():
                if cb.cancel_requested and not cb.lost:
                    self.store.finish_run(record.id, self.id, cb.attempt, RunStatus.CANCELLED,
                                          message="cancelled while waiting for its nodes")
                elif cb.shutdown.is_set():
                    self.store.release_run(record.id, self.id, cb.attempt, "the worker is shutting down")
                return False
            if time.monotonic() > deadline:
                self.store.release_run(record.id, self.id, cb.attempt, (
                    f"only {joined} of its {record.spec.nodes} nodes found a worker within "
                    f"{self.config.node_wait_s:g} s; queued again, for workers on more machines"))
                return False
            time.sleep(min(self.config.poll_interval_s, 1.0))

    def _end_node(self, record: RunRecord, cb: StoreCallbacks, code: int) -> None:
        """This worker's node k > 0 of a run over several machines ended while the run goes on: fine when its
        ranks completed (rank 0 records the end) or the run is being cancelled (node 0's worker records it);
        otherwise the whole run goes back to the queue to resume from its last checkpoint."""
        if code == 0 or cb.cancel_requested:
            return None
        if cb.shutdown.is_set():
            reason, counted = "the worker is shutting down", False
        else:
            reason, counted = f"its ranks ended with exit code {code}", True
        self.store.release_node(record.id, self.id, cb.attempt, record.node_rank, reason, count_attempt=counted,
                                max_attempts=self.config.max_attempts)
        return None

    def execute_rank(self, record: RunRecord) -> int:
        """One rank of a run the launcher started for this worker: rank 0 reports to the store and records a
        user error (a spec the data or models refuse) as the run's failure; any other failure is left to the
        worker that launched it (it requeues the run)."""
        from kdcore.train import train
        from kdcore.train.distributed import world_from_env

        spec = self._placed(record.spec)
        if not world_from_env().is_main:
            train(spec, run_dir(record.id), None, resume=True)
            return 0
        cb = StoreCallbacks(self.store, record.id, self.id, record.attempts,
                            device_label=None if self.config.device == "auto" else self.device_label)
        try:
            result = train(spec, run_dir(record.id), cb, resume=True)
        except KDError as err:
            self._fail(cb, err)
            return 2
        except BaseException:
            cb.flush()
            raise
        cb.flush()
        self._finish(cb, result)
        return 0

    def _device_env(self) -> dict[str, str]:
        """The launched ranks see the GPUs this run holds (its pool share) as their cuda:0…"""
        env = dict(os.environ)
        visible = [v for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if self._held and visible and self.config.device.startswith("cuda"):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[i] for i in self._held if i < len(visible))
        return env

    def _placed(self, spec):
        """A worker bound to a device trains there whatever the spec wished for: after
        restrict_visible_device its GPU is this process's only one, `cuda`; a slot sharing a pool of GPUs
        trains a one-device run on the GPU it holds."""
        if self._held and spec.world_size == 1 and self.config.device.startswith("cuda"):
            return spec.model_copy(update={"device": f"cuda:{self._held[0]}"})
        if self.config.device == "auto":
            return spec
        device = "cuda" if self.config.device.startswith("cuda") else self.config.device
        return spec.model_copy(update={"device": device})

    def _fail(self, cb: StoreCallbacks, err: Exception) -> RunStatus | None:
        tb = traceback.format_exc()
        if isinstance(err, KDError):
            error = str(err)
        else:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            error = f"{type(err).__name__}: {first}" if first else type(err).__name__
        cb.flush()
        log.error("run %s failed: %s", cb.run_id, error)
        if cb.lost:
            return None
        self.store.finish_run(cb.run_id, self.id, cb.attempt, RunStatus.FAILED, error=error,
                              message=f"failed: {error}\n{tb}", level="error",
                              artifacts=_existing_artifacts(cb.run_id) or None)
        if isinstance(err, RuntimeError) and "CUDA error" in str(err):
            # A CUDA error can leave the context unusable for every later run: exit and let a fresh
            # process (ensure_local_worker, a supervisor) take over.
            log.error("stopping the worker after a CUDA error")
            self._stop.set()
        return RunStatus.FAILED

    def _finish(self, cb: StoreCallbacks, result) -> RunStatus | None:
        run_id = cb.run_id
        artifacts = _existing_artifacts(run_id) or None
        if cb.lost:
            log.warning("run %s was taken over by another worker; leaving it", run_id)
            return None
        if result.status == "completed":
            self.store.finish_run(run_id, self.id, cb.attempt, RunStatus.COMPLETED, final=result.final,
                                  message=f"completed {result.epochs_done} epochs ({result.step} steps)",
                                  artifacts=artifacts)
            log.info("run %s completed", run_id)
            return RunStatus.COMPLETED
        if cb.cancel_requested or not cb.shutdown.is_set():
            kept = f"the checkpoint of epoch {result.epochs_done} is kept" if result.epochs_done else \
                "no epoch had completed, so there is no checkpoint"
            self.store.finish_run(run_id, self.id, cb.attempt, RunStatus.CANCELLED, final=result.final or None,
                                  message=f"cancelled after {result.step} steps; {kept}", artifacts=artifacts)
            log.info("run %s cancelled", run_id)
            return RunStatus.CANCELLED
        self.store.release_run(run_id, self.id, cb.attempt, "the worker is shutting down; another worker "
                                                           "resumes it from its last checkpoint")
        log.info("run %s handed back to the queue", run_id)
        return None


RANK_STOP_GRACE_S = 20.0  # after SIGTERM, how long the ranks get before the launcher's group is killed


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _device_label(device: str) -> str:
    """What the worker trains on, for tables: cuda:N / cpu as asked, or what 'auto' finds here."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def restrict_visible_device(device: str) -> None:
    """Make a worker bound to `cuda:N` see only that GPU (so a spec's device 'auto'/'cuda' means it), and a
    `cpu` worker see none. Must run before CUDA is initialised, i.e. at worker start."""
    if device.startswith("cuda:"):
        index = int(device.split(":", 1)[1])
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if visible:
            if index >= len(visible):
                raise KDError(f"device {device} does not exist: CUDA_VISIBLE_DEVICES lists {len(visible)} GPU(s)")
            os.environ["CUDA_VISIBLE_DEVICES"] = visible[index]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(index)
    elif device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def warm_up() -> None:
    """PyTorch's one-off costs of a first training step, paid by an idle worker rather than by the first run it
    claims: any torch.optim optimiser's first use imports torch._dynamo (~1 s of CPU; ~150 MB that the first run
    would load anyway). One step of each optimiser a spec can ask for on a throwaway one-element parameter; no
    seed, thread count or other global setting changes, and nothing touches a GPU."""
    import torch

    param = torch.nn.Parameter(torch.zeros(1))
    for optimiser in (torch.optim.SGD([param], lr=0.1, momentum=0.9, nesterov=True),
                      torch.optim.AdamW([param], lr=0.1)):
        param.grad = torch.zeros(1)
        optimiser.step()
        optimiser.zero_grad()


def _free_memory() -> None:
    """What the run held goes back: its tensors, the CUDA cache, and the heap memory the process kept for reuse
    while it trained (kdcore.train.allocator)."""
    gc.collect()
    return_freed_memory()
    try:
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass
