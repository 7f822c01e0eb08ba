"""Datasets held as tensors on one device: a split is (x, y), a bundle is train/val/test plus how x was normalised."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from kdcore.data.registry import DatasetInfo


@dataclass
class TensorSplit:
    """One split as tensors on a device."""

    x: Tensor  # float32 (N, C, H, W), already normalised
    y: Tensor  # int64 (N,)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} samples but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device: torch.device | str) -> TensorSplit:
        return TensorSplit(self.x.to(device), self.y.to(device))

    def subset(self, index: Tensor) -> TensorSplit:
        """The samples at `index` (positions, or a boolean mask of length len(self))."""
        index = torch.as_tensor(index)
        if index.dtype != torch.bool:
            index = index.long()
        index = index.to(self.x.device)
        return TensorSplit(self.x[index], self.y[index])

    def class_counts(self, num_classes: int) -> Tensor:
        return torch.bincount(self.y, minlength=num_classes)


@dataclass
class DatasetBundle:
    info: DatasetInfo
    train: TensorSplit
    val: TensorSplit
    test: TensorSplit
    mean: tuple[float, ...]  # per channel, computed on the train split, subtracted from every split
    std: tuple[float, ...]
    # Splits kept in the cache folder: a name for their contents (a bundle of the same key holds the same tensors),
    # so what is derived from them can be kept under it without hashing them; None for splits computed unnamed.
    key: str | None = None

    def split_key(self, split: str) -> str | None:
        """A name for one kept split's contents ("train", "val" or "test"); None for splits computed unnamed."""
        return f"{self.key}/{split}" if self.key else None

    @property
    def device(self) -> torch.device:
        return self.train.device

    def split(self, name: str) -> TensorSplit:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, name)

    def to(self, device: torch.device | str) -> DatasetBundle:
        return replace(self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device))

    def normalize(self, x: Tensor) -> Tensor:
        """[0, 1] images -> what the models see (the inverse of denormalize)."""
        mean, std = self._stats_like(x)
        return (x - mean) / std

    def denormalize(self, x: Tensor) -> Tensor:
        """Normalised images (N, C, H, W) or (C, H, W) -> [0, 1] for showing them."""
        mean, std = self._stats_like(x)
        return (x * std + mean).clamp(0.0, 1.0)

    def _stats_like(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = (-1, 1, 1)  # broadcasts over (C, H, W) and (N, C, H, W)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        mean = torch.tensor(self.mean, dtype=dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=dtype, device=x.device).view(shape)
        return mean, std
