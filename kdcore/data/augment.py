"""Batched augmentation on the device: random crops with zero padding and random horizontal flips.

Whole batches at once (no per-sample Python loop), so data living on the GPU stays there."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kdcore.data.registry import canonical_name, dataset_info


@dataclass(frozen=True)
class Augmentation:
    crop_padding: int = 0  # pad each side by this many zeros, then crop back to the original size
    hflip: bool = False  # mirror left-right with probability 1/2

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")

    def __bool__(self) -> bool:
        return self.crop_padding > 0 or self.hflip

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a batch (N, C, H, W); random numbers come from `generator` (on any device)."""
        if not self or x.shape[0] == 0:
            return x
        return self.apply(x, self.draw(x.shape[0], generator, x.device))

    def draw(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> Tensor:
        """The random parameters of n augmentations, (n, 3) int64 rows of (crop top, crop left, flip),
        on `device`. `apply(x, draw(...))` is the same augmentation as `__call__` with the same generator."""
        dev = generator.device if generator is not None else torch.device(device)
        params = torch.zeros(n, 3, dtype=torch.long, device=dev)
        if self.crop_padding > 0:
            span = 2 * self.crop_padding + 1
            params[:, 0] = torch.randint(0, span, (n,), generator=generator, device=dev)
            params[:, 1] = torch.randint(0, span, (n,), generator=generator, device=dev)
        else:
            params[:, :2] = self.crop_padding
        if self.hflip:
            params[:, 2] = torch.rand(n, generator=generator, device=dev) < 0.5
        return params.to(device)

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        """The augmentation given by `params` (rows of draw()): the same parameters give the same images."""
        if not self or x.shape[0] == 0:
            return x
        if self.crop_padding > 0:
            x = crop(x, self.crop_padding, params[:, 0], params[:, 1])
        if self.hflip:
            x = torch.where(params[:, 2].bool()[:, None, None, None], x.flip(3), x)
        return x


def crop(x: Tensor, padding: int, top: Tensor, left: Tensor) -> Tensor:
    """Pad by `padding` zeros, then take for each sample the H×W window at (top, left) of the padded image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = top.to(x.device)[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = left.to(x.device)[:, None] + torch.arange(w, device=x.device)  # (N, W)
    # Two gathers with expanded (stride-0) indices: rows first, then columns.
    x = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _draw_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x.device


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Pad by `padding` zeros, then take for each sample its own randomly shifted H×W window."""
    span = 2 * padding + 1
    dev = _draw_device(x, generator)
    top = torch.randint(0, span, (x.shape[0],), generator=generator, device=dev)
    left = torch.randint(0, span, (x.shape[0],), generator=generator, device=dev)
    return crop(x, padding, top, left)


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=_draw_device(x, generator)) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)


_DEFAULTS = {
    "cifar10": Augmentation(crop_padding=4, hflip=True),
    "cifar100": Augmentation(crop_padding=4, hflip=True),
    "svhn": Augmentation(crop_padding=4, hflip=False),  # mirrored digits are other symbols
    "mnist": Augmentation(crop_padding=2, hflip=False),
    "fashion-mnist": Augmentation(crop_padding=2, hflip=True),
    "digits": Augmentation(crop_padding=1, hflip=False),
    "imagefolder": Augmentation(crop_padding=4, hflip=True),
}


def default_augmentation(name: str) -> Augmentation:
    """The usual augmentation for a dataset in KD papers (unknown name -> UnknownNameError)."""
    info = dataset_info(name)
    return _DEFAULTS.get(canonical_name(info.name), Augmentation())
