"""`python -m kdcore runs`: the runs in the store as a table (newest first), and the live workers."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--status", action="append", help="only runs with this status; repeat for several")
    p.add_argument("--owner", help="only runs of this owner")
    p.add_argument("--tag", help="only runs with this tag")
    p.add_argument("--sweep", help="only the runs of this sweep id")
    p.add_argument("--search", help="part of the name, or the start of the id")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50)")
    p.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    p.add_argument("--db", help="database URL (default: $KD_DATABASE_URL, else KD_HOME/kdstudio.db)")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _acc(record) -> str:
    value = record.final.get("test/acc")
    return "-" if value is None or value != value else f"{value:.4f}"


def table_rows(records) -> list[list[str]]:
    rows = [["ID", "NAME", "STATUS", "DATASET", "STUDENT", "METHOD", "EPOCH", "TEST ACC", "TRIES", "WORKER",
             "CREATED", "TIME"]]
    for r in records:
        status = r.status.value + (" (cancelling)" if r.cancel_requested and r.status.value == "running" else "")
        rows.append([r.id, r.name[:40], status, r.dataset, r.student, r.method_label, f"{r.epoch}/{r.spec.epochs}",
                     _acc(r), str(r.attempts), r.worker_id or "-", r.created_at.astimezone().strftime("%m-%d %H:%M"),
                     _duration(r.duration_s)])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def run(args: argparse.Namespace) -> int:
    from kdcore.jobs.store import RunStore

    store = RunStore(args.db)
    records = store.list_runs(status=args.status, owner=args.owner, tag=args.tag, sweep_id=args.sweep,
                              search=args.search, limit=args.limit)
    if args.json:
        for r in records:
            print(json.dumps({"id": r.id, "name": r.name, "status": r.status.value, "owner": r.owner,
                              "worker": r.worker_id, "device": r.device, "attempts": r.attempts, "error": r.error,
                              "tags": r.tags, "sweep_id": r.sweep_id, "depends_on": r.depends_on,
                              "epoch": r.epoch, "step": r.step, "final": r.final,
                              "created_at": r.created_at.isoformat(), "spec": r.spec.to_dict()}))
        return 0
    if records:
        print(format_table(table_rows(records)))
        failed = [r for r in records if r.error]
        for r in failed[:10]:
            print(f"  {r.id}: {r.error}")
    else:
        print("no runs")
    counts = store.queue_counts()
    workers = store.workers()
    busy = sum(1 for w in workers if w.current_run)
    print(f"{counts['queued']} queued, {counts['running']} running; {len(workers)} worker(s) alive, {busy} busy")
    return 0
