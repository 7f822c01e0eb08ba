"""Process- and session-level resources for the pages: the store, the embedded worker, and cached
look-ups that are slow to compute (model statistics, layer lists, probe files)."""
from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from kdcore.jobs import RunStore
from kdcore.jobs.db import default_url
from kdcore.paths import kd_home

# Live views poll the store this often (seconds): frequent enough to look live, cheap for the server.
LIVE_REFRESH_S = 2.0
# The run view polls faster: its refresh reads only the points added since and swaps chart data in place.
RUN_VIEW_REFRESH_S = 1.0


@st.cache_resource(show_spinner=False)
def store_for(url: str) -> RunStore:
    """The RunStore of one database URL, shared by the whole process."""
    return RunStore(url)


def get_store() -> RunStore:
    """The RunStore of the current KD_HOME / KD_DATABASE_URL (one per database per process)."""
    return store_for(default_url())


@st.cache_resource(show_spinner=False)
def _worker_started(home: str, url: str) -> int | None:
    from kdcore.jobs import ensure_local_worker

    return ensure_local_worker(Path(home), url=url)


def ensure_worker_once() -> str | None:
    """Start the embedded worker once per process and database (KD_LOCAL_WORKER=0 turns it off).
    Returns a sentence for the user when starting failed, else None."""
    try:
        _worker_started(str(kd_home()), default_url())
    except Exception as err:  # noqa: BLE001 - the dashboard must open even when the worker cannot start
        return f"The local worker could not be started ({err}); runs will wait in the queue."
    return None


def start_worker_now() -> int | None:
    """The sidebar's "start a worker" button: try again now, bypassing the once-per-process cache."""
    from kdcore.jobs import ensure_local_worker

    return ensure_local_worker(kd_home(), url=default_url())


def local_worker_starting() -> bool:
    """The embedded worker's process is alive but has not registered with the store yet."""
    from kdcore.jobs.launcher import local_worker_pid

    try:
        return local_worker_pid(kd_home()) is not None
    except Exception:  # noqa: BLE001
        return False


def local_worker_enabled() -> bool:
    return os.environ.get("KD_LOCAL_WORKER", "1").strip().lower() not in ("0", "false", "no", "off")


def uploads_dir() -> Path:
    return kd_home() / "uploads"


# ---- cached look-ups -----------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=512)
def model_stats(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> tuple[int, int] | str:
    """(params, FLOPs per image), or the reason the model cannot be built for this input."""
    from kdcore.errors import KDError
    from kdcore.models import model_stats as compute

    try:
        stats = compute(name, num_classes, tuple(input_shape))
    except KDError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - e.g. a torchvision net whose pooling needs bigger images
        return f"{name} cannot run on {input_shape[1]}×{input_shape[2]} inputs ({type(err).__name__})"
    return stats.params, stats.flops


@st.cache_data(show_spinner=False, max_entries=128)
def layer_table(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> pd.DataFrame | str:
    """Every layer of a model with its output shape (one dry run): columns path, type, shape, params,
    candidate (a likely hint layer). A string explains why the model cannot be listed."""
    from app.catalog import layers_frame

    try:
        return layers_frame(name, num_classes, input_shape)
    except Exception as err:  # noqa: BLE001 - shown beside the widget instead of a traceback
        return str(err) if err.__class__.__name__.endswith("Error") and str(err) else f"{type(err).__name__}: {err}"


@st.cache_data(show_spinner=False, max_entries=64)
def load_probes_cached(path: str, mtime: float):
    from app.softlabels import load_probes

    return load_probes(path)


def probes_for(store: RunStore, run_id: str):
    """The run's probe logits (re-read when the file changes), or None when none are written yet."""
    try:
        path = store.artifacts(run_id).get("probes")
    except Exception:  # noqa: BLE001 - a deleted run
        return None
    if path is None:
        return None
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    return load_probes_cached(str(path), mtime)


@st.cache_data(show_spinner=False, max_entries=2048)
def _summary(url: str, run_id: str, finished_key: str):
    from kdcore.summary import SELECTION_METRICS, summarize_points

    return summarize_points(store_for(url).metrics(run_id, names=SELECTION_METRICS, kind="epoch"))


def run_summaries(store: RunStore, records: list[Any]) -> dict[str, Any]:
    """Each run's kdcore.summary RunSummary (the epoch validation selected), None before its first epoch.
    Finished runs are read once, running ones once per epoch."""
    return {r.id: _summary(store.url, r.id, r.finished_at.isoformat() if r.finished_at else f"live-{r.epoch}")
            if r.final else None for r in records}


def selected_accuracies(store: RunStore, records: list[Any]) -> dict[str, float]:
    """Test accuracy at the epoch validation selected, per run (kdcore.summary)."""
    return {run_id: s.test_acc for run_id, s in run_summaries(store, records).items()
            if s is not None and s.test_acc == s.test_acc}


def metrics_version(record: Any) -> str:
    """A cache key that changes whenever a run may have logged more: fixed once it has finished,
    else its status and step."""
    return record.finished_at.isoformat() if record.finished_at else f"{record.status.value}-{record.step}"


@st.cache_data(show_spinner=False, max_entries=512)
def _metrics_frame(url: str, run_id: str, version: str) -> pd.DataFrame:
    return store_for(url).metrics_frame(run_id)


@st.cache_data(show_spinner=False, max_entries=4096)
def _one_metric_frame(url: str, run_id: str, name: str, version: str) -> pd.DataFrame:
    points = store_for(url).metrics(run_id, names=[name])
    return pd.DataFrame({"step": [p.step for p in points], "epoch": [p.epoch for p in points],
                         "name": [p.name for p in points], "value": [p.value for p in points],
                         "wall_time": [p.wall_time for p in points]},
                        columns=["step", "epoch", "name", "value", "wall_time"])


def one_metric_frames(store: RunStore, records: list[Any], name: str) -> dict[str, pd.DataFrame]:
    """One metric of each run (run id -> its points, as `metrics_frame` has them): a grouped curve over many
    runs reads only the series it draws, not every step of every run."""
    return {r.id: _one_metric_frame(store.url, r.id, name, metrics_version(r)) for r in records}


def metrics_frame(store: RunStore, record: Any) -> pd.DataFrame:
    """Every metric point of a run (step, epoch, name, value, wall_time); a finished run is read once."""
    return _metrics_frame(store.url, record.id, metrics_version(record))


def measure_latency(name: str, num_classes: int, input_shape: tuple[int, int, int], batch: int = 32,
                    repeats: int = 5) -> float:
    """Milliseconds per image of a forward pass on the CPU of this dashboard (median of repeats)."""
    return _latency_cached(name, num_classes, tuple(input_shape), batch, repeats)


@st.cache_data(show_spinner=False, max_entries=256)
def _latency_cached(name: str, num_classes: int, input_shape: tuple[int, int, int], batch: int, repeats: int) -> float:
    from app.catalog import latency_ms

    return latency_ms(name, num_classes, input_shape, batch=batch, repeats=repeats)



class ZooJob:
    """Parameters, FLOPs and (on request) latency of every zoo model for one input shape, computed in a
    background thread so the Models page opens at once and fills in as numbers arrive."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]):
        import threading

        self.num_classes, self.input_shape = num_classes, tuple(input_shape)
        # Parameters and FLOPs depend only on the model code and the input: kept on disk, so a new process
        # (a restart, another replica on the same KD_HOME) shows the whole table at once.
        self.stats: dict[str, tuple[int, int] | str] = _load_zoo_stats(self._cache_path())
        self.latency: dict[str, float | str] = {}
        self.measuring = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._compute_stats, daemon=True, name="kd-zoo-stats")]
        self._threads[0].start()
        # A daemon thread killed inside torch at interpreter exit aborts the process: stop it first.
        atexit.register(self.stop)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout_s)

    @property
    def names(self) -> list[str]:
        from app.catalog import zoo_names

        return zoo_names()

    def _cache_path(self) -> Path:
        c, h, w = self.input_shape
        return kd_home() / "cache" / f"zoo-stats-{_models_fingerprint()}-{self.num_classes}-{c}x{h}x{w}.json"

    def _compute_stats(self) -> None:
        from kdcore.models import model_stats as compute

        computed = False
        for name in self.names:
            if self._stop.is_set():
                return
            if name in self.stats:
                continue
            computed = True
            try:
                s = compute(name, self.num_classes, self.input_shape)
                result: tuple[int, int] | str = (s.params, s.flops)
            except Exception as err:  # noqa: BLE001 - reported in the table's note column
                result = _cannot_run(name, self.input_shape, err)
            with self._lock:
                self.stats[name] = result
        if computed:
            _save_zoo_stats(self._cache_path(), self.snapshot()[0])

    def measure_latency(self) -> None:
        import threading

        with self._lock:
            if self.measuring:
                return
            self.measuring = True
        thread = threading.Thread(target=self._compute_latency, daemon=True, name="kd-zoo-latency")
        self._threads.append(thread)
        thread.start()

    def _compute_latency(self) -> None:
        from app.catalog import latency_ms

        try:
            for name in self.names:
                if self._stop.is_set():
                    return
                if name in self.latency or not isinstance(self.stats.get(name), tuple):
                    continue
                try:
                    value: float | str = latency_ms(name, self.num_classes, self.input_shape)
                except Exception as err:  # noqa: BLE001
                    value = type(err).__name__
                with self._lock:
                    self.latency[name] = value
        finally:
            self.measuring = False

    @property
    def stats_done(self) -> bool:
        return len(self.stats) >= len(self.names)

    def snapshot(self) -> tuple[dict, dict]:
        with self._lock:
            return dict(self.stats), dict(self.latency)


def _models_fingerprint() -> str:
    """A short hash of the model code (kdcore/models/*.py): cached statistics of other code are not used."""
    import hashlib

    import kdcore.models

    digest = hashlib.sha256()
    for path in sorted(Path(kdcore.models.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _load_zoo_stats(path: Path) -> dict[str, tuple[int, int] | str]:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: tuple(v) if isinstance(v, list) else str(v) for k, v in data.items()}


def _save_zoo_stats(path: Path, stats: dict[str, tuple[int, int] | str]) -> None:
    """Written to a temporary file and renamed, so a reader never sees half a file; failure only costs speed."""
    import json
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
            json.dump(stats, f)
        os.replace(f.name, path)
    except OSError:
        pass


def _cannot_run(name: str, input_shape: tuple[int, int, int], err: Exception) -> str:
    from kdcore.errors import KDError

    if isinstance(err, KDError):
        return str(err)
    return f"cannot run on {input_shape[1]}×{input_shape[2]} inputs ({type(err).__name__})"


@st.cache_resource(show_spinner=False, max_entries=16)
def zoo_job(num_classes: int, input_shape: tuple[int, int, int]) -> ZooJob:
    return ZooJob(num_classes, input_shape)
