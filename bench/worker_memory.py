"""What a worker process keeps in memory after it has trained a run.

    .venv/bin/python bench/worker_memory.py [--runs 2]

A real `python -m kdcore worker` on a throwaway SQLite store (temporary KD_HOME) trains --runs digits KD runs one
after the other (examples/digits_kd.yaml on the CPU, the shipped digits teacher, 10 epochs). The worker's
resident memory (VmRSS from /proc) is read when it is idle before the first run, after each run once it is idle
again, and its peak (VmHWM). What a run leaves behind is the idle figure after it minus the idle figure before.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kdcore.jobs import RunStatus, RunStore  # noqa: E402
from kdcore.jobs.testing import database_url, start_worker, stop_process, wait_until  # noqa: E402
from kdcore.lab.assets import teacher_path  # noqa: E402
from kdcore.spec import load_spec  # noqa: E402


def memory_mb(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    data = load_spec(ROOT / "examples/digits_kd.yaml").to_dict()
    data.update(device="cpu", epochs=args.epochs,
                teacher={"source": "checkpoint", "checkpoint": str(teacher_path("digits"))})
    with tempfile.TemporaryDirectory() as tmp, database_url("sqlite", Path(tmp)) as url:
        home = Path(tmp)
        import os

        os.environ["KD_HOME"] = str(home)
        store = RunStore(url)
        worker = start_worker(home, url)
        try:
            wait_until(lambda: store.workers(), 120, "the worker to register")
            time.sleep(2.0)  # idle: polling the queue
            rows = [("idle, before any run", memory_mb(worker.pid))]
            for i in range(args.runs):
                run_id = store.submit({**data, "name": f"digits kd {i}"})
                wait_until(lambda run_id=run_id: store.get(run_id).status in (RunStatus.COMPLETED, RunStatus.FAILED), 600,
                           "the run to finish")
                assert store.get(run_id).status is RunStatus.COMPLETED, store.get(run_id).error
                time.sleep(2.0)  # idle again
                rows.append((f"idle, after run {i + 1}", memory_mb(worker.pid)))
        finally:
            stop_process(worker)
    base = rows[0][1]["VmRSS"]
    print(f"worker memory, digits KD runs of {args.epochs} epochs on the CPU")
    for label, m in rows:
        print(f"  {label:22s} RSS {m['VmRSS']:7.0f} MB ({m['VmRSS'] - base:+6.0f} MB), peak so far {m['VmHWM']:7.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
