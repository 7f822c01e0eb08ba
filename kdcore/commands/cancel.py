"""`python -m kdcore cancel ID [ID ...]`: cancel queued runs at once, ask running ones to stop."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_ids", nargs="+", metavar="ID", help="run id (or a unique prefix of 4+ characters)")
    p.add_argument("--db", help="database URL (default: $KD_DATABASE_URL, else KD_HOME/kdstudio.db)")


def run(args: argparse.Namespace) -> int:
    from kdcore.jobs.records import RunStatus
    from kdcore.jobs.store import RunStore

    store = RunStore(args.db)
    for run_id in args.run_ids:
        store.cancel(run_id)
        record = store.get(run_id)
        if record.status is RunStatus.CANCELLED:
            print(f"{record.id}: cancelled")
        else:
            print(f"{record.id}: cancel requested; its worker stops it at the next step")
    return 0
