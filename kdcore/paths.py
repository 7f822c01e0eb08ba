"""Where KD Studio keeps things on disk. Every location can be moved by an environment variable."""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


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


# What the cache folder holds, by kind: the subfolder each kind is kept in and what it is (`python -m kdcore cache`
# lists and clears them). Written through cache_folder() by kdcore.data.sources (decoded), kdcore.data.loader
# (splits) and kdcore.train.split_logits (logits).
CACHE_KINDS = {
    "decoded": ("idx", "Fashion-MNIST's IDX files decoded"),
    "splits": ("splits", "normalised train/val/test splits, one per validation fraction and seed"),
    "logits": ("logits", "teachers' test-set logits"),
}


def cache_folder(kind: str) -> Path:
    """The subfolder of cache_dir() that keeps `kind` (a key of CACHE_KINDS)."""
    return cache_dir() / CACHE_KINDS[kind][0]


def cached(path: Path, load: Callable[[Path], T | None], build: Callable[[], T],
           save: Callable[[T, Path], None]) -> T:
    """The value kept at `path` (a file under cache_dir()), or build() it and keep it there.
    load() returns None for a file that does not hold what is wanted; a file that is absent or was cut short
    by a killed process is built again. The file is written under a per-process temporary name and renamed
    into place, so processes writing at once never leave half a file; without a writable cache (or room on its
    disk) the value is simply built each time."""
    try:
        kept = load(path)
        if kept is not None:
            return kept
    except Exception:  # noqa: BLE001 - absent or unreadable: build it again
        pass
    value = build()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save(value, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError):  # RuntimeError: torch.save's writer reports a failed write (a full disk) so
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    return value


def data_root() -> Path:
    """Root for datasets: downloads land here and image folders must live under it (KD_DATA_DIR)."""
    return Path(os.environ.get("KD_DATA_DIR", kd_home() / "data")).expanduser()


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
