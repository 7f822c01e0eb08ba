"""FSP, the "flow of solution procedure" (Yim et al., CVPR 2017): transfer how features change from
one layer to the next rather than the features themselves.

For two layers F1 (c1 × h × w) and F2 (c2 × h × w) of one network the FSP matrix is

  G[i, j] = (1 / (h·w)) · Σ_x F1_i(x) · F2_j(x)          (c1 × c2)

computed for each pair of consecutive chosen layers (when their spatial sizes differ the larger is
average-pooled to the smaller, as in RepDistiller). The loss is, per pair, the mean squared difference
of the student's and the teacher's matrices, summed over the pairs. The student and the teacher must
have the same channel counts at each chosen layer. The paper trains with this loss alone first and
then on the task; RepDistiller does the same with 30 initial epochs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdcore.errors import IncompatibleLayersError, KDError
from kdcore.methods.api import (
    Batch,
    BuildContext,
    MethodLoss,
    MethodParams,
    Needs,
    Tap,
    layers_field,
    paired_stage_taps,
)
from kdcore.methods.registry import register_method


def fsp_matrix(f1: Tensor, f2: Tensor) -> Tensor:
    """(n, c1, c2) FSP matrices of two maps; the larger spatial size is pooled to the smaller."""
    size = (min(f1.shape[2], f2.shape[2]), min(f1.shape[3], f2.shape[3]))
    if tuple(f1.shape[2:]) != size:
        f1 = F.adaptive_avg_pool2d(f1, size)
    if tuple(f2.shape[2:]) != size:
        f2 = F.adaptive_avg_pool2d(f2, size)
    return torch.bmm(f1.flatten(2), f2.flatten(2).transpose(1, 2)) / (size[0] * size[1])


def check_fsp_channels(student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
    """FSP compares matrices entry by entry, so each chosen layer needs the same width in both networks."""
    if len(student_channels) != len(teacher_channels) or len(student_channels) < 2:
        raise IncompatibleLayersError(
            f"FSP needs the same number (at least 2) of layers on both sides, got {len(teacher_channels)} "
            f"teacher and {len(student_channels)} student layers.")
    for k, (c_s, c_t) in enumerate(zip(student_channels, teacher_channels)):
        if c_s != c_t:
            raise IncompatibleLayersError(
                f"FSP needs equal channel counts at each chosen layer, but layer {k} has {c_t} teacher and "
                f"{c_s} student channels; pick layers of equal width.")


class FSPLoss(nn.Module):
    """Σ over consecutive layer pairs of mean((G_s − G_t)²)."""

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        for f in list(student_feats) + list(teacher_feats):
            if f.dim() != 4:
                raise KDError(f"FSP needs feature maps (batch, channels, height, width), got shape {tuple(f.shape)}.")
        check_fsp_channels([f.shape[1] for f in student_feats], [f.shape[1] for f in teacher_feats])
        teacher_feats = [f.detach() for f in teacher_feats]
        total = student_feats[0].new_zeros(())
        for k in range(len(student_feats) - 1):
            with torch.no_grad():
                g_t = fsp_matrix(teacher_feats[k], teacher_feats[k + 1])
            g_s = fsp_matrix(student_feats[k], student_feats[k + 1])
            total = total + (g_s - g_t).pow(2).mean()
        return total


class FSPParams(MethodParams):
    method: Literal["fsp"] = "fsp"
    weight: float = Field(1.0, ge=0, title="Weight", description="weight of the summed FSP terms (RepDistiller sums "
                                                                  "them unweighted in its FSP stage)")
    teacher_layers: list[str] = layers_field("teacher", "teacher layers, in order (at least 2); empty = every stage")
    student_layers: list[str] = layers_field("student", "student layers of the same widths; empty = every stage")


@register_method("fsp", family="feature", params=FSPParams, title="FSP (flow of solution procedure)", short="FSP",
                 paper="Yim, Joo, Bae & Kim, A Gift from Knowledge Distillation: Fast Optimization, Network "
                       "Minimization and Transfer Learning, CVPR 2017",
                 description="Match the Gram matrices between consecutive layers (how features flow), for layers "
                             "of equal width in teacher and student.",
                 needs=Needs(logits=False, layers=True, stages=True))
class FSP(MethodLoss):
    def __init__(self, p: FSPParams, ctx: BuildContext) -> None:
        super().__init__()
        self.p = p
        self.pairs, self.taps = paired_stage_taps(ctx, p)
        shapes = [(ctx.shape(Tap("teacher", t)), ctx.shape(Tap("student", s))) for t, s in self.pairs]
        if any(len(ts) != 3 or len(ss) != 3 for ts, ss in shapes):
            raise IncompatibleLayersError("FSP needs feature maps (C×H×W) on both sides; pick convolutional stages.")
        check_fsp_channels([ss[0] for _, ss in shapes], [ts[0] for ts, _ in shapes])
        self.loss = FSPLoss()

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        s = [batch.student(path) for _, path in self.pairs]
        t = [batch.teacher(path) for path, _ in self.pairs]
        return {"flow": self.p.weight * self.loss(s, t)}
