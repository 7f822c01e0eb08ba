"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): match the conditional probability
of picking sample j as a neighbour of sample i, estimated with a cosine-similarity kernel.

  c_ij = ⟨e_i/‖e_i‖, e_j/‖e_j‖⟩,  k_ij = (c_ij + 1) / 2 ∈ [0, 1],  p_ij = k_ij / Σ_j k_ij
  loss = mean over (i, j) of p^t_ij · log((p^t_ij + ε) / (p^s_ij + ε))

As the authors' code does, the diagonal (j = i) is kept and the KL terms are averaged over all n²
entries, with ε = 1e-7 in the norms and the log. Embedding widths may differ between teacher and student.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from kdcore.errors import KDError


def neighbour_probabilities(e: Tensor, eps: float = 1e-7) -> Tensor:
    """(n, n) row-stochastic matrix from the cosine kernel mapped to [0, 1]."""
    e = e / (e.norm(dim=1, keepdim=True) + eps)
    kernel = (e @ e.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


class PKTLoss(nn.Module):
    """KL between the teacher's and the student's neighbour distributions, averaged over the n² entries."""

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, e_s: Tensor, e_t: Tensor) -> Tensor:
        if e_s.shape[0] != e_t.shape[0]:
            raise KDError(f"PKT needs the same batch for teacher ({e_t.shape[0]}) and student ({e_s.shape[0]}).")
        p_s = neighbour_probabilities(e_s.flatten(1), self.eps)
        with torch.no_grad():
            p_t = neighbour_probabilities(e_t.detach().flatten(1), self.eps)
        return (p_t * torch.log((p_t + self.eps) / (p_s + self.eps))).mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
