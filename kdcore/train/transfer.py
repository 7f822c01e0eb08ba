"""The transfer set: which training inputs the student sees and which of them keep their labels."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kdcore.spec import TransferSpec

UNLABELLED = -1  # label value for samples whose label is withheld; the hard term skips them


@dataclass
class TransferSet:
    x: Tensor
    y: Tensor           # UNLABELLED where the label is withheld
    noise_std: float    # > 0: fresh Gaussian noise on every batch (the survey's noisy-data motive)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def labelled(self) -> int:
        return int((self.y != UNLABELLED).sum())


def build_transfer_set(x: Tensor, y: Tensor, spec: TransferSpec, *, has_teacher: bool, seed: int) -> TransferSet:
    """Apply the spec to the labelled train split. Without a teacher, unlabelled samples carry no
    signal at all, so a scratch run trains on the labelled part only (its fair baseline)."""
    from kdcore.data import stratified_subset

    if spec.kind == "omit_classes":
        keep = ~torch.isin(y, torch.tensor(spec.omit_classes, device=y.device))
        return TransferSet(x[keep], y[keep], 0.0)
    if spec.kind == "noisy":
        return TransferSet(x, y, spec.noise_std)
    if spec.kind == "partial_labels":
        labelled_idx = stratified_subset(y, fraction=spec.label_fraction, seed=seed).to(y.device)
        if not has_teacher:
            return TransferSet(x[labelled_idx], y[labelled_idx], 0.0)
        y = torch.full_like(y, UNLABELLED).index_copy_(0, labelled_idx, y[labelled_idx])
        return TransferSet(x, y, 0.0)
    return TransferSet(x, y, 0.0)
