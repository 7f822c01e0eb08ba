"""What the store hands out: plain frozen records, safe to cache and to pass between threads."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from kdcore.spec import RunSpec
from kdcore.summary import run_warnings


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})


@dataclass(frozen=True)
class RunRecord:
    id: str
    name: str
    status: RunStatus
    spec: RunSpec
    owner: str | None
    worker_id: str | None
    device: str | None
    attempts: int
    error: str | None
    tags: list[str]
    sweep_id: str | None
    depends_on: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    final: dict[str, float]
    # Additions to the contract: progress and a pending cancellation, for tables and progress bars.
    epoch: int = 0
    step: int = 0
    cancel_requested: bool = False
    info: dict = field(default_factory=dict)  # the trainer's start report (params, FLOPs, steps_per_epoch, ...)
    notes: str = ""  # the user's free text about the run
    # Set on a claim of a run over several machines: the node this worker holds, and the c10d rendezvous
    # endpoint (host:port) where the nodes meet.
    node_rank: int = 0
    rendezvous: str | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from first start to finish (or to now while running); None if it never started."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(timezone.utc)
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def progress(self) -> float:
        """Completed epochs over planned epochs, 0..1."""
        return min(1.0, self.epoch / max(1, self.spec.epochs))

    @property
    def dataset(self) -> str:
        return self.spec.dataset.name

    @property
    def student(self) -> str:
        return self.spec.student

    @property
    def teacher_label(self) -> str | None:
        """'run 3f2a9c1d', a model name or a checkpoint file name; None for a run without a teacher."""
        t = self.spec.teacher
        if t is None:
            return None
        if t.source == "ensemble":
            return f"{t.combine} ensemble of {len(t.members)}"
        if t.source == "run":
            return f"run {t.run_id}"
        if t.source == "torchvision":
            return f"{t.model} ({t.weights or 'DEFAULT'})"
        return t.model or Path(t.checkpoint or "").name or "checkpoint"

    @property
    def method_label(self) -> str:
        return self.spec.method_label

    @property
    def warnings(self) -> tuple[str, ...]:
        """The one-sentence warnings its trainer raised (a student that stopped learning), oldest first."""
        return run_warnings(self.info)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class MetricPoint:
    step: int
    epoch: int
    name: str
    value: float
    wall_time: float


@dataclass(frozen=True)
class EventRecord:
    id: int
    time: datetime
    level: str
    message: str


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    host: str
    pid: int
    device: str
    started_at: datetime
    heartbeat_at: datetime
    current_run: str | None
    alive: bool
    stopped_at: datetime | None = field(default=None)
