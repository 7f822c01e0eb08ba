"""Similarity-preserving distillation (Tung & Mori, ICCV 2019): samples that activate the teacher
similarly should activate the student similarly.

  G = F Fᵀ (n × n, F the features flattened per sample),  G̃ = G with each row L2-normalised
  loss = ‖G̃_s − G̃_t‖²_F / n²

Feature shapes may differ between teacher and student (only the n × n similarities are compared).
The authors use the last stage's output with weight γ = 3000 (CIFAR).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.errors import KDError


def similarity_matrix(f: Tensor) -> Tensor:
    """Row-normalised Gram matrix of the flattened features, (n, n)."""
    f = f.flatten(1)
    return F.normalize(f @ f.t(), p=2, dim=1)


class SPLoss(nn.Module):
    """‖G̃_s − G̃_t‖²_F / n² for one (student, teacher) layer pair."""

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        n = f_s.shape[0]
        if f_t.shape[0] != n:
            raise KDError(f"SP needs the same batch for teacher ({f_t.shape[0]}) and student ({n}).")
        with torch.no_grad():
            g_t = similarity_matrix(f_t.detach())
        return (similarity_matrix(f_s) - g_t).pow(2).sum() / (n * n)
