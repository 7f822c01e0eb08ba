"""Mini-batches straight from tensors on the device, and deterministic class-stratified index picks."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from kdcore.data.bundle import TensorSplit


def iterate_batches(
    split: TensorSplit,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    merge_single: bool = False,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield (x, y, index) batches; index are positions in `split` (keys for a teacher-logit cache).
    `merge_single` folds a last batch of one sample into the one before (BatchNorm cannot train on one).

    The permutation is drawn with `generator` on the generator's device (CPU by default) and then
    moved to the split's device, so a seeded CPU generator gives the same order on any device."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(split)
    device = split.x.device
    if shuffle:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=gen_device).to(device)
    else:
        order = None
    stop = n - n % batch_size if drop_last else n
    merge = merge_single and not drop_last and n % batch_size == 1 and n > 1
    for start in range(0, stop - 1 if merge else stop, batch_size):
        end = n if merge and start + batch_size == n - 1 else min(start + batch_size, n)
        if order is None:  # contiguous slices are views: no copy
            yield split.x[start:end], split.y[start:end], torch.arange(start, end, device=device)
        else:
            index = order[start:end]
            yield split.x[index], split.y[index], index


def num_batches(n: int, batch_size: int, drop_last: bool = False, merge_single: bool = False) -> int:
    if drop_last:
        return n // batch_size
    if merge_single and n % batch_size == 1 and n > 1:
        return n // batch_size
    return -(-n // batch_size)


def _stratified_pick(y: Tensor, count_for_class, seed: int) -> Tensor:
    """Per class (in class order), shuffle that class's positions with one seeded CPU generator and keep
    the first count_for_class(n) of them; returns sorted positions on y's device."""
    labels = y.detach().to("cpu", torch.long)
    generator = torch.Generator().manual_seed(int(seed))
    picked = []
    for cls in torch.unique(labels).tolist():
        positions = torch.nonzero(labels == cls, as_tuple=True)[0]
        shuffled = positions[torch.randperm(len(positions), generator=generator)]
        picked.append(shuffled[: count_for_class(len(positions))])
    if not picked:
        return torch.empty(0, dtype=torch.long, device=y.device)
    return torch.sort(torch.cat(picked)).values.to(y.device)


def stratified_subset(
    y: Tensor, per_class: int | None = None, fraction: float | None = None, seed: int = 0
) -> Tensor:
    """Sorted indices of a class-balanced subset: `per_class` samples of each class (all of a smaller
    class) or `fraction` of each class (at least one). Same y and seed -> same indices."""
    if (per_class is None) == (fraction is None):
        raise ValueError("give exactly one of per_class or fraction")
    if per_class is not None:
        if per_class < 0:
            raise ValueError(f"per_class must be >= 0, got {per_class}")
        return _stratified_pick(y, lambda n: min(per_class, n), seed)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return _stratified_pick(y, lambda n: min(n, max(1, round(fraction * n))), seed)


def stratified_split(y: Tensor, held_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split positions into (kept, held) with about `held_fraction` of every class held out.

    A class with two or more samples gives at least one to each side, so a small image folder still
    gets a validation and a test sample per class."""
    if not 0.0 <= held_fraction < 1.0:
        raise ValueError(f"held_fraction must be in [0, 1), got {held_fraction}")

    def held_count(n: int) -> int:
        k = round(held_fraction * n)
        if held_fraction > 0 and n >= 2:
            k = min(max(k, 1), n - 1)
        return k

    held = _stratified_pick(y, held_count, seed)
    mask = torch.ones(len(y), dtype=torch.bool, device=y.device)
    mask[held] = False
    kept = torch.nonzero(mask, as_tuple=True)[0]
    return kept, held
