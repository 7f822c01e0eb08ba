"""Relational knowledge distillation (Park et al., CVPR 2019): match the *relations* between samples.

On embeddings e (the penultimate features, flattened), two terms:
  distance  ψ_D(i, j) = ‖e_i − e_j‖ / μ, μ the mean distance over the pairs i ≠ j in the batch;
            Huber (smooth-L1, δ=1) between the student's and the teacher's ψ_D over all n² pairs.
  angle     ψ_A(i, j, k) = ⟨(e_i − e_j)/‖e_i − e_j‖, (e_k − e_j)/‖e_k − e_j‖⟩, the cosine of the angle at e_j;
            Huber between student and teacher over all n³ triplets.
loss = distance_weight · L_D + angle_weight · L_A, with the authors' weights 25 and 50.
Embeddings may differ in width between teacher and student: only the n×n relations are compared.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
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


def normalised_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """(n, n) Euclidean distances divided by their mean over i ≠ j; the diagonal is 0."""
    sq = e.pow(2).sum(1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2.0 * e @ e.t()).clamp_min(eps)
    off_diagonal = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
    d = d2.sqrt() * off_diagonal  # sqrt(eps) on the diagonal would leak into the mean
    return d / d[off_diagonal].mean().clamp_min(eps)


def triplet_angles(e: Tensor) -> Tensor:
    """(n, n, n) cosines: entry [j, i, k] is the cosine of the angle between e_i − e_j and e_k − e_j."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [j, i] = e_i − e_j, unit length
    return torch.bmm(diff, diff.transpose(1, 2))


class RKDLoss(nn.Module):
    """distance_weight · smooth_l1(ψ_D(s), ψ_D(t)) + angle_weight · smooth_l1(ψ_A(s), ψ_A(t))."""

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0, eps: float = 1e-12) -> None:
        super().__init__()
        self.distance_weight, self.angle_weight, self.eps = float(distance_weight), float(angle_weight), eps

    def terms(self, e_s: Tensor, e_t: Tensor) -> dict[str, Tensor]:
        """The two weighted terms, so each can get its own curve."""
        if e_s.shape[0] != e_t.shape[0]:
            raise KDError(f"RKD needs the same batch for teacher ({e_t.shape[0]}) and student ({e_s.shape[0]}).")
        if e_s.shape[0] < 2:
            raise KDError("RKD compares samples with each other, so it needs a batch of at least 2.")
        s = e_s.flatten(1)
        t = e_t.detach().flatten(1)
        with torch.no_grad():
            d_t, a_t = normalised_distances(t, self.eps), triplet_angles(t)
        d_s, a_s = normalised_distances(s, self.eps), triplet_angles(s)
        return {
            "distance": self.distance_weight * F.smooth_l1_loss(d_s, d_t),
            "angle": self.angle_weight * F.smooth_l1_loss(a_s, a_t),
        }

    def forward(self, e_s: Tensor, e_t: Tensor) -> Tensor:
        terms = self.terms(e_s, e_t)
        return terms["distance"] + terms["angle"]

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"


class RKDParams(MethodParams):
    method: Literal["rkd"] = "rkd"
    distance_weight: float = Field(25.0, ge=0, title="Distance weight",
                                   description="weight of the distance term (the authors' 25)")
    angle_weight: float = Field(50.0, ge=0, title="Angle weight", description="weight of the angle term (the authors' 50)")
    teacher_layer: str = layer_field("teacher", EMBEDDING, "the teacher layer whose outputs are related (flattened)")
    student_layer: str = layer_field("student", EMBEDDING, "the student layer whose outputs are related (flattened)")


@register_method("rkd", family="relation", params=RKDParams, title="Relational KD", short="RKD",
                 paper="Park, Kim, Lu & Cho, Relational Knowledge Distillation, CVPR 2019",
                 description="Match the normalised distances between pairs and the angles within triplets of "
                             "the samples' embeddings in a batch (Huber loss).",
                 needs=Needs(logits=False, embedding=True))
class RKD(MethodLoss):
    def __init__(self, p: RKDParams, ctx: BuildContext) -> None:
        super().__init__()
        self.p = p
        self.taps = (Tap("teacher", p.teacher_layer), Tap("student", p.student_layer))
        self.loss = RKDLoss(p.distance_weight, p.angle_weight)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.loss.terms(batch.student(self.p.student_layer), batch.teacher(self.p.teacher_layer))
