"""A saved teacher's logits on a whole split, kept in the cache folder between runs.

Every KD run scores its teacher on the test set before the first step (its accuracy, calibration, the probes'
logits, agreement). Runs distilled from one teacher file get the same answer each time, and a big teacher
takes seconds to minutes to give it, so it is computed once and kept, named after everything it depends on:
the teacher file (path, size, modification time), the exact input tensor (a hash of its bytes, or the name of
the kept split it is), how it was evaluated (device kind, precision, batch, memory format) and the PyTorch
version. Anything else computes it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from kdcore.spec import TeacherSpec


def teacher_file(t: TeacherSpec) -> Path | None:
    """The file a teacher is loaded from; None for downloaded (torchvision) weights."""
    from kdcore.paths import run_dir
    from kdcore.train.checkpoint import CHECKPOINT_NAME

    if t.source == "checkpoint":
        return Path(t.checkpoint).expanduser()
    if t.source == "run":
        return run_dir(t.run_id) / CHECKPOINT_NAME
    return None


def evaluation_key(device_type: str, precision: str, batch: int, channels_last: bool) -> str:
    """How a split was evaluated, as the cache names it: runs and the form's quality check share entries."""
    return f"{device_type}|{precision}|batch {batch}|channels_last {channels_last}"


def _key(source: Path, x: Tensor, how: str, inputs_key: str | None) -> str:
    stat = source.stat()
    h = hashlib.sha1(f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}|{how}|{torch.__version__}".encode())
    h.update(str((tuple(x.shape), str(x.dtype))).encode())
    if inputs_key is not None:
        h.update(f"inputs {inputs_key}".encode())
    else:
        h.update(x.detach().cpu().contiguous().view(torch.uint8).numpy())
    return h.hexdigest()[:24]


def cached_split_logits(source: Path | None, x: Tensor, how: str, compute: Callable[[], Tensor], *,
                        inputs_key: str | None = None) -> Tensor:
    """compute() (a frozen model's float32 logits for the inputs x), or the copy kept from an earlier run.
    `inputs_key` names x's contents when something already does (a kept split's: DatasetBundle.key); hashing
    Fashion-MNIST's test images instead costs ~30 ms of every run's start-up."""
    from kdcore.paths import cache_folder, cached

    if source is None or not source.is_file():
        return compute()

    def load(path: Path) -> Tensor | None:
        kept = torch.load(path, map_location="cpu", weights_only=True)
        return kept.to(x.device) if isinstance(kept, Tensor) and kept.dim() == 2 and len(kept) == len(x) else None

    return cached(cache_folder("logits") / f"{_key(source, x, how, inputs_key)}.pt", load, compute,
                  lambda logits, path: torch.save(logits.detach().cpu(), path))
