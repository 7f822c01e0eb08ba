"""Similarity-preserving distillation (Tung & Mori, ICCV 2019): samples that activate the teacher
similarly should activate the student similarly.

  G = F Fᵀ (n × n, F the features flattened per sample),  G̃ = G with each row L2-normalised
  loss = ‖G̃_s − G̃_t‖²_F / n²

Feature shapes may differ between teacher and student (only the n × n similarities are compared).
The authors use the last stage's output with weight γ = 3000 (CIFAR).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdcore.errors import KDError
from kdcore.methods.api import (
    Batch,
    BuildContext,
    MethodLoss,
    MethodParams,
    Needs,
    layers_field,
    pair_taps,
    stage_pairs,
)
from kdcore.methods.registry import register_method


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


class SPParams(MethodParams):
    method: Literal["sp"] = "sp"
    weight: float = Field(3000.0, ge=0, title="Weight γ", description="weight of the SP term (the authors' 3000 on "
                                                                       "CIFAR)")
    teacher_layers: list[str] = layers_field("teacher", "teacher layers, in order; empty = the last stage")
    student_layers: list[str] = layers_field("student", "student layers, in order; empty = the last stage")


@register_method("sp", family="relation", params=SPParams, title="Similarity-preserving KD", short="SP",
                 paper="Tung & Mori, Similarity-Preserving Knowledge Distillation, ICCV 2019",
                 description="Match the batch's row-normalised similarity matrices G = F·Fᵀ of a layer's outputs.",
                 needs=Needs(logits=False, layers=True))
class SP(MethodLoss):
    def __init__(self, p: SPParams, ctx: BuildContext) -> None:
        super().__init__()
        self.p = p
        self.pairs = stage_pairs(ctx, p)
        if not (p.teacher_layers or p.student_layers):
            self.pairs = self.pairs[-1:]  # the authors compare the last stage
        self.taps = pair_taps(self.pairs)
        self.loss = SPLoss()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        total = sum(self.loss(batch.student(s), batch.teacher(t)) for t, s in self.pairs)
        return {"similarity": self.p.weight * total}
