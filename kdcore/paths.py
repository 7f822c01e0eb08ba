"""Where KD Studio keeps things on disk. Every location can be moved by an environment variable."""
from __future__ import annotations

import os
from pathlib import Path


def kd_home() -> Path:
    """Root of the run store and artifacts (KD_HOME, default ~/.kdstudio)."""
    home = Path(os.environ.get("KD_HOME", Path.home() / ".kdstudio")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def runs_dir() -> Path:
    return kd_home() / "runs"


def run_dir(run_id: str) -> Path:
    """Artifacts of one run: checkpoints, probe logits, metrics CSV, resolved spec."""
    return runs_dir() / str(run_id)


def cache_dir() -> Path:
    """Derived files that can be rebuilt at any time, e.g. decoded datasets (KD_CACHE_DIR, default KD_HOME/cache)."""
    return Path(os.environ.get("KD_CACHE_DIR", kd_home() / "cache")).expanduser()


def data_root() -> Path:
    """Root for datasets: downloads land here and image folders must live under it (KD_DATA_DIR)."""
    return Path(os.environ.get("KD_DATA_DIR", kd_home() / "data")).expanduser()


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
