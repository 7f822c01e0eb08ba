"""Helpers for tests and benches of the store: throwaway databases and worker processes.

Not used at runtime. PostgreSQL tests read KD_TEST_POSTGRES_URL (scripts/start_postgres.sh prints one);
each test gets its own schema in that database, so tests never see each other's rows."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

POSTGRES_ENV = "KD_TEST_POSTGRES_URL"


def start_throwaway_postgres() -> str | None:
    """Start scripts/start_postgres.sh's cluster once per process (stopped at exit) when PostgreSQL's
    server binaries are installed, so `make test` needs no server set up by hand. None if it cannot."""
    import atexit
    import glob
    import tempfile

    script = Path(__file__).resolve().parents[2] / "scripts" / "start_postgres.sh"
    pg_bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not script.is_file() or not pg_bins:
        return None
    workdir = tempfile.mkdtemp(prefix="kd-test-postgres.")
    done = subprocess.run([str(script)], env={**os.environ, "KD_PG_WORKDIR": workdir}, capture_output=True,
                          text=True, timeout=180)
    if done.returncode != 0:
        return None
    stop = [f"{pg_bins[-1]}/pg_ctl", "-D", f"{workdir}/data", "-m", "fast", "stop"]
    if os.geteuid() == 0:
        stop = ["su", "postgres", "-s", "/bin/bash", "-c", " ".join(f"'{a}'" for a in stop)]
    atexit.register(lambda: (subprocess.run(stop, capture_output=True), __import__("shutil").rmtree(workdir, True)))
    return done.stdout.strip().splitlines()[-1]


def postgres_base_url() -> str:
    """KD_TEST_POSTGRES_URL, else a throwaway local cluster; without either the test fails on CI (CI=true)
    and is skipped elsewhere."""
    import pytest

    url = os.environ.get(POSTGRES_ENV, "").strip()
    if not url and (url := start_throwaway_postgres() or ""):
        os.environ[POSTGRES_ENV] = url  # one cluster per test process
    if url:
        return url
    message = (f"{POSTGRES_ENV} is not set: start a server with `export {POSTGRES_ENV}=$(scripts/start_postgres.sh)` "
               "to run the PostgreSQL store tests")
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def postgres_schema_url(base_url: str) -> Iterator[str]:
    """A URL whose connections use a fresh, empty schema (dropped afterwards)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"kd_test_{secrets.token_hex(4)}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        from kdcore.jobs.db import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def database_url(kind: str, home: Path) -> Iterator[str]:
    """'sqlite' -> the default file in `home`; 'postgres' -> a fresh schema on KD_TEST_POSTGRES_URL."""
    if kind == "sqlite":
        from kdcore.jobs.db import dispose_engines

        try:
            yield f"sqlite:///{home / 'kdstudio.db'}"
        finally:
            dispose_engines()
    elif kind == "postgres":
        with postgres_schema_url(postgres_base_url()) as url:
            yield url
    else:
        raise ValueError(kind)


def claim_all(url: str, worker_id: str, delay_s: float = 0.0) -> list[str]:
    """Claim runs until none is left, completing each; returns the ids claimed (a race test's worker)."""
    from kdcore.jobs.records import RunStatus
    from kdcore.jobs.store import RunStore

    store = RunStore(url)
    store.register_worker(worker_id, host="test", pid=os.getpid(), device="cpu")
    claimed = []
    while (record := store.claim_next(worker_id, device="cpu")) is not None:
        claimed.append(record.id)
        if delay_s:
            time.sleep(delay_s)
        assert store.finish_run(record.id, worker_id, record.attempts, RunStatus.COMPLETED)
    store.stop_worker(worker_id)
    return claimed


def start_worker(home: Path, url: str, *args: str, stale_after_s: float = 10.0,
                 log_name: str = "worker.out") -> subprocess.Popen:
    """`python -m kdcore worker` as a real process on `url`, with test-friendly intervals; its stdout and
    stderr are appended to home/log_name."""
    env = dict(os.environ, KD_HOME=str(home), KD_DATABASE_URL=url, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    home.mkdir(parents=True, exist_ok=True)
    out = open(home / log_name, "ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "kdcore", "worker", "--poll", "0.2", "--heartbeat", "0.3",
             "--stale-after", str(stale_after_s), *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        out.close()


def stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL; always reaps. Safe on a process that already exited."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
        except ProcessLookupError:
            pass
    else:
        proc.wait()


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str, poll_s: float = 0.2,
               on_timeout: Callable[[], str] | None = None):
    """Poll until predicate() is truthy (returned); AssertionError naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{detail}")
        time.sleep(poll_s)
