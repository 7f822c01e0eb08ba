"""The embedded local worker: the dashboard calls `ensure_local_worker()` on start, so that
`streamlit run app/main.py` alone is a working system.

The worker is a fresh `python -m kdcore worker` process in its own session (a Ctrl-C in the dashboard's
terminal does not reach it; it outlives dashboard reruns and restarts). It is started as a new
interpreter, never forked from the dashboard, so CUDA is only ever initialised in the worker.
"Alive" is decided by the pid file in KD_HOME (a live process that is a kdcore worker) and by the
store's worker heartbeats (any worker heartbeating on the same database, e.g. a GPU box of a team)."""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

PIDFILE_NAME = "worker.pid"
LOCKFILE_NAME = "worker.lock"


def ensure_local_worker(home: Path | None = None, device: str = "auto", *, url: str | None = None,
                        extra_args: list[str] | None = None) -> int | None:
    """Start one detached worker for KD_HOME `home` unless a worker is alive; returns the new worker's pid,
    or None when one was already alive (or KD_LOCAL_WORKER=0 turns the embedded worker off).
    Its log goes to KD_HOME/worker-<id>.log."""
    if os.environ.get("KD_LOCAL_WORKER", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    home = Path(home).expanduser() if home is not None else _env_home()
    home.mkdir(parents=True, exist_ok=True)
    url = url or os.environ.get("KD_DATABASE_URL", "").strip() or f"sqlite:///{home / 'kdstudio.db'}"
    with _locked(home / LOCKFILE_NAME):
        if local_worker_pid(home) is not None or _alive_in_store(url):
            return None
        worker_id = new_worker_id()
        log_path = home / f"worker-{worker_id}.log"
        env = dict(os.environ, KD_HOME=str(home), KD_DATABASE_URL=url)
        # The package may be used from a source checkout without being installed.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        cmd = [sys.executable, "-m", "kdcore", "worker", "--worker-id", worker_id, "--device", device, "--quiet",
               *(extra_args or [])]
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                    env=env, cwd=str(home), start_new_session=True, close_fds=True)
        _write_pidfile(home, {"pid": proc.pid, "worker_id": worker_id, "device": device,
                              "started": time.time(), "log": str(log_path)})
        return proc.pid


def local_worker_pid(home: Path | None = None) -> int | None:
    """The pid of the embedded worker of KD_HOME if that process is alive, else None."""
    home = Path(home).expanduser() if home is not None else _env_home()
    try:
        info = json.loads((home / PIDFILE_NAME).read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if is_worker_process(pid) else None


def stop_local_worker(home: Path | None = None, timeout_s: float = 30.0) -> bool:
    """Ask the embedded worker to stop (SIGTERM: it hands its run back to the queue). True if it exited."""
    import signal

    home = Path(home).expanduser() if home is not None else _env_home()
    pid = local_worker_pid(home)
    if pid is None:
        return True
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_worker_process(pid):
            return True
        time.sleep(0.2)
    return False


def new_worker_id() -> str:
    """host-xxxxxx: readable in tables, safe in a file name (the worker's log is worker-<id>.log)."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname().split(".")[0])[:30] or "host"
    return f"{host}-{secrets.token_hex(3)}"


def process_running(pid: int) -> bool:
    """The process exists and is not a zombie."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user: go on to the zombie check
        pass
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return Path("/proc/self").exists() is False  # no procfs (macOS): existence is all we can check
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def is_worker_process(pid: int) -> bool:
    """A running process whose command line is a kdcore worker (guards a stale pid file against pid reuse)."""
    if not process_running(pid):
        return False
    try:
        args = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return b"worker" in args and any(b"kdcore" in a or b"kdstudio" in a for a in args)


def _reap(pid: int) -> None:
    # A worker started by this process becomes a zombie when it exits until someone waits for it.
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def _alive_in_store(url: str) -> bool:
    """Any worker heartbeating on this database; one on this host must also still be running."""
    from kdcore.jobs.store import RunStore

    host = socket.gethostname()
    for worker in RunStore(url).workers(alive_only=True):
        if worker.host != host or process_running(worker.pid):
            return True
    return False


def _env_home() -> Path:
    from kdcore.paths import kd_home

    return kd_home()


def _write_pidfile(home: Path, info: dict) -> None:
    tmp = home / (PIDFILE_NAME + ".tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, home / PIDFILE_NAME)


@contextmanager
def _locked(path: Path):
    """An exclusive lock between processes (two dashboard sessions starting at once start one worker)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a rare double start is harmless (claims are atomic)
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
