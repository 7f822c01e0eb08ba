"""The run store and its workers: the single truth shared by the dashboard, the CLI and the workers.

Training never runs inside the dashboard's process: it submits a RunSpec to the store, a worker process
(`python -m kdcore worker`) claims it, trains it and writes metrics, events and artifacts back."""
from kdcore.jobs.launcher import ensure_local_worker
from kdcore.jobs.records import EventRecord, MetricPoint, RunRecord, RunStatus, WorkerRecord
from kdcore.jobs.store import RunNotFoundError, RunStateError, RunStore

__all__ = [
    "RunStore", "RunRecord", "MetricPoint", "EventRecord", "WorkerRecord", "RunStatus", "ensure_local_worker",
    "RunNotFoundError", "RunStateError",
]
