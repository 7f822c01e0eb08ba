"""A teacher made of several: their class probabilities combined at the run's temperature ρ.

The combination is returned as logits z with softmax(z/ρ) equal to the combined distribution, so every
logit method, the teacher-logit cache and the soft-label views read an ensemble as they read one teacher:
- mean:      p = Σ wᵢ softmax(zᵢ/ρ),                   z = ρ·log p
- geometric: p ∝ exp(Σ wᵢ log softmax(zᵢ/ρ)),          z = ρ·log_softmax(Σ wᵢ log softmax(zᵢ/ρ))
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def combine_logits(logits: Sequence[Tensor], weights: Sequence[float], kind: str, rho: float) -> Tensor:
    """The members' logits (each N×C) combined as described above; weights are normalised here."""
    w = torch.tensor([float(v) for v in weights], dtype=torch.float32, device=logits[0].device)
    w = w / w.sum()
    log_p = torch.stack([torch.log_softmax(z.float() / rho, dim=1) for z in logits])  # M×N×C
    w = w.view(-1, 1, 1)
    if kind == "mean":
        # log Σ wᵢ pᵢ computed in log space: a member certain of another class must not give log(0)
        mixed = torch.logsumexp(log_p + torch.log(w.clamp_min(1e-30)), dim=0)
    elif kind == "geometric":
        mixed = torch.log_softmax((w * log_p).sum(0), dim=1)
    else:
        raise ValueError(f"unknown combination {kind!r}")
    return rho * mixed


class EnsembleTeacher(nn.Module):
    """Frozen members (named teacher0, teacher1, ...) whose forward returns the combined logits."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float], kind: str, rho: float):
        super().__init__()
        # registered by name (not in a container) so a layer path reads `teacher1.layer3`
        self.names = [f"teacher{i}" for i in range(len(members))]
        for name, member in zip(self.names, members):
            self.add_module(name, member)
        self.weights = [float(v) for v in weights]
        self.kind = kind
        self.rho = float(rho)

    @property
    def members(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.names]

    def combine(self, member_logits: Sequence[Tensor]) -> Tensor:
        """The ensemble's logits from its members' (in member order), as forward combines them."""
        return combine_logits(member_logits, self.weights, self.kind, self.rho)

    def forward(self, x: Tensor) -> Tensor:
        return self.combine([m(x) for m in self.members])
