"""`python -m kdcore logs ID [--follow]`: print a run's log lines (worker events and trainer lines)."""
from __future__ import annotations

import argparse
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_id", metavar="ID", help="run id (or a unique prefix of 4+ characters)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the run ends")
    p.add_argument("--db", help="database URL (default: $KD_DATABASE_URL, else KD_HOME/kdstudio.db)")


def format_event(event) -> str:
    stamp = event.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    level = "" if event.level == "info" else f"{event.level.upper()} "
    return f"{stamp} {level}{event.message}"


def run(args: argparse.Namespace) -> int:
    from kdcore.jobs.store import RunStore

    store = RunStore(args.db)
    record = store.get(args.run_id)
    last_id = 0
    while True:
        for event in store.events(record.id, since_id=last_id):
            print(format_event(event), flush=True)
            last_id = event.id
        if not args.follow or record.is_terminal:
            break
        time.sleep(1.0)
        record = store.get(record.id)
    if args.follow:
        tail = f": {record.error}" if record.error else ""
        print(f"run {record.id} {record.status.value}{tail}")
    return 0
