"""The run store's tables. One schema for SQLite (a laptop) and PostgreSQL (a team).

Times of day are timezone-aware UTC datetimes; metric wall times are plain epoch seconds (charts want floats).
`SCHEMA_VERSION` is stored in `kd_meta`; a later change adds a step to `MIGRATIONS` in kdcore/jobs/db.py."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = 2  # 2: kd_runs.notes

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key for long metric histories.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Stores UTC; always returns an aware datetime (SQLite forgets the zone, PostgreSQL keeps it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


meta_table = Table(
    "kd_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "kd_runs",
    metadata,
    Column("id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("spec", JSON, nullable=False),
    Column("owner", String(100)),
    Column("worker_id", String(64)),
    Column("device", String(32)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("sweep_id", String(16), index=True),
    # No foreign key: a teacher run may be deleted; its queued students then fail with a clear reason.
    Column("depends_on", String(16), index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("heartbeat_at", UTCDateTime),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("final", JSON),
    Column("info", JSON),  # what the trainer reported on start: device, parameters, FLOPs, steps per epoch, ...
    Column("epoch", Integer, nullable=False, default=0),
    Column("step", Integer, nullable=False, default=0),
    Column("notes", Text),  # the user's free text about the run (added in schema 2)
    Index("ix_kd_runs_queue", "status", "created_at"),
)

run_tags = Table(
    "kd_run_tags",
    metadata,
    Column("run_id", String(16), ForeignKey("kd_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(100), primary_key=True),
    Index("ix_kd_run_tags_tag", "tag"),
)

# Every run a queued run waits for (its teacher run, a run it was submitted --after): it starts only when
# all of them completed. kd_runs.depends_on keeps the first of them for display (and for older stores).
run_dependencies = Table(
    "kd_run_dependencies",
    metadata,
    Column("run_id", String(16), ForeignKey("kd_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("depends_on", String(16), primary_key=True, index=True),
)

# The nodes of a run over several machines (spec `nodes` > 1), one row per node and attempt: the worker that
# holds the node. The worker that claims the run holds node 0 and hosts the c10d rendezvous at `endpoint`
# (host:port); the workers of other machines claim the other nodes and join it there. The primary key and the
# (run, attempt, worker) key make each claim one conditional INSERT: two workers never hold one node.
run_nodes = Table(
    "kd_run_nodes",
    metadata,
    Column("run_id", String(16), ForeignKey("kd_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("node_rank", Integer, primary_key=True),
    Column("worker_id", String(64), nullable=False),
    Column("host", String(200), nullable=False),
    Column("endpoint", String(262)),  # node 0's row: the rendezvous every node joins
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    UniqueConstraint("run_id", "attempt", "worker_id", name="uq_kd_run_nodes_worker"),
)

metrics = Table(
    "kd_metrics",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(16), ForeignKey("kd_runs.id", ondelete="CASCADE"), nullable=False),
    Column("step", Integer, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("name", String(100), nullable=False),
    Column("value", Float, nullable=False),
    Column("wall_time", Float, nullable=False),
    Column("kind", String(8), nullable=False),  # "step" | "epoch"
    # The safety net behind resume: one value per (run, name, step), so history can never hold duplicates.
    UniqueConstraint("run_id", "name", "step", name="uq_kd_metrics_point"),
    Index("ix_kd_metrics_run_step", "run_id", "step"),
)

events = Table(
    "kd_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(16), ForeignKey("kd_runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("time", UTCDateTime, nullable=False),
    Column("level", String(10), nullable=False),
    Column("message", Text, nullable=False),
)

artifacts = Table(
    "kd_artifacts",
    metadata,
    Column("run_id", String(16), ForeignKey("kd_runs.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("path", Text, nullable=False),  # relative to KD_HOME when inside it, so a moved KD_HOME still works
)

workers = Table(
    "kd_workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("device", String(32), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime),
    Column("current_run", String(16)),
)

# Team accounts for password sign-in (OIDC users live at their identity provider, not here).
users = Table(
    "kd_users",
    metadata,
    Column("name", String(64), primary_key=True),  # lower case; what runs are owned by
    Column("password_hash", Text, nullable=False),  # argon2id, salt and parameters inside
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("password_changed_at", UTCDateTime, nullable=False),  # sessions from before a change are void
)

# Sign-ins, failures and account changes: the audit trail, and what rate limiting counts.
auth_events = Table(
    "kd_auth_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("time", UTCDateTime, nullable=False),
    Column("kind", String(16), nullable=False),  # signin | failure | throttled | signout | user-added | ...
    Column("name", String(64), nullable=False),  # the account (or the name typed, for a failure)
    Column("client", String(64), nullable=False),  # the client's address, "" when unknown
    Column("detail", Text),
    Index("ix_kd_auth_events_name_time", "name", "time"),
    Index("ix_kd_auth_events_client_time", "client", "time"),
)
