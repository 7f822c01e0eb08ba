"""The run store: the single truth the dashboard, the CLI and the workers share.

The first half of `RunStore` is what the dashboard and the CLI use (submit, list, read, cancel, ...);
the second half ("worker side") is what a worker uses to claim runs and report on them. Every write
that a worker makes about a run is conditional on still owning it (worker id + attempt number), so
a worker that was presumed dead and comes back can never write over the worker that took its run over."""
from __future__ import annotations

import getpass
import logging
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, and_, case, delete, exists, func, insert, or_, select, union, update
from sqlalchemy.engine import RowMapping

from kdcore.errors import KDError
from kdcore.jobs import schema as t
from kdcore.jobs.access import Actor, PermissionDeniedError, denial
from kdcore.jobs.db import database_now, default_url, get_engine, is_postgres, read_tx, write_tx
from kdcore.jobs.records import TERMINAL_STATUSES, EventRecord, MetricPoint, RunRecord, RunStatus, WorkerRecord
from kdcore.paths import kd_home, run_dir
from kdcore.spec import RunSpec, SpecError, expand_sweep, parse_spec_yaml, teacher_members

if TYPE_CHECKING:
    import pandas

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0  # how often a worker says it is alive
STALE_AFTER_S = 60.0  # a running run whose heartbeat is older than this is taken over by another worker
MAX_ATTEMPTS = 3  # claims of one run (first run + resumes after a dead worker) before it is failed
MAX_NOTES_CHARS = 20_000  # a run's notes: a page of text, not a file
ARTIFACT_FILES = {"checkpoint": "checkpoint.pt", "metrics_csv": "metrics.csv", "spec_yaml": "spec.yaml",
                  "probes": "probes.pt"}


class RunNotFoundError(KDError):
    """No run has this id."""


class RunStateError(KDError):
    """The run is in a state that does not allow the operation (e.g. deleting a running run)."""


def _new_id() -> str:
    return secrets.token_hex(4)


def checked_text(value: Any, what: str, column) -> str:
    """Text for a column, held to the column's length and without NUL characters: PostgreSQL refuses
    both and SQLite would take them, so both databases are given the same rules here."""
    value = str(value)
    if "\x00" in value:
        raise KDError(f"{what} must not contain a NUL character")
    limit = column.type.length
    if limit is not None and len(value) > limit:
        raise KDError(f"{what} can have at most {limit} characters, not {len(value)}")
    return value


def _clean_tags(tags: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for tag in tags:
        tag = str(tag).strip()
        if tag:
            seen.setdefault(checked_text(tag, f"the tag {tag[:20]!r}", t.run_tags.c.tag), None)
    return list(seen)


def _statuses(status: RunStatus | str | Iterable[RunStatus | str] | None) -> list[str] | None:
    if status is None:
        return None
    items = [status] if isinstance(status, (str, RunStatus)) else list(status)
    out = []
    for s in items:
        try:
            out.append(RunStatus(s).value)
        except ValueError:
            raise KDError(f"unknown run status {s!r} (one of {', '.join(x.value for x in RunStatus)})") from None
    return out


class RunStore:
    """Runs, metrics, events, artifacts and workers in one database (SQLite file or PostgreSQL)."""

    def __init__(self, url: str | None = None, *, actor: Actor | None = None):
        self.url = url or default_url()
        self.engine = get_engine(self.url)
        self.actor = actor  # None: the machine's own store (CLI, workers); else cancel/delete/rename/tag are checked

    def as_actor(self, actor: Actor) -> "RunStore":
        """This store acting for `actor`: submissions are theirs, and cancel, delete, rename and tags are
        refused (PermissionDeniedError) on runs they may not change. Shares the engine."""
        return RunStore(self.url, actor=actor)

    def __repr__(self) -> str:
        return f"RunStore({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def is_postgres(self) -> bool:
        return is_postgres(self.engine)

    # =============================================================================================
    # Dashboard and CLI side
    # =============================================================================================
    def submit(self, spec: RunSpec | Mapping[str, Any], *, name: str | None = None, owner: str | None = None,
               tags: Sequence[str] = (), depends_on: str | None = None, sweep_id: str | None = None,
               check: bool = True) -> str:
        """Queue one run; returns its id. An invalid spec raises SpecError listing every problem.
        A teacher given as another run makes this run wait for it (depends_on defaults to that run).
        check=False skips the checks that build models (field validation always runs)."""
        return self._submit_many([self._as_spec(spec)], name=name, owner=owner, tags=tags,
                                 depends_on=depends_on, sweep_id=sweep_id, check=check)[0]

    def submit_yaml(self, text: str, *, owner: str | None = None, tags: Sequence[str] = (),
                    check: bool = True) -> list[str]:
        """Queue a YAML spec; a `sweep:` block in it queues one run per value, grouped by one sweep id."""
        specs, sweep = expand_sweep(parse_spec_yaml(text))
        return self._submit_many(specs, owner=owner, tags=tags, sweep_id=_new_id() if sweep else None, check=check)

    def submit_sweep(self, base: RunSpec | Mapping[str, Any], field: str | Sequence[str], values: list, *,
                     owner: str | None = None, tags: Sequence[str] = (), check: bool = True) -> list[str]:
        """One run per value of a dotted field ("logit.rho", [1, 2, 4, 8, 16]), or of several fields swept
        together (["logit.alpha", "logit.beta"], [[0.1, 0.9], [0.5, 0.5]]). Returns the ids in value order."""
        data = self._as_spec(base).to_dict()
        fields = [f.strip() for f in field.split(",")] if isinstance(field, str) else list(field)
        data["sweep"] = {"field": fields[0], "values": list(values)} if len(fields) == 1 else \
            {"fields": fields, "values": list(values)}
        specs, _ = expand_sweep(data)
        return self._submit_many(specs, owner=owner, tags=tags, sweep_id=_new_id(), check=check)

    def submit_group(self, specs: Sequence[RunSpec | Mapping[str, Any]], *, owner: str | None = None,
                     tags: Sequence[str] = (), check: bool = True) -> str:
        """Queue several runs as one group (a study) in one transaction; returns the group's id, which
        `list_runs(sweep_id=...)` finds them by. Nothing is queued if any spec is invalid."""
        if not specs:
            raise SpecError(["a group needs at least one run"])
        group = _new_id()
        self._submit_many([self._as_spec(s) for s in specs], owner=owner, tags=tags, sweep_id=group, check=check)
        return group

    def submit_chain(self, data: Mapping[str, Any], *, owner: str | None = None, tags: Sequence[str] = (),
                     depends_on: str | None = None, check: bool = True) -> list[str]:
        """Queue a spec with a `chain:` block (kdcore.chains) as dependent runs, each link's teacher the run
        before it; returns the ids in chain order. Every link is checked before any is queued."""
        from kdcore.chains import parse_chain

        chain, links = parse_chain(dict(data))
        specs = [RunSpec.from_dict(link) for link in links]
        if check:
            for k, spec in enumerate(specs):
                try:  # a later link's layers are looked up in the model of the link before it
                    _check_spec(spec, teacher_model=specs[k - 1].student if k else None)
                except SpecError as err:
                    raise SpecError([f"chain {chain.kind} {k + 1}: {p}" for p in err.problems]) from None
        group = f"chain-{_new_id()[:8]}"
        ids: list[str] = []
        for k, spec in enumerate(specs):
            if k:
                spec = RunSpec.from_dict({**spec.to_dict(), "teacher": {"source": "run", "run_id": ids[-1]}})
            ids += self._submit_many([spec], owner=owner, tags=[*tags, group],
                                     depends_on=depends_on if k == 0 else None, check=False)
        return ids

    def get(self, run_id: str) -> RunRecord:
        """One run by id (or by a unique prefix of at least 4 characters)."""
        with read_tx(self.engine) as conn:
            run_id = self._resolve_id(conn, run_id)
            row = conn.execute(select(t.runs).where(t.runs.c.id == run_id)).mappings().one()
            tags = self._tags_of(conn, [run_id])
        return self._record(row, tags.get(run_id, []))

    def list_runs(self, *, status: RunStatus | str | Iterable[RunStatus | str] | None = None,
                  owner: str | None = None, tag: str | None = None, sweep_id: str | None = None,
                  search: str | None = None, limit: int = 500) -> list[RunRecord]:
        """Runs, newest first. `search` matches part of the name or the start of the id (any case)."""
        r = t.runs.c
        query = select(t.runs).order_by(r.created_at.desc(), r.id.desc()).limit(max(1, int(limit)))
        if (statuses := _statuses(status)) is not None:
            query = query.where(r.status.in_(statuses))
        if owner is not None:
            query = query.where(r.owner == owner)
        if sweep_id is not None:
            query = query.where(r.sweep_id == sweep_id)
        if tag is not None:
            query = query.where(exists().where(t.run_tags.c.run_id == r.id, t.run_tags.c.tag == tag))
        if search:
            needle = search.strip().lower()
            escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(or_(func.lower(r.name).like(f"%{escaped}%", escape="\\"),
                                    r.id.like(f"{escaped}%", escape="\\")))
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).mappings().all()
            tags = self._tags_of(conn, [row["id"] for row in rows])
        return [self._record(row, tags.get(row["id"], [])) for row in rows]

    def metrics(self, run_id: str, *, since_step: int = -1, names: Sequence[str] | None = None,
                kind: str | None = None) -> list[MetricPoint]:
        """Points with step > since_step, in step order. A chart that remembers the last step it drew
        asks only for what is new: all points of one step are always written together, in step order."""
        m = t.metrics.c
        query = (select(m.step, m.epoch, m.name, m.value, m.wall_time)
                 .where(m.run_id == run_id, m.step > since_step).order_by(m.step, m.id))
        if names is not None:
            query = query.where(m.name.in_(list(names)))
        if kind is not None:
            if kind not in ("step", "epoch"):
                raise KDError(f"metric kind must be 'step' or 'epoch', not {kind!r}")
            query = query.where(m.kind == kind)
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
        return [MetricPoint(int(s), int(e), n, float(v), float(w)) for s, e, n, v, w in rows]

    def metrics_frame(self, run_id: str, since_step: int = -1) -> "pandas.DataFrame":
        """The same points as a long table: columns step, epoch, name, value, wall_time."""
        import pandas as pd

        points = self.metrics(run_id, since_step=since_step)
        return pd.DataFrame(
            {"step": [p.step for p in points], "epoch": [p.epoch for p in points],
             "name": [p.name for p in points], "value": [p.value for p in points],
             "wall_time": [p.wall_time for p in points]},
            columns=["step", "epoch", "name", "value", "wall_time"],
        )

    def events(self, run_id: str, *, since_id: int = 0, limit: int = 1000) -> list[EventRecord]:
        """Log lines with id > since_id, oldest first."""
        e = t.events.c
        query = (select(e.id, e.time, e.level, e.message).where(e.run_id == run_id, e.id > since_id)
                 .order_by(e.id).limit(max(1, int(limit))))
        with read_tx(self.engine) as conn:
            rows = conn.execute(query).all()
        return [EventRecord(int(i), tm, lv, msg) for i, tm, lv, msg in rows]

    def cancel(self, run_id: str, *, by: str | None = None) -> None:
        """A queued run is cancelled at once; a running one is asked to stop (its worker stops it between
        steps, keeping the last checkpoint). Cancelling a finished run is an error."""
        by = self._by(by)
        with write_tx(self.engine) as conn:
            now = database_now(conn)
            run_id = self._authorized(conn, run_id, "cancel")
            # FOR UPDATE: on PostgreSQL a claim cannot slip in between this read and the write below
            # (SQLite's BEGIN IMMEDIATE already serialises writers).
            status = RunStatus(conn.execute(
                select(t.runs.c.status).where(t.runs.c.id == run_id).with_for_update()).scalar_one())
            if status is RunStatus.QUEUED:
                conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(
                    status=RunStatus.CANCELLED.value, cancel_requested=True, finished_at=now))
                self._event(conn, run_id, f"cancelled by {by} before it started", now=now)
            elif status is RunStatus.RUNNING:
                conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(cancel_requested=True))
                self._event(conn, run_id, f"cancel requested by {by}", now=now)
            else:
                raise RunStateError(f"run {run_id} has already {status.value}; there is nothing to cancel")
        self.resolve_dependencies()

    def delete(self, run_id: str, *, by: str | None = None) -> None:
        """Remove a run, its metrics, events and artifact files. A running run must be cancelled first."""
        by = self._by(by)
        with write_tx(self.engine) as conn:
            run_id = self._authorized(conn, run_id, "delete")
            status = conn.execute(
                select(t.runs.c.status).where(t.runs.c.id == run_id).with_for_update()).scalar_one()
            if status == RunStatus.RUNNING.value:
                raise RunStateError(f"run {run_id} is running; cancel it before deleting it")
            for table in (t.metrics, t.events, t.artifacts, t.run_tags, t.run_dependencies, t.run_nodes):
                conn.execute(delete(table).where(table.c.run_id == run_id))
            conn.execute(delete(t.runs).where(t.runs.c.id == run_id))
        log.info("run %s deleted by %s", run_id, by)
        shutil.rmtree(run_dir(run_id), ignore_errors=True)
        self.resolve_dependencies()  # runs waiting for it can no longer start

    def set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        clean = _clean_tags(tags)
        with write_tx(self.engine) as conn:
            run_id = self._authorized(conn, run_id, "tag")
            conn.execute(delete(t.run_tags).where(t.run_tags.c.run_id == run_id))
            if clean:
                conn.execute(insert(t.run_tags), [{"run_id": run_id, "tag": tag} for tag in clean])

    def add_tags(self, run_id: str, tags: Sequence[str]) -> None:
        """Add tags to a run, keeping those it has (tagging several runs at once)."""
        clean = _clean_tags(tags)
        with write_tx(self.engine) as conn:
            run_id = self._authorized(conn, run_id, "tag")
            have = set(self._tags_of(conn, [run_id]).get(run_id, []))
            new = [tag for tag in clean if tag not in have]
            if new:
                conn.execute(insert(t.run_tags), [{"run_id": run_id, "tag": tag} for tag in new])

    def set_notes(self, run_id: str, notes: str) -> None:
        """Replace the run's free-text notes (Markdown; empty clears them)."""
        notes = (notes or "").strip()
        if len(notes) > MAX_NOTES_CHARS:
            raise KDError(f"notes can have at most {MAX_NOTES_CHARS:,} characters, not {len(notes):,}")
        notes = checked_text(notes, "notes", t.runs.c.notes)
        with write_tx(self.engine) as conn:
            run_id = self._authorized(conn, run_id, "annotate")
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(notes=notes or None))

    def rename(self, run_id: str, name: str) -> None:
        name = (name or "").strip()
        if not name:
            raise KDError("a run name cannot be empty")
        name = checked_text(name, "a run name", t.runs.c.name)
        with write_tx(self.engine) as conn:
            run_id = self._authorized(conn, run_id, "rename")
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(name=name))

    def duplicate(self, run_id: str) -> RunSpec:
        """The run's spec with its current name and tags, ready to edit and submit as a new run."""
        record = self.get(run_id)
        return RunSpec.from_dict({**record.spec.to_dict(), "name": record.name, "tags": list(record.tags)})

    def artifacts(self, run_id: str) -> dict[str, Path]:
        """kind -> path of the artifact files that exist on this machine (checkpoint, metrics_csv,
        spec_yaml, probes, ...)."""
        with read_tx(self.engine) as conn:
            run_id = self._resolve_id(conn, run_id)
            rows = conn.execute(select(t.artifacts.c.kind, t.artifacts.c.path)
                                .where(t.artifacts.c.run_id == run_id)).all()
        found = {kind: _absolute(path) for kind, path in rows}
        # Files the trainer wrote but the worker had no chance to register (a killed worker) count too.
        for kind, filename in ARTIFACT_FILES.items():
            found.setdefault(kind, run_dir(run_id) / filename)
        return {kind: path for kind, path in sorted(found.items()) if path.is_file()}

    def workers(self, *, alive_only: bool = True, stale_after_s: float = STALE_AFTER_S) -> list[WorkerRecord]:
        """Workers that have registered, newest first. Alive = not stopped and heartbeating recently."""
        w = t.workers.c
        with read_tx(self.engine) as conn:
            cutoff = database_now(conn) - timedelta(seconds=stale_after_s)
            query = select(t.workers).order_by(w.started_at.desc())
            if alive_only:
                query = query.where(w.stopped_at.is_(None), w.heartbeat_at >= cutoff)
            rows = conn.execute(query).mappings().all()
        return [WorkerRecord(id=r["id"], host=r["host"], pid=r["pid"], device=r["device"],
                             started_at=r["started_at"], heartbeat_at=r["heartbeat_at"],
                             current_run=r["current_run"],
                             alive=r["stopped_at"] is None and r["heartbeat_at"] >= cutoff,
                             stopped_at=r["stopped_at"])
                for r in rows]

    def queue_counts(self) -> dict[str, int]:
        """status -> number of runs, every status present (0 when none)."""
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(t.runs.c.status, func.count()).group_by(t.runs.c.status)).all()
        counts = {s.value: 0 for s in RunStatus}
        counts.update({status: int(n) for status, n in rows})
        return counts

    def sweep_ids(self) -> list[str]:
        """Sweep groups, newest first."""
        r = t.runs.c
        query = (select(r.sweep_id, func.max(r.created_at).label("latest")).where(r.sweep_id.is_not(None))
                 .group_by(r.sweep_id).order_by(func.max(r.created_at).desc()))
        with read_tx(self.engine) as conn:
            return [row[0] for row in conn.execute(query).all()]

    # =============================================================================================
    # Worker side
    # =============================================================================================
    def register_worker(self, worker_id: str, *, host: str, pid: int, device: str) -> None:
        worker_id = checked_text(worker_id, "a worker id", t.workers.c.id)
        device = checked_text(device, "a worker's device", t.workers.c.device)
        host = checked_text(host[:200], "a worker's host name", t.workers.c.host)
        with write_tx(self.engine) as conn:
            now = database_now(conn)
            # Forget this id's earlier registration and workers silent for a week (the table stays small).
            conn.execute(delete(t.workers).where(or_(t.workers.c.id == worker_id,
                                                     t.workers.c.heartbeat_at < now - timedelta(days=7))))
            conn.execute(insert(t.workers).values(id=worker_id, host=host[:200], pid=pid, device=device,
                                                  started_at=now, heartbeat_at=now))

    def stop_worker(self, worker_id: str) -> None:
        with write_tx(self.engine) as conn:
            conn.execute(update(t.workers).where(t.workers.c.id == worker_id)
                         .values(stopped_at=database_now(conn), current_run=None))

    def heartbeat(self, worker_id: str, run_id: str | None = None, attempt: int | None = None,
                  node_rank: int = 0) -> bool:
        """The worker (and the run it executes) are alive. Returns False when the worker no longer owns
        the run (another worker took it over, or it was deleted): the caller must stop working on it.
        A worker holding node k > 0 of a run over several machines heartbeats its node instead."""
        w = t.workers.c
        with write_tx(self.engine) as conn:
            now = database_now(conn)
            held = True
            if run_id is not None and node_rank:
                n = t.run_nodes.c
                done = conn.execute(update(t.run_nodes).where(n.run_id == run_id, n.attempt == attempt,
                                                              n.node_rank == node_rank, n.worker_id == worker_id)
                                    .values(heartbeat_at=now))
                held = done.rowcount == 1 and self._current_attempt(conn, run_id, attempt)
            elif run_id is not None:
                done = conn.execute(update(t.runs).where(self._owned(run_id, worker_id, attempt))
                                    .values(heartbeat_at=now))
                held = done.rowcount == 1
            else:
                # An idle beat can come just after the worker claimed a run (its heartbeat thread read "no run" a
                # moment before). Locking the worker's row first waits for a claim still being committed, so the
                # update below (a new statement, hence a new snapshot on PostgreSQL) sees the claimed run.
                conn.execute(select(w.id).where(w.id == worker_id).with_for_update())
            # The run shown as the worker's: the one it beats for while it holds it; otherwise the one it had, while
            # it still holds that (every way a run ends clears it), else none.
            current = run_id if run_id is not None and held else case(
                (self._held_by(w.current_run, worker_id), w.current_run), else_=None)
            conn.execute(update(t.workers).where(w.id == worker_id).values(heartbeat_at=now, current_run=current))
            return held

    def claim_next(self, worker_id: str, *, device: str, max_devices: int | None = None,
                   endpoint: str | None = None, host: str | None = None) -> RunRecord | None:
        """Atomically take the oldest runnable run (queued, not waiting for an unfinished run) and mark it
        running for this worker; None if there is none. Two workers can never claim the same run: the
        UPDATE only succeeds while the row is still queued (and on PostgreSQL rows another worker is
        claiming are skipped with FOR UPDATE SKIP LOCKED rather than waited for). With `max_devices`, only
        runs asking for at most that many devices on one node (the spec's `devices`, `nodes` 1) are taken.

        With `endpoint` too (a host:port where this worker can host a c10d rendezvous) runs over several
        machines (`nodes` > 1) are taken as well: first a free node of such a run already started (its other
        nodes wait for it), else a queued one as its node 0, whose rendezvous is then `endpoint`. The record
        says which node this worker holds (`node_rank`) and where the nodes meet (`rendezvous`)."""
        worker_id = checked_text(worker_id, "a worker id", t.runs.c.worker_id)
        device = checked_text(device, "a worker's device", t.runs.c.device)
        multi_node = endpoint is not None and max_devices is not None
        if multi_node:
            endpoint = checked_text(endpoint, "a rendezvous endpoint", t.run_nodes.c.endpoint)
            host = checked_text((host or endpoint.rsplit(":", 1)[0])[:200], "a worker's host name", t.run_nodes.c.host)
        r = t.runs.c
        query = (select(r.id, r.spec).where(r.status == RunStatus.QUEUED.value, ~_waiting(r))
                 .order_by(r.created_at, r.id).limit(5 if max_devices is None else 50))
        if self.is_postgres:
            query = query.with_for_update(skip_locked=True, of=t.runs)
        with write_tx(self.engine) as conn:
            now = database_now(conn)
            if multi_node:
                joined = self._join_node(conn, worker_id, host, max_devices, now)
                if joined is not None:
                    return joined
            for run_id, spec in conn.execute(query).all():
                if max_devices is not None and not _fits(spec, max_devices, multi_node=multi_node):
                    continue
                done = conn.execute(
                    update(t.runs).where(r.id == run_id, r.status == RunStatus.QUEUED.value).values(
                        status=RunStatus.RUNNING.value, worker_id=worker_id, device=device,
                        attempts=r.attempts + 1, started_at=func.coalesce(r.started_at, now),
                        heartbeat_at=now, finished_at=None, error=None))
                if done.rowcount != 1:
                    continue
                attempts = conn.execute(select(r.attempts).where(r.id == run_id)).scalar_one()
                nodes = _nodes(spec)
                where = ""
                if nodes > 1:  # node 0; the nodes of earlier attempts are void
                    conn.execute(delete(t.run_nodes).where(t.run_nodes.c.run_id == run_id))
                    conn.execute(insert(t.run_nodes).values(
                        run_id=run_id, attempt=attempts, node_rank=0, worker_id=worker_id, host=host,
                        endpoint=endpoint, claimed_at=now, heartbeat_at=now))
                    where = f" as node 0 of {nodes} (rendezvous at {endpoint})"
                self._event(conn, run_id, f"claimed by worker {worker_id} on {device}{where} (attempt {attempts})",
                            now=now)
                conn.execute(update(t.workers).where(t.workers.c.id == worker_id)
                             .values(current_run=run_id, heartbeat_at=now))
                row = conn.execute(select(t.runs).where(r.id == run_id)).mappings().one()
                tags = self._tags_of(conn, [run_id])
                record = self._record(row, tags.get(run_id, []))
                return replace(record, rendezvous=endpoint) if nodes > 1 else record
        return None

    def _join_node(self, conn: Connection, worker_id: str, host: str, max_devices: int,
                   now: datetime) -> RunRecord | None:
        """Take a free node (1…nodes-1) of a running, not cancelled run over several machines that fits
        `max_devices` and holds no node of this worker. Each attempt is one INSERT that does nothing when
        another worker took that node (or this worker holds one) first."""
        r, n = t.runs.c, t.run_nodes.c
        started = exists().where(n.run_id == r.id, n.attempt == r.attempts, n.node_rank == 0)
        query = (select(r.id, r.spec, r.attempts)
                 .where(r.status == RunStatus.RUNNING.value, r.cancel_requested == False, started)  # noqa: E712
                 .order_by(r.started_at, r.id).limit(50))
        if self.is_postgres:
            query = query.with_for_update(skip_locked=True, of=t.runs)
        for run_id, spec, attempt in conn.execute(query).all():
            nodes = _nodes(spec)
            if nodes < 2 or not _fits(spec, max_devices, multi_node=True):
                continue
            held = conn.execute(select(n.node_rank, n.worker_id, n.endpoint)
                                .where(n.run_id == run_id, n.attempt == attempt)).all()
            if any(w == worker_id for _k, w, _e in held):
                continue
            endpoint = next((e for k, _w, e in held if k == 0), None)
            for rank in sorted(set(range(1, nodes)) - {k for k, _w, _e in held}):
                done = conn.execute(_insert_ignore(self.engine.dialect.name, t.run_nodes).values(
                    run_id=run_id, attempt=attempt, node_rank=rank, worker_id=worker_id, host=host,
                    endpoint=None, claimed_at=now, heartbeat_at=now))
                if done.rowcount != 1:
                    continue
                self._event(conn, run_id, f"node {rank} of {nodes} claimed by worker {worker_id} on {host} "
                                          f"(attempt {attempt})", now=now)
                conn.execute(update(t.workers).where(t.workers.c.id == worker_id)
                             .values(current_run=run_id, heartbeat_at=now))
                row = conn.execute(select(t.runs).where(r.id == run_id)).mappings().one()
                record = self._record(row, self._tags_of(conn, [run_id]).get(run_id, []))
                return replace(record, node_rank=rank, rendezvous=endpoint)
        return None

    def run_nodes(self, run_id: str) -> list[dict[str, Any]]:
        """The nodes of a run over several machines in its current attempt: node_rank, worker_id, host,
        endpoint (node 0's), heartbeat_at."""
        n = t.run_nodes.c
        with read_tx(self.engine) as conn:
            attempt = conn.execute(select(t.runs.c.attempts).where(t.runs.c.id == run_id)).scalar_one_or_none()
            rows = conn.execute(select(n.node_rank, n.worker_id, n.host, n.endpoint, n.heartbeat_at)
                                .where(n.run_id == run_id, n.attempt == attempt).order_by(n.node_rank)).mappings()
            return [dict(row) for row in rows]

    def release_node(self, run_id: str, worker_id: str, attempt: int, node_rank: int, reason: str, *,
                     count_attempt: bool, max_attempts: int = MAX_ATTEMPTS) -> bool:
        """A node k > 0 of a run over several machines ended before the run (its ranks died, its worker is
        stopping): the whole run goes back to the queue, to resume from its last checkpoint, or fails after
        `max_attempts` counted attempts. False, changing nothing, when the node is no longer this worker's
        in the run's current attempt (the run ended, or was requeued already)."""
        r, n = t.runs.c, t.run_nodes.c
        with write_tx(self.engine) as conn:
            held = conn.execute(select(n.worker_id).where(n.run_id == run_id, n.attempt == attempt,
                                                          n.node_rank == node_rank)).scalar_one_or_none()
            if held != worker_id or not self._current_attempt(conn, run_id, attempt, lock=True):
                return False
            now = database_now(conn)
            current = and_(r.id == run_id, r.status == RunStatus.RUNNING.value, r.attempts == attempt)
            if conn.execute(select(r.cancel_requested).where(current)).scalar_one_or_none():
                conn.execute(update(t.runs).where(current).values(status=RunStatus.CANCELLED.value, finished_at=now))
                self._event(conn, run_id, f"cancelled: node {node_rank} stopped ({reason}) while the run's cancel "
                                          "was pending; the last checkpoint is kept", level="warning", now=now)
            elif count_attempt and attempt >= max_attempts:
                error = f"node {node_rank} of the run failed on each of {attempt} attempts: {reason}"
                conn.execute(update(t.runs).where(current).values(status=RunStatus.FAILED.value, error=error,
                                                                  finished_at=now))
                self._event(conn, run_id, f"failed: {error}", level="error", now=now)
            else:
                conn.execute(update(t.runs).where(current).values(
                    status=RunStatus.QUEUED.value, worker_id=None,
                    attempts=r.attempts if count_attempt else r.attempts - 1))
                self._event(conn, run_id, f"released by worker {worker_id} (node {node_rank}): {reason}; the run "
                                          "resumes from its last checkpoint", level="warning", now=now)
            conn.execute(update(t.workers).where(t.workers.c.id == worker_id).values(current_run=None))
        self.resolve_dependencies()
        return True

    def _current_attempt(self, conn: Connection, run_id: str, attempt: int | None, *, lock: bool = False) -> bool:
        """The run is running in this attempt."""
        r = t.runs.c
        query = select(r.status, r.attempts).where(r.id == run_id)
        row = conn.execute(query.with_for_update() if lock and self.is_postgres else query).first()
        return row is not None and row.status == RunStatus.RUNNING.value and row.attempts == attempt

    def should_stop(self, run_id: str, worker_id: str, attempt: int, node_rank: int = 0) -> tuple[bool, bool]:
        """(cancel requested, still owned) for the run a worker executes (for node k > 0 of a run over
        several machines: the worker still holds that node of the run's current attempt)."""
        r, n = t.runs.c, t.run_nodes.c
        with read_tx(self.engine) as conn:
            row = conn.execute(select(r.cancel_requested, r.worker_id, r.attempts, r.status)
                               .where(r.id == run_id)).first()
            holder = None if not node_rank else conn.execute(
                select(n.worker_id).where(n.run_id == run_id, n.attempt == attempt, n.node_rank == node_rank)
            ).scalar_one_or_none()
        if row is None:
            return True, False
        who = holder if node_rank else row.worker_id
        owned = who == worker_id and row.attempts == attempt and row.status == RunStatus.RUNNING.value
        return bool(row.cancel_requested), owned

    def record_progress(self, run_id: str, worker_id: str, attempt: int, *,
                        points: Sequence[Mapping[str, Any]] = (), events: Sequence[tuple[datetime, str, str]] = (),
                        truncate_after_step: int | None = None, epoch: int | None = None, step: int | None = None,
                        final: Mapping[str, float] | None = None, device: str | None = None,
                        info: Mapping[str, Any] | None = None,
                        artifacts: Mapping[str, Path] | None = None) -> bool:
        """One transaction of a run's progress: drop void points (after a resume), add metric points
        (dicts with step, epoch, name, value, wall_time, kind) and log lines, update the progress
        columns. Returns False, writing nothing, when the worker no longer owns the run."""
        values: dict[str, Any] = {}
        if epoch is not None:
            values["epoch"] = epoch
        if step is not None:
            values["step"] = step
        if final is not None:
            values["final"] = _finite(final)
        if device is not None:
            values["device"] = device
        if info is not None:
            values["info"] = _json_safe(dict(info))
        with write_tx(self.engine) as conn:
            values["heartbeat_at"] = database_now(conn)
            done = conn.execute(update(t.runs).where(self._owned(run_id, worker_id, attempt)).values(**values))
            if done.rowcount != 1:
                return False
            if truncate_after_step is not None:
                conn.execute(delete(t.metrics).where(t.metrics.c.run_id == run_id,
                                                     t.metrics.c.step > truncate_after_step))
            if points:
                self._insert_points(conn, run_id, points)
            for when, level, message in events:
                self._event(conn, run_id, message, level=level, now=when)
            if artifacts:
                self._put_artifacts(conn, run_id, artifacts)
        return True

    def finish_run(self, run_id: str, worker_id: str, attempt: int, status: RunStatus, *,
                   error: str | None = None, final: Mapping[str, float] | None = None,
                   message: str | None = None, level: str = "info",
                   artifacts: Mapping[str, Path] | None = None) -> bool:
        """End a run the worker owns as completed, failed or cancelled."""
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"finish_run needs a final status, not {status}")
        values: dict[str, Any] = {"status": status.value, "error": error}
        if final is not None:
            values["final"] = _finite(final)
        with write_tx(self.engine) as conn:
            now = values["finished_at"] = values["heartbeat_at"] = database_now(conn)
            done = conn.execute(update(t.runs).where(self._owned(run_id, worker_id, attempt)).values(**values))
            if done.rowcount != 1:
                return False
            if message:
                self._event(conn, run_id, message, level=level, now=now)
            if artifacts:
                self._put_artifacts(conn, run_id, artifacts)
            conn.execute(update(t.workers).where(t.workers.c.id == worker_id).values(current_run=None))
        if status is not RunStatus.COMPLETED:
            self.resolve_dependencies()
        return True

    def release_run(self, run_id: str, worker_id: str, attempt: int, reason: str, *,
                    count_attempt: bool = False) -> bool:
        """Put a run the worker owns back in the queue (the worker is shutting down); another worker
        resumes it from its checkpoint. A release does not count as a failed attempt unless
        `count_attempt` (a process of the run died: after max attempts it fails for good). A run whose cancel
        is pending is cancelled instead: it never goes back to the queue."""
        r = t.runs.c
        with write_tx(self.engine) as conn:
            owned = self._owned(run_id, worker_id, attempt)
            cancel = conn.execute(select(r.cancel_requested).where(owned).with_for_update()).scalar_one_or_none()
            if cancel is None:
                return False
            if cancel:  # the user's cancel stands: a handed-back run must not be queued to run again
                conn.execute(update(t.runs).where(owned).values(status=RunStatus.CANCELLED.value,
                                                                finished_at=database_now(conn)))
                self._event(conn, run_id, f"cancelled: worker {worker_id} stopped it ({reason}) while its cancel "
                                          "was pending; the last checkpoint is kept", level="warning")
            else:
                conn.execute(update(t.runs).where(owned).values(
                    status=RunStatus.QUEUED.value, worker_id=None,
                    attempts=r.attempts if count_attempt else r.attempts - 1))
                self._event(conn, run_id, f"released by worker {worker_id}: {reason}", level="warning")
            conn.execute(update(t.workers).where(t.workers.c.id == worker_id).values(current_run=None))
        if cancel:
            self.resolve_dependencies()
        return True

    def reap_stale(self, *, stale_after_s: float = STALE_AFTER_S, max_attempts: int = MAX_ATTEMPTS) -> list[str]:
        """Running runs whose worker stopped heartbeating: queued again (to resume from their checkpoint),
        failed after `max_attempts` claims, or cancelled if a cancel was pending. Returns their ids."""
        r = t.runs.c
        reaped = []
        with write_tx(self.engine) as conn:
            # The database's clock, not this process's: a worker whose clock is off never misjudges another.
            now = database_now(conn)
            cutoff = now - timedelta(seconds=stale_after_s)
            # a run over several machines also when the worker of one of its other nodes went silent
            n = t.run_nodes.c
            silent_node = (select(n.worker_id).where(n.run_id == r.id, n.attempt == r.attempts, n.node_rank > 0,
                                                     n.heartbeat_at < cutoff).limit(1).scalar_subquery())
            stale = and_(r.status == RunStatus.RUNNING.value, or_(r.heartbeat_at < cutoff, silent_node.is_not(None)))
            query = select(r.id, r.attempts, r.cancel_requested, r.worker_id, (r.heartbeat_at < cutoff).label("run_stale"),
                           silent_node.label("silent_node")).where(stale)
            if self.is_postgres:
                query = query.with_for_update(skip_locked=True, of=t.runs)
            for run_id, attempts, cancel, worker, run_stale, silent in conn.execute(query).all():
                lost = (f"worker {worker if run_stale else silent} stopped heartbeating (no sign of life for over "
                        f"{stale_after_s:g} s)")
                if cancel:
                    values = {"status": RunStatus.CANCELLED.value, "finished_at": now}
                    message, level = f"{lost}; the run was being cancelled, so it is now cancelled", "warning"
                elif attempts >= max_attempts:
                    error = f"its worker stopped responding on {attempts} attempts; giving up after {max_attempts}"
                    values = {"status": RunStatus.FAILED.value, "finished_at": now, "error": error}
                    message, level = f"{lost}; {error}", "error"
                else:
                    values = {"status": RunStatus.QUEUED.value, "worker_id": None}
                    message, level = f"{lost}; queued again to resume from its last checkpoint", "warning"
                done = conn.execute(update(t.runs).where(r.id == run_id, stale).values(**values))
                if done.rowcount == 1:
                    self._event(conn, run_id, message, level=level, now=now)
                    reaped.append(run_id)
        if reaped:
            self.resolve_dependencies()
        return reaped

    def resolve_dependencies(self) -> list[str]:
        """Fail queued runs whose dependency (their teacher run) failed, was cancelled or deleted."""
        r = t.runs.c
        dep = t.runs.alias("dep")
        pairs = _dependency_pairs()
        query = (select(r.id, pairs.c.dep_id, r.spec, dep.c.status, dep.c.error)
                 .select_from(t.runs.join(pairs, pairs.c.run_id == r.id)
                              .outerjoin(dep, dep.c.id == pairs.c.dep_id))
                 .where(r.status == RunStatus.QUEUED.value,
                        or_(dep.c.id.is_(None),
                            dep.c.status.in_([RunStatus.FAILED.value, RunStatus.CANCELLED.value]))))
        failed: list[str] = []
        for _ in range(100):  # a chain A <- B <- C fails one link per pass
            with write_tx(self.engine) as conn:
                now = database_now(conn)
                rows = conn.execute(query).all()
                for run_id, dep_id, spec, dep_status, dep_error in rows:
                    teacher = (spec or {}).get("teacher") or {}
                    what = "teacher run" if teacher.get("run_id") == dep_id else "run"
                    outcome = {None: "was deleted", "failed": "failed", "cancelled": "was cancelled"}[dep_status]
                    error = f"{what} {dep_id} {outcome}, so this run cannot start"
                    if dep_status == "failed" and dep_error:  # the first failure's reason travels down a chain
                        reason = dep_error.split(" (because: ", 1)[1][:-1] if " (because: " in dep_error else dep_error
                        error += f" (because: {reason[:300]})"
                    done = conn.execute(update(t.runs).where(r.id == run_id, r.status == RunStatus.QUEUED.value)
                                        .values(status=RunStatus.FAILED.value, error=error, finished_at=now))
                    if done.rowcount == 1:
                        self._event(conn, run_id, error, level="error", now=now)
                        failed.append(run_id)
            if not rows:
                break
        return failed

    def log_event(self, run_id: str, message: str, *, level: str = "info") -> None:
        with write_tx(self.engine) as conn:
            self._event(conn, run_id, message, level=level)

    # =============================================================================================
    # Internals
    # =============================================================================================
    @staticmethod
    def _as_spec(spec: RunSpec | Mapping[str, Any]) -> RunSpec:
        # Re-validated even when it is a RunSpec: an object built with model_construct skips validation.
        data = spec.to_dict() if isinstance(spec, RunSpec) else dict(spec)
        if "sweep" in data:
            raise SpecError(["sweep: a sweep block needs submit_yaml or submit_sweep"])
        return RunSpec.from_dict(data)

    def _submit_many(self, specs: list[RunSpec], *, name: str | None = None, owner: str | None = None,
                     tags: Sequence[str] = (), depends_on: str | None = None, sweep_id: str | None = None,
                     check: bool = True) -> list[str]:
        if self.actor is not None:  # an actor's runs are theirs, whatever owner was passed
            if not self.actor.name.strip():
                raise PermissionDeniedError("Sign in to launch runs.")
            owner = self.actor.name
        if owner is not None:
            owner = checked_text(owner, "the owner", t.runs.c.owner)
        extra_tags = _clean_tags(tags)
        plans = []
        with read_tx(self.engine) as conn:
            for spec in specs:
                # Every run this one waits for: its teacher run and the run named by depends_on (--after).
                # (every member of an ensemble teacher that is a run)
                teacher_runs = [m.run_id for m in teacher_members(spec.teacher) if m.source == "run"]
                teacher_run = teacher_runs[0] if len(teacher_runs) == 1 and spec.teacher.source == "run" else None
                deps = list(dict.fromkeys(d for d in (*teacher_runs, depends_on) if d is not None))
                teacher_model = None
                for dep in deps:
                    field = ("teacher.run_id" if dep == teacher_run else "teacher.members" if dep in teacher_runs
                             else "depends_on")
                    dep_row = conn.execute(select(t.runs.c.id, t.runs.c.status, t.runs.c.spec)
                                           .where(t.runs.c.id == dep)).first()
                    if dep_row is None:
                        raise SpecError([f"{field}: there is no run {dep!r} in the store"])
                    if dep_row.status in (RunStatus.FAILED.value, RunStatus.CANCELLED.value):
                        raise SpecError([f"{field}: run {dep} {dep_row.status}, so it cannot be waited for"])
                    if dep == teacher_run:  # hint layers are looked up in the teacher's model, no other
                        teacher_model = (dep_row.spec or {}).get("student")
                plans.append((spec, deps, teacher_model))
        if check:
            for spec, _deps, teacher_model in plans:
                _check_spec(spec, teacher_model=teacher_model)

        ids: list[str] = []
        with write_tx(self.engine) as conn:
            now = database_now(conn)
            for i, (spec, deps, _model) in enumerate(plans):
                run_id = _new_id()
                while conn.execute(select(t.runs.c.id).where(t.runs.c.id == run_id)).first() is not None:
                    run_id = _new_id()
                run_name = (name if name and len(specs) == 1 else None) or spec.name or _default_name(spec)
                conn.execute(insert(t.runs).values(
                    id=run_id, name=checked_text(run_name[:200], "a run name", t.runs.c.name),
                    status=RunStatus.QUEUED.value, spec=spec.to_dict(),
                    owner=owner, attempts=0, sweep_id=sweep_id, depends_on=deps[0] if deps else None,
                    # distinct, increasing times keep a sweep's runs in value order in the queue
                    created_at=now + timedelta(microseconds=i), cancel_requested=False, final={},
                    epoch=0, step=0))
                run_tags = _clean_tags([*spec.tags, *extra_tags])
                if run_tags:
                    conn.execute(insert(t.run_tags), [{"run_id": run_id, "tag": tag} for tag in run_tags])
                if deps:
                    conn.execute(insert(t.run_dependencies), [{"run_id": run_id, "depends_on": d} for d in deps])
                waiting = f"; waits for run{'s' if len(deps) > 1 else ''} {', '.join(deps)}" if deps else ""
                self._event(conn, run_id, f"submitted by {owner or _current_user()}{waiting}", now=now)
                ids.append(run_id)
        return ids

    def _authorized(self, conn: Connection, run_id: str, action: str) -> str:
        """The full id of `run_id`, once this store's actor may `action` it (the one check every mutating
        run action makes, inside its own transaction); raises PermissionDeniedError otherwise."""
        run_id = self._resolve_id(conn, run_id)
        if self.actor is not None:
            owner = conn.execute(select(t.runs.c.owner).where(t.runs.c.id == run_id)).scalar_one()
            problem = denial(self.actor, owner, action)
            if problem:
                raise PermissionDeniedError(problem)
        return run_id

    def _by(self, by: str | None) -> str:
        """Who an action is recorded as: the actor when there is one (never a name they typed)."""
        return self.actor.name if self.actor is not None else (by or _current_user())

    def _resolve_id(self, conn: Connection, run_id: str) -> str:
        run_id = str(run_id).strip()
        if conn.execute(select(t.runs.c.id).where(t.runs.c.id == run_id)).first() is not None:
            return run_id
        if len(run_id) >= 4 and all(c in "0123456789abcdef" for c in run_id.lower()):
            found = conn.execute(select(t.runs.c.id).where(t.runs.c.id.like(f"{run_id.lower()}%")).limit(2)).all()
            if len(found) == 1:
                return found[0][0]
            if len(found) > 1:
                raise RunNotFoundError(f"more than one run id starts with {run_id!r}; give more characters")
        raise RunNotFoundError(f"there is no run {run_id!r} in the store")

    @staticmethod
    def _held_by(run_id, worker_id: str):
        """The run (a column or a value) is running with this worker on it: as its owner or on one of its nodes."""
        r, n = t.runs.c, t.run_nodes.c
        running = and_(r.id == run_id, r.status == RunStatus.RUNNING.value)
        return or_(exists().where(running, r.worker_id == worker_id),
                   exists().where(running, n.run_id == r.id, n.attempt == r.attempts, n.worker_id == worker_id))

    @staticmethod
    def _owned(run_id: str, worker_id: str, attempt: int | None):
        r = t.runs.c
        cond = and_(r.id == run_id, r.worker_id == worker_id, r.status == RunStatus.RUNNING.value)
        return cond if attempt is None else and_(cond, r.attempts == attempt)

    @staticmethod
    def _tags_of(conn: Connection, run_ids: list[str]) -> dict[str, list[str]]:
        if not run_ids:
            return {}
        out: dict[str, list[str]] = {}
        for start in range(0, len(run_ids), 500):  # keep the IN list within every driver's limits
            chunk = run_ids[start:start + 500]
            rows = conn.execute(select(t.run_tags.c.run_id, t.run_tags.c.tag)
                                .where(t.run_tags.c.run_id.in_(chunk)).order_by(t.run_tags.c.tag)).all()
            for run_id, tag in rows:
                out.setdefault(run_id, []).append(tag)
        return out

    @staticmethod
    def _event(conn: Connection, run_id: str, message: str, *, level: str = "info",
               now: datetime | None = None) -> None:
        conn.execute(insert(t.events).values(run_id=run_id, time=now or database_now(conn), level=level, message=message))

    def _insert_points(self, conn: Connection, run_id: str, points: Sequence[Mapping[str, Any]]) -> None:
        # Last value wins for a repeated (name, step), in the batch and against what is stored already.
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for p in points:
            value = float(p["value"])
            if value != value:  # NaN (e.g. val/acc without a validation split): nothing to draw, and SQLite
                continue        # would store it as NULL
            rows[(p["name"], int(p["step"]))] = {
                "run_id": run_id, "step": int(p["step"]), "epoch": int(p["epoch"]), "name": str(p["name"])[:100],
                "value": value, "wall_time": float(p["wall_time"]), "kind": p.get("kind", "step")}
        if not rows:
            return
        values = list(rows.values())
        if self.engine.dialect.name == "postgresql" and self.engine.dialect.driver == "psycopg2":
            # psycopg2's executemany is one round trip per row, and SQLAlchemy compiling a multi-row VALUES
            # is slow too: execute_values sends one statement per 1000 rows.
            from psycopg2.extras import execute_values

            columns = ("run_id", "step", "epoch", "name", "value", "wall_time", "kind")
            cursor = conn.connection.dbapi_connection.cursor()
            try:
                execute_values(
                    cursor,
                    f"INSERT INTO {t.metrics.name} ({', '.join(columns)}) VALUES %s "
                    "ON CONFLICT (run_id, name, step) DO UPDATE SET value = excluded.value, "
                    "epoch = excluded.epoch, wall_time = excluded.wall_time, kind = excluded.kind",
                    [tuple(v[c] for c in columns) for v in values], page_size=1000)
            finally:
                cursor.close()
        else:  # sqlite3's executemany runs in C, in-process: already fast
            conn.execute(_upsert(self.engine.dialect.name, t.metrics), values)

    def _put_artifacts(self, conn: Connection, run_id: str, artifacts: Mapping[str, Path]) -> None:
        rows = [{"run_id": run_id, "kind": kind, "path": _relative(Path(path))} for kind, path in artifacts.items()]
        conn.execute(delete(t.artifacts).where(t.artifacts.c.run_id == run_id,
                                               t.artifacts.c.kind.in_(list(artifacts))))
        conn.execute(insert(t.artifacts), rows)

    @staticmethod
    def _record(row: RowMapping, tags: list[str]) -> RunRecord:
        error = row["error"]
        try:
            # The run's current name is its spec's name: a renamed run's YAML and spec diff say so.
            spec = RunSpec.from_dict({**row["spec"], "name": row["name"]})
        except SpecError as err:  # a spec stored by another version: show the run rather than hide it
            spec = RunSpec()
            error = error or f"its stored spec is no longer valid here ({err})"
        return RunRecord(
            id=row["id"], name=row["name"], status=RunStatus(row["status"]), spec=spec, owner=row["owner"],
            worker_id=row["worker_id"], device=row["device"], attempts=int(row["attempts"]), error=error,
            tags=list(tags), sweep_id=row["sweep_id"], depends_on=row["depends_on"], created_at=row["created_at"],
            started_at=row["started_at"], finished_at=row["finished_at"], heartbeat_at=row["heartbeat_at"],
            final={k: float("nan") if v is None else float(v) for k, v in (row["final"] or {}).items()},
            epoch=int(row["epoch"]), step=int(row["step"]),
            cancel_requested=bool(row["cancel_requested"]), info=dict(row["info"] or {}), notes=row["notes"] or "",
        )


def _upsert(dialect: str, table):
    """INSERT that replaces the value of an existing (run_id, name, step)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:  # other databases: plain inserts, the unique constraint still refuses duplicates
        return insert(table)
    stmt = dialect_insert(table)
    return stmt.on_conflict_do_update(
        index_elements=["run_id", "name", "step"],
        set_={"value": stmt.excluded.value, "epoch": stmt.excluded.epoch,
              "wall_time": stmt.excluded.wall_time, "kind": stmt.excluded.kind})


def _dependency_pairs():
    """(run_id, dep_id) for every dependency: the table's rows, and kd_runs.depends_on of runs queued
    by a store that had no dependency table."""
    r, d = t.runs.c, t.run_dependencies.c
    return union(select(r.id.label("run_id"), r.depends_on.label("dep_id")).where(r.depends_on.is_not(None)),
                 select(d.run_id, d.depends_on)).subquery("pairs")


def _waiting(r):
    """True for a run (columns `r`) with a dependency that has not completed (or no longer exists)."""
    d = t.run_dependencies.c

    def completed(run_id_column):
        dep = t.runs.alias()
        return exists().where(dep.c.id == run_id_column, dep.c.status == RunStatus.COMPLETED.value)

    return or_(and_(r.depends_on.is_not(None), ~completed(r.depends_on)),
               exists().where(d.run_id == r.id, ~completed(d.depends_on)))


def _check_spec(spec: RunSpec, *, teacher_model: str | None) -> None:
    """The checks that need the model and dataset registries (imported here: they load torch)."""
    from kdcore.train.checks import check_spec

    problems = check_spec(spec, teacher_model=teacher_model)
    if problems:
        raise SpecError(problems)


def _default_name(spec: RunSpec) -> str:
    return f"{spec.student} {spec.method_label} on {spec.dataset.name}"


def _finite(values: Mapping[str, float]) -> dict[str, float | None]:
    # JSON has no NaN/inf (PostgreSQL refuses them): store None instead.
    out: dict[str, float | None] = {}
    for k, v in values.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        out[str(k)] = f if f == f and f not in (float("inf"), float("-inf")) else None
    return out


def _json_safe(value: Any) -> Any:
    """Plain JSON: non-finite floats become None, unknown objects their str()."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)


def _relative(path: Path) -> str:
    path = path.resolve()
    try:
        return path.relative_to(kd_home().resolve()).as_posix()
    except ValueError:
        return str(path)


def _absolute(stored: str) -> Path:
    path = Path(stored)
    return path if path.is_absolute() else kd_home() / path


def _current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


def _fits(spec: Any, max_devices: int, *, multi_node: bool = False) -> bool:
    """Whether a stored spec's run (or, with `multi_node`, one node of it) fits on one worker with
    `max_devices` free devices."""
    spec = spec if isinstance(spec, dict) else {}
    try:
        return (multi_node or _nodes(spec) == 1) and int(spec.get("devices") or 1) <= max_devices
    except (TypeError, ValueError):
        return True


def _nodes(spec: Any) -> int:
    try:
        return int((spec if isinstance(spec, dict) else {}).get("nodes") or 1)
    except (TypeError, ValueError):
        return 1


def _insert_ignore(dialect: str, table):
    """INSERT that does nothing when a unique key already holds the row (rowcount 0): an atomic claim."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        raise KDError(f"runs over several machines need SQLite or PostgreSQL, not {dialect}")
    return dialect_insert(table).on_conflict_do_nothing()
