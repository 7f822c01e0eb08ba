"""The teacher's logits cached for a fixed set of augmented views of every transfer sample (as FKD does).

With augmentation, epoch e shows view (e - 1) mod K of every sample: the crop offsets and flips of a view are
drawn once from (seed, view) and kept beside the logits the teacher gave for exactly those images. The logits
are filled while training (the first epoch that shows a view runs the teacher on its batches and keeps what it
returned), so nothing is paid at start-up, the cached logits are the very ones the uncached path computes, and
a resumed run refills what it needs. Without augmentation there is one view: the plain inputs."""
from __future__ import annotations

import torch
from torch import Tensor

from kdcore.data.augment import Augmentation

_VIEW_SEED_STRIDE = 1_000_033


class TeacherCache:
    def __init__(self, size: int, num_classes: int, views: int, augment: Augmentation, seed: int,
                 device: torch.device) -> None:
        self.augment = augment
        self.views = views if augment else 1
        self.logits = torch.zeros(self.views, size, num_classes, device=device)
        self.stored = torch.zeros(self.views, size, dtype=torch.bool, device=device)
        self.filled = [False] * self.views
        self._size, self._seed = size, seed
        self._params: list[Tensor | None] = [None] * self.views  # drawn when an epoch first shows the view

    @property
    def device(self) -> torch.device:
        return self.logits.device

    def view_params(self, view: int) -> Tensor:
        """(N, 3) crop top, crop left, flip of every sample in `view`: drawn on the CPU from (seed, view), so every
        device shows the same views, when first asked for (drawing all of them cost start-up ~20 ms on
        Fashion-MNIST)."""
        if self._params[view] is None:
            generator = torch.Generator().manual_seed(self._seed * _VIEW_SEED_STRIDE + view)
            self._params[view] = self.augment.draw(self._size, generator).to(self.device)
        return self._params[view]

    def view_of(self, epoch: int) -> int:
        return (epoch - 1) % self.views

    def inputs(self, x: Tensor, index: Tensor, view: int) -> Tensor:
        """The batch as the view shows it (x holds the plain samples at `index`)."""
        return self.augment.apply(x, self.view_params(view)[index]) if self.augment else x

    def lookup(self, index: Tensor, view: int) -> Tensor | None:
        return self.logits[view][index] if self.filled[view] else None

    def store(self, index: Tensor, view: int, teacher_logits: Tensor) -> None:
        self.logits[view].index_copy_(0, index, teacher_logits.detach().float())
        self.stored[view].index_fill_(0, index, True)

    def end_epoch(self, view: int) -> None:
        """Serve `view` from the cache once every sample of it is stored (a dropped last batch may leave some)."""
        self.filled[view] = self.filled[view] or bool(self.stored[view].all())

    def describe(self) -> dict:
        return {"teacher_cache_views": self.views,
                "teacher_cache_augmentation": (f"crop ±{self.augment.crop_padding}, "
                                               f"{'flips' if self.augment.hflip else 'no flips'}; "
                                               f"view v drawn from (seed, v), epoch e shows view (e-1) mod "
                                               f"{self.views}") if self.augment else "none"}
