"""The run store under load: one worker process writing metrics, one dashboard reading "metrics since step".

    python bench/store_bench.py                      # SQLite in a temp KD_HOME
    python bench/store_bench.py --db postgresql+psycopg2://...   (or KD_TEST_POSTGRES_URL set: both)

The writer goes through the real worker path (StoreCallbacks: batched, held-back flushes, the throttled
cancel check) in its own process (spawn). Two loads:
  paced     -- 50 steps/s x 10 metrics, like a fast GPU run reporting every step; the reader polls every 0.5 s
  flat-out  -- steps as fast as the writer can go; the reader polls every 0.1 s
Printed per load: points written per second (and per second of database time), the reader's latency for
"since step" calls (p50/p95/max), how stale the newest point is when the reader sees it, and the latency
of reading a whole history at the end. Ratios compare reads under writing with reads of an idle store."""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _writer(url: str, run_id: str, attempt: int, seconds: float, metrics_per_step: int, steps_per_s: float,
            steps_per_epoch: int, start, results) -> None:
    from kdcore.jobs.store import RunStore
    from kdcore.jobs.worker import StoreCallbacks

    store = RunStore(url)
    db_time = [0.0]
    inner = store.record_progress

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            db_time[0] += time.perf_counter() - t0

    store.record_progress = timed
    cb = StoreCallbacks(store, run_id, "bench-worker", attempt)
    names = [f"loss/term{i}" for i in range(metrics_per_step)]
    epoch_names = [f"eval/m{i}" for i in range(10)]
    start.wait()
    t0 = time.perf_counter()
    step, epoch, points = 0, 1, 0
    while (now := time.perf_counter()) - t0 < seconds:
        if steps_per_s and step >= (now - t0) * steps_per_s:
            time.sleep(min(0.005, 1.0 / steps_per_s))
            continue
        cb.should_stop()  # as the trainer does before every step
        step += 1
        cb.on_step(epoch, step, {n: random.random() for n in names})
        points += len(names)
        if step % steps_per_epoch == 0:
            cb.on_epoch(epoch, step, {n: random.random() for n in epoch_names})
            points += len(epoch_names)
            epoch += 1
    cb.flush()
    results.put({"points": points, "steps": step, "elapsed": time.perf_counter() - t0, "db_time": db_time[0]})


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _idle_reads(store, run_id: str, cursor: int, repeats: int = 50) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        store.metrics(run_id, since_step=cursor)
        times.append(time.perf_counter() - t0)
    return times


def run_load(url: str, label: str, *, seconds: float, metrics_per_step: int, steps_per_s: float,
             read_every_s: float) -> dict:
    from kdcore.jobs.store import RunStore
    from kdcore.spec import RunSpec

    store = RunStore(url)
    run_id = store.submit(RunSpec(name=f"bench {label}", epochs=1000), check=False)
    store.register_worker("bench-worker", host="bench", pid=os.getpid(), device="cpu")
    record = store.claim_next("bench-worker", device="cpu")
    assert record is not None and record.id == run_id, "the bench needs an otherwise empty queue"

    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    writer = ctx.Process(target=_writer, args=(url, run_id, record.attempts, seconds, metrics_per_step,
                                               steps_per_s, 500, start, results))
    writer.start()
    time.sleep(2.0)  # let the writer import and connect before the clock starts
    start.set()
    cursor, latencies, staleness, seen = -1, [], [], 0
    while writer.is_alive():
        t0 = time.perf_counter()
        points = store.metrics(run_id, since_step=cursor)
        latencies.append(time.perf_counter() - t0)
        if points:
            staleness.append(time.time() - points[-1].wall_time)
            cursor = points[-1].step
            seen += len(points)
        time.sleep(read_every_s)
    writer.join()
    out = results.get(timeout=10)
    points = store.metrics(run_id, since_step=cursor)
    seen += len(points)
    t0 = time.perf_counter()
    history = store.metrics(run_id)
    full_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    one_series = store.metrics(run_id, names=["loss/term0"])
    series_read = time.perf_counter() - t0
    idle = _idle_reads(store, run_id, max(0, out["steps"] - 25))
    assert seen == len(history) == out["points"], (seen, len(history), out["points"])  # nothing missed
    store.cancel(run_id)
    return {
        "label": label, "points": out["points"], "points_per_s": out["points"] / out["elapsed"],
        "points_per_db_s": out["points"] / max(out["db_time"], 1e-9), "reads": len(latencies),
        "read_p50_ms": 1e3 * _percentile(latencies, 0.5), "read_p95_ms": 1e3 * _percentile(latencies, 0.95),
        "read_max_ms": 1e3 * max(latencies), "idle_p50_ms": 1e3 * _percentile(idle, 0.5),
        "stale_p50_s": _percentile(staleness, 0.5), "stale_p95_s": _percentile(staleness, 0.95),
        "full_read_ms": 1e3 * full_read, "history": len(history), "series_read_ms": 1e3 * series_read,
        "series": len(one_series),
    }


def bench(url: str, name: str, seconds: float) -> list[dict]:
    rows = [
        run_load(url, f"{name} paced", seconds=seconds, metrics_per_step=10, steps_per_s=50, read_every_s=0.5),
        run_load(url, f"{name} flat-out", seconds=seconds, metrics_per_step=10, steps_per_s=0, read_every_s=0.1),
    ]
    for row in rows:
        row["db"] = name
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| load | points written | points/s | points/s of DB time | since-step reads | read p50 / p95 / max (ms) "
            "| same read, idle store p50 (ms) | newest point age p50 / p95 (s) | whole history read |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['points']:,} | {r['points_per_s']:,.0f} | {r['points_per_db_s']:,.0f} | {r['reads']} "
            f"| {r['read_p50_ms']:.1f} / {r['read_p95_ms']:.1f} / {r['read_max_ms']:.1f} "
            f"| {r['idle_p50_ms']:.1f} ({r['read_p50_ms'] / max(r['idle_p50_ms'], 1e-9):.1f}x under writing) "
            f"| {r['stale_p50_s']:.2f} / {r['stale_p95_s']:.2f} "
            f"| {r['history']:,} points in {r['full_read_ms']:.0f} ms; one series ({r['series']:,}) "
            f"in {r['series_read_ms']:.0f} ms |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", action="append", default=[], help="database URL (repeatable); default a temp "
                        "SQLite file, plus KD_TEST_POSTGRES_URL when set")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each load (default 10)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="kd-store-bench-")
    os.environ["KD_HOME"] = home
    os.environ.pop("KD_DATABASE_URL", None)
    targets = [(u, "postgresql" if u.startswith("postgres") else "sqlite") for u in args.db]
    if not targets:
        targets.append((f"sqlite:///{home}/kdstudio.db", "sqlite"))
        if os.environ.get("KD_TEST_POSTGRES_URL"):
            targets.append((os.environ["KD_TEST_POSTGRES_URL"], "postgresql"))
    rows = []
    for url, name in targets:
        if name == "postgresql":
            from kdcore.jobs.testing import postgres_schema_url

            with postgres_schema_url(url) as schema_url:
                rows += bench(schema_url, name, args.seconds)
        else:
            rows += bench(url, name, args.seconds)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.seconds:g} s per load")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
