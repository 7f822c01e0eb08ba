"""Review knowledge distillation (Chen et al., CVPR 2021): each student stage learns from the teacher's
stage at the same depth *and* from the deeper student stages, fused from deep to shallow.

Attention-based fusion (ABF), one per student stage, from the deepest stage to the shallowest:
  x = BN(conv1×1(f_s))                                       (to mid channels)
  if a deeper stage was fused: r = the deeper residual, upsampled (nearest) to x's size;
      [a, b] = sigmoid(conv1×1([x, r]))  (two attention maps);  x = a·x + b·r
  x is resized (nearest) to the teacher stage's size and passed on as the next residual;
  the stage's output is BN(conv3×3(x)) with the teacher stage's channel count.
Hierarchical context loss (HCL) per stage, for the output o and the teacher feature t:
  mse(o, t) + Σ_k 2^−k · mse(pool_l(o), pool_l(t)) over the pyramid levels l = 4, 2, 1 smaller than
  the map (k counts the levels used), divided by the sum of the weights; summed over the stages.
Flat vectors (the pooled penultimate feature, which the authors add as the deepest stage) are 1×1 maps.
The authors' settings: mid channels = min(512, the deepest student stage's channels), loss weight 1
(5 for resnet32x4 → resnet8x4 in mdistiller's CIFAR config), linear warm-up over 20 epochs.
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
    EMBEDDING,
    Batch,
    BuildContext,
    MethodLoss,
    MethodParams,
    Needs,
    Tap,
    layers_field,
    pair_taps,
    stage_pairs,
)
from kdcore.methods.registry import register_method

PYRAMID_LEVELS = (4, 2, 1)


def _as_map(f: Tensor) -> Tensor:
    return f.view(f.shape[0], f.shape[1], 1, 1) if f.dim() == 2 else f


def hierarchical_context_loss(outputs: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """HCL summed over stages: full-resolution MSE plus pooled MSEs at 4×4, 2×2, 1×1 with halving weights."""
    total = outputs[0].new_zeros(())
    for o, t in zip(outputs, targets):
        loss, weight, weight_sum = F.mse_loss(o, t), 1.0, 1.0
        for level in PYRAMID_LEVELS:
            if level >= o.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(o, level), F.adaptive_avg_pool2d(t, level))
            weight_sum += weight
        total = total + loss / weight_sum
    return total


def warmup_factor(epoch: int, warmup_epochs: int) -> float:
    """The authors' linear warm-up of the ReviewKD weight: min(epoch / warmup_epochs, 1)."""
    return 1.0 if warmup_epochs <= 0 else min(epoch / warmup_epochs, 1.0)


class ABF(nn.Module):
    """One attention-based fusion block."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.out = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(out_channels))
        self.attention = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None)
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.out[0].weight, a=1)

    def forward(self, f: Tensor, residual: Tensor | None, out_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        x = self.reduce(f)
        if self.attention is not None:
            assert residual is not None
            residual = F.interpolate(residual, size=x.shape[2:], mode="nearest")
            maps = self.attention(torch.cat([x, residual], dim=1))
            x = x * maps[:, :1] + residual * maps[:, 1:]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.out(x), x


class ReviewKDLoss(nn.Module):
    """ABF over the student's stages (given shallow to deep) + HCL against the teacher's stages."""

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int],
                 mid_channels: int | None = None) -> None:
        super().__init__()
        if len(student_channels) != len(teacher_channels) or not student_channels:
            raise IncompatibleLayersError(
                f"ReviewKD pairs stages one to one, but got {len(teacher_channels)} teacher and "
                f"{len(student_channels)} student stages.")
        mid = mid_channels or min(512, int(student_channels[-1]))
        last = len(student_channels) - 1
        self.abfs = nn.ModuleList(
            ABF(int(c_s), mid, int(c_t), fuse=i < last) for i, (c_s, c_t) in enumerate(zip(student_channels, teacher_channels)))

    def fused(self, student_feats: Sequence[Tensor], teacher_sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """The ABF outputs, shallow to deep, each of the matching teacher stage's shape."""
        outputs: list[Tensor] = [None] * len(student_feats)  # type: ignore[list-item]
        residual = None
        for i in reversed(range(len(student_feats))):
            outputs[i], residual = self.abfs[i](_as_map(student_feats[i]), residual, teacher_sizes[i])
        return outputs

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        if len(student_feats) != len(self.abfs) or len(teacher_feats) != len(self.abfs):
            raise KDError(f"ReviewKD was built for {len(self.abfs)} stages, got {len(teacher_feats)} teacher "
                          f"and {len(student_feats)} student features.")
        targets = [_as_map(t.detach()) for t in teacher_feats]
        outputs = self.fused(student_feats, [tuple(t.shape[2:]) for t in targets])
        return hierarchical_context_loss(outputs, targets)


class ReviewKDParams(MethodParams):
    method: Literal["reviewkd"] = "reviewkd"
    weight: float = Field(1.0, ge=0, title="Weight", description="weight of the HCL term (the authors' 1; mdistiller "
                                                                  "uses 5 for resnet32x4 → resnet8x4)")
    warmup_epochs: int = Field(20, ge=0, title="Warm-up epochs", description="epochs over which the weight ramps up "
                                                                             "linearly (the authors' 20; 0 = none)")
    include_embedding: bool = Field(True, title="Add the embedding as the deepest stage",
                                    description="review the penultimate embedding too (as a 1×1 map), as the authors do")
    teacher_layers: list[str] = layers_field("teacher", "teacher stages, shallow to deep; empty = every stage, "
                                                        "read before its last ReLU where the model marks it")
    student_layers: list[str] = layers_field("student", "student stages, shallow to deep; empty = every stage")


def teacher_pre_relu(teacher: nn.Module, stage: str) -> str:
    """The stage's last pre-ReLU feature where the model marks one (the authors review against the
    teacher's pre-activation stages), else the stage's output."""
    from kdcore.models.layers import pre_relu_points

    inside = [p.path for p in pre_relu_points(teacher) if p.path == stage or p.path.startswith(stage + ".")]
    return inside[-1] if inside else stage


@register_method("reviewkd", family="feature", params=ReviewKDParams, title="Review KD", short="ReviewKD",
                 paper="Chen, Liu, Zhao & Jia, Distilling Knowledge via Knowledge Review, CVPR 2021",
                 description="Student stages fused from deep to shallow by attention (ABF) are matched with the "
                             "teacher's stages by a hierarchical context loss (L2 at pyramid levels 4, 2, 1).",
                 needs=Needs(logits=False, layers=True, embedding=True, stages=True, epoch=True))
class ReviewKD(MethodLoss):
    def __init__(self, p: ReviewKDParams, ctx: BuildContext) -> None:
        super().__init__()
        self.p = p
        t, s = (list(paths) for paths in zip(*stage_pairs(ctx, p)))
        if not p.teacher_layers:
            t = [teacher_pre_relu(ctx.model("teacher"), path) for path in t]
        if p.include_embedding:
            t, s = t + [EMBEDDING], s + [EMBEDDING]
        self.pairs = list(zip(t, s))
        self.taps = pair_taps(self.pairs)
        channels = {side: [ctx.shape(Tap(side, path))[0] for path in paths] for side, paths in (("teacher", t), ("student", s))}
        self.loss = ReviewKDLoss(channels["student"], channels["teacher"])

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        s = [batch.student(path) for _, path in self.pairs]
        t = [batch.teacher(path) for path, _ in self.pairs]
        return {"hcl": self.p.weight * warmup_factor(batch.epoch, self.p.warmup_epochs) * self.loss(s, t)}
