"""Variational information distillation (Ahn et al., CVPR 2019): maximise a variational lower bound on
the mutual information between a teacher layer and a student layer.

The teacher feature t is modelled as Gaussian given the student feature s: mean μ(s) from a small
regressor (1×1 conv → ReLU → 1×1 conv → ReLU → 1×1 conv, as in the authors' code) and a per-channel
variance σ²_c = softplus(α_c) + ε that is learned too. The loss is the negative log-likelihood up to
a constant:

  loss = mean over (n, c, h, w) of ½ · ((t − μ(s))² / σ²_c + log σ²_c)

α starts where σ² = init_pred_var (5.0) and ε = 1e-5, the authors' settings. When the spatial sizes
differ the larger map is average-pooled to the smaller; flat vectors are treated as 1×1 maps.
"""
from __future__ import annotations

import math
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
    Tap,
    layers_field,
    paired_stage_taps,
)
from kdcore.methods.registry import register_method


def _as_map(f: Tensor) -> Tensor:
    return f.view(f.shape[0], f.shape[1], 1, 1) if f.dim() == 2 else f


class VIDLoss(nn.Module):
    """Gaussian NLL of the teacher feature under a student-predicted mean and a learned channel variance."""

    def __init__(self, student_channels: int, teacher_channels: int, mid_channels: int | None = None,
                 init_pred_var: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__()
        if init_pred_var <= eps:
            raise KDError(f"VID's initial variance ({init_pred_var}) must exceed eps ({eps}).")
        mid = mid_channels or teacher_channels
        self.regressor = nn.Sequential(
            nn.Conv2d(student_channels, mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid, mid, 1, bias=False), nn.ReLU(),
            nn.Conv2d(mid, teacher_channels, 1, bias=False),
        )
        # softplus(α) + eps = init_pred_var at the start
        alpha = math.log(math.expm1(init_pred_var - eps))
        self.log_scale = nn.Parameter(torch.full((teacher_channels,), alpha))
        self.eps = float(eps)

    def variance(self) -> Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = _as_map(f_s), _as_map(f_t.detach())
        if f_s.shape[0] != f_t.shape[0]:
            raise KDError(f"VID needs the same batch for teacher ({f_t.shape[0]}) and student ({f_s.shape[0]}).")
        size = (min(f_s.shape[2], f_t.shape[2]), min(f_s.shape[3], f_t.shape[3]))
        if tuple(f_s.shape[2:]) != size:
            f_s = F.adaptive_avg_pool2d(f_s, size)
        if tuple(f_t.shape[2:]) != size:
            f_t = F.adaptive_avg_pool2d(f_t, size)
        mean = self.regressor(f_s)
        var = self.variance().to(mean.dtype).view(1, -1, 1, 1)
        return (0.5 * ((mean - f_t).pow(2) / var + var.log())).mean()


class VIDParams(MethodParams):
    method: Literal["vid"] = "vid"
    weight: float = Field(1.0, ge=0, title="Weight", description="weight of the summed VID terms (the authors' 1)")
    init_pred_var: float = Field(5.0, gt=0, title="Initial variance", description="σ² at the start (the authors' 5.0)")
    eps: float = Field(1e-5, gt=0, lt=1, title="Variance floor ε", description="added to softplus(α) (the authors' 1e-5)")
    teacher_layers: list[str] = layers_field("teacher", "teacher layers, in order; empty = every stage")
    student_layers: list[str] = layers_field("student", "student layers, in order; empty = every stage")


@register_method("vid", family="feature", params=VIDParams, title="Variational information distillation",
                 short="VID", paper="Ahn, Hu, Damianou, Lawrence & Dai, Variational Information Distillation for "
                                    "Knowledge Transfer, CVPR 2019",
                 description="Gaussian likelihood of each teacher stage under a mean regressed from the student's "
                             "stage and a learned per-channel variance.",
                 needs=Needs(logits=False, layers=True, stages=True))
class VID(MethodLoss):
    def __init__(self, p: VIDParams, ctx: BuildContext) -> None:
        super().__init__()
        if p.init_pred_var <= p.eps:
            raise KDError(f"VID's initial variance ({p.init_pred_var}) must exceed eps ({p.eps}).")
        self.p = p
        self.pairs, self.taps = paired_stage_taps(ctx, p)
        self.losses = nn.ModuleList(
            VIDLoss(ctx.shape(Tap("student", sp))[0], ctx.shape(Tap("teacher", tp))[0],
                    init_pred_var=p.init_pred_var, eps=p.eps) for tp, sp in self.pairs)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        total = sum(loss(batch.student(s), batch.teacher(t)) for (t, s), loss in zip(self.pairs, self.losses))
        return {"nll": self.p.weight * total}
