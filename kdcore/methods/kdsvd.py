"""KD-SVD (Lee, Kim & Song, ECCV 2018): compress each chosen feature map with a singular value
decomposition and transfer how the compressed features of consecutive layers relate.

For a map reshaped to X (h·w × c) = U Σ Vᵀ, the right singular vectors V (c × k) carry the feature
information. Per sample:
  teacher: the top k vectors V_t, signs fixed so each vector's largest entry is positive (SVD's sign is
           arbitrary, and the relation below depends on it), singular values σ_t normalised over k;
  student: the top k + 3 vectors, each teacher vector matched by the student vector of largest
           |cosine|, times that cosine's sign;
  both are scaled by σ_t.
Between consecutive chosen layers a and b the relation is an RBF over every pair of channels:
  R[i, j, q] = exp(−(V_b[i, q] − V_a[j, q])² / 8)
and the loss is Σ (R_s − R_t)² / batch over the layer pairs (non-finite entries dropped, as the
authors do). The teacher and student need the same channel count at each chosen layer. k = 1 is the
authors' default (RepDistiller, mdistiller).

mdistiller and RepDistiller port the TensorFlow original to NCHW tensors by reshaping to (c·h × w),
which decomposes over the width instead of the channels; this module follows the paper's (h·w × c).
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


def right_singular(f: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-k right singular vectors (n, c, k) and L2-normalised singular values (n, k) of each sample."""
    x = f.flatten(2).transpose(1, 2)  # (n, h·w, c)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    k = min(k, s.shape[1])
    return vh[:, :k].transpose(1, 2), F.normalize(s[:, :k], dim=1)


def fix_signs(v: Tensor) -> Tensor:
    """Flip each vector so its entry of largest magnitude is positive."""
    pick = v.abs().argmax(dim=1, keepdim=True)
    return v * torch.sign(torch.gather(v, 1, pick)).clamp_min(0).mul(2).sub(1)


def align(v_s: Tensor, v_t: Tensor) -> Tensor:
    """For each teacher vector, the student vector of largest |cosine|, signed to agree: (n, c, k)."""
    cosine = v_s.transpose(1, 2) @ v_t  # (n, k_s, k)
    best = cosine.abs().argmax(dim=1, keepdim=True)  # (n, 1, k)
    signs = torch.sign(torch.gather(cosine, 1, best))
    chosen = torch.gather(v_s, 2, best.expand(-1, v_s.shape[1], -1))
    return chosen * signs


def rbf_relation(v_b: Tensor, v_a: Tensor) -> Tensor:
    """(n, c_b, c_a, k) RBF between every channel of layer b and every channel of layer a."""
    return torch.exp(-(v_b.unsqueeze(2) - v_a.unsqueeze(1)).pow(2) / 8.0)


class KDSVDLoss(nn.Module):
    """Σ over consecutive chosen layers of ‖R_s − R_t‖² / batch."""

    def __init__(self, k: int = 1) -> None:
        super().__init__()
        if k < 1:
            raise KDError(f"KD-SVD keeps at least one singular vector, got k={k}.")
        self.k = int(k)

    def compressed(self, f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            v_t, s_t = right_singular(f_t.detach(), self.k)
            v_t = fix_signs(v_t)
        v_s, _ = right_singular(f_s, self.k + 3)
        v_s = align(v_s, v_t)
        scale = s_t.unsqueeze(1)
        return v_s * scale, v_t * scale

    def forward(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> Tensor:
        if len(student_feats) != len(teacher_feats) or len(student_feats) < 2:
            raise IncompatibleLayersError("KD-SVD relates consecutive layers, so it needs the same number "
                                          "(at least 2) of teacher and student layers.")
        for i, (f_s, f_t) in enumerate(zip(student_feats, teacher_feats)):
            if f_s.dim() != 4 or f_t.dim() != 4:
                raise KDError("KD-SVD needs feature maps (batch, channels, height, width).")
            if f_s.shape[1] != f_t.shape[1]:
                raise IncompatibleLayersError(
                    f"KD-SVD compares channel by channel, but layer {i} has {f_t.shape[1]} teacher and "
                    f"{f_s.shape[1]} student channels; pick layers of equal width.")
        total = student_feats[0].new_zeros(())
        previous = None
        for f_s, f_t in zip(student_feats, teacher_feats):
            v_s, v_t = self.compressed(f_s, f_t)
            if previous is not None:
                diff = (rbf_relation(v_s, previous[0]) - rbf_relation(v_t, previous[1])).pow(2)
                total = total + torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff)).sum()
            previous = (v_s, v_t)
        return total / student_feats[0].shape[0]


class KDSVDParams(MethodParams):
    method: Literal["kdsvd"] = "kdsvd"
    weight: float = Field(1.0, ge=0, title="Weight", description="weight of the KD-SVD term (the authors' 1)")
    k: int = Field(1, ge=1, le=16, title="Singular vectors k", description="singular vectors kept per layer (the authors' 1)")
    teacher_layers: list[str] = layers_field("teacher", "teacher layers, in order (at least 2); empty = every stage")
    student_layers: list[str] = layers_field("student", "student layers of the same widths; empty = every stage")


@register_method("kdsvd", family="feature", params=KDSVDParams, title="KD-SVD", short="KD-SVD",
                 paper="Lee, Kim & Song, Self-supervised Knowledge Distillation Using Singular Value Decomposition, "
                       "ECCV 2018",
                 description="Compress each stage to its top right singular vectors and match RBF relations between "
                             "consecutive stages (layers of equal width in teacher and student).",
                 needs=Needs(logits=False, layers=True, stages=True))
class KDSVD(MethodLoss):
    def __init__(self, p: KDSVDParams, ctx: BuildContext) -> None:
        super().__init__()
        self.p = p
        self.pairs, self.taps = paired_stage_taps(ctx, p)
        for t, s in self.pairs:
            ts, ss = ctx.shape(Tap("teacher", t)), ctx.shape(Tap("student", s))
            if len(ts) != 3 or len(ss) != 3:
                raise IncompatibleLayersError("KD-SVD needs feature maps (C×H×W) on both sides; pick convolutional stages.")
            if ts[0] != ss[0]:
                raise IncompatibleLayersError(
                    f"KD-SVD compares channel by channel, but {t} has {ts[0]} teacher and {s} {ss[0]} student "
                    "channels; pick layers of equal width.")
        if len(self.pairs) < 2:
            raise IncompatibleLayersError("KD-SVD relates consecutive layers, so it needs at least 2 stages.")
        self.loss = KDSVDLoss(p.k)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        s = [batch.student(path) for _, path in self.pairs]
        t = [batch.teacher(path) for path, _ in self.pairs]
        return {"svd": self.p.weight * self.loss(s, t)}
