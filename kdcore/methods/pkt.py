"""Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018): match the conditional probability
of picking sample j as a neighbour of sample i, estimated with a cosine-similarity kernel.

  c_ij = ⟨e_i/‖e_i‖, e_j/‖e_j‖⟩,  k_ij = (c_ij + 1) / 2 ∈ [0, 1],  p_ij = k_ij / Σ_j k_ij
  loss = mean over (i, j) of p^t_ij · log((p^t_ij + ε) / (p^s_ij + ε))

As the authors' code does, the diagonal (j = i) is kept and the KL terms are averaged over all n²
entries, with ε = 1e-7 in the norms and the log. Embedding widths may differ between teacher and student.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from kdcore.errors import KDError
from kdcore.methods.api import (
    EMBEDDING,
    Batch,
    BuildContext,
    MethodLoss,
    MethodParams,
    Needs,
    Tap,
    layer_field,
)
from kdcore.methods.registry import register_method


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


class PKTParams(MethodParams):
    method: Literal["pkt"] = "pkt"
    weight: float = Field(30000.0, ge=0, title="Weight", description="weight of the PKT term (RepDistiller's and "
                                                                       "mdistiller's 30000 on CIFAR-100)")
    teacher_layer: str = layer_field("teacher", EMBEDDING, "the teacher layer whose outputs are compared (flattened)")
    student_layer: str = layer_field("student", EMBEDDING, "the student layer whose outputs are compared (flattened)")


@register_method("pkt", family="relation", params=PKTParams, title="Probabilistic KT", short="PKT",
                 paper="Passalis & Tefas, Learning Deep Representations with Probabilistic Knowledge Transfer, "
                       "ECCV 2018",
                 description="Match each sample's cosine-kernel distribution over its batch neighbours (KL).",
                 needs=Needs(logits=False, embedding=True))
class PKT(MethodLoss):
    def __init__(self, p: PKTParams, ctx: BuildContext) -> None:
        super().__init__()
        self.p = p
        self.taps = (Tap("teacher", p.teacher_layer), Tap("student", p.student_layer))
        self.loss = PKTLoss()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return {"kl": self.p.weight * self.loss(batch.student(self.p.student_layer),
                                                batch.teacher(self.p.teacher_layer))}
