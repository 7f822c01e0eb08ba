"""KD with logit standardisation (Sun et al., CVPR 2024): soften Z-scores instead of raw logits, so the
student matches the teacher's logit *relations* rather than their range.

  Z(z) = (z − mean(z)) / (std(z) + ε), per sample over the classes (std with Bessel's correction and
         ε = 1e-7, as the authors' code computes it)
  loss = T² · KL(softmax(Z(z_t)/T) ‖ softmax(Z(z_s)/T)), summed over classes, mean over the batch

T is the base temperature: 2 in the authors' CIFAR-100 runs, where the KD weight is 9 and the
cross-entropy weight 1 (their configs, run tag "2,9").
"""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from kdcore.errors import KDError
from kdcore.losses.logits import LogitLoss, hard_loss
from kdcore.methods.api import MethodParams, Needs
from kdcore.methods.registry import register_method


def standardise(z: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score of each row of logits."""
    return (z - z.mean(dim=-1, keepdim=True)) / (z.std(dim=-1, keepdim=True) + eps)


class LogitStandardKDLoss(nn.Module):
    """T²·KL between the softened Z-scores of teacher and student logits."""

    def __init__(self, temperature: float = 2.0, eps: float = 1e-7) -> None:
        super().__init__()
        if not temperature > 0:
            raise KDError(f"The base temperature must be positive, got {temperature}.")
        self.temperature, self.eps = float(temperature), float(eps)

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        if z_s.shape != z_t.shape or z_s.dim() != 2:
            raise KDError(f"Logit standardisation needs teacher and student logits of one shape (batch, classes), "
                          f"got {tuple(z_t.shape)} and {tuple(z_s.shape)}.")
        if z_s.shape[1] < 2:
            raise KDError("Logit standardisation needs at least 2 classes (a standard deviation over one is undefined).")
        t = self.temperature
        log_p_s = F.log_softmax(standardise(z_s, self.eps) / t, dim=1)
        log_p_t = F.log_softmax(standardise(z_t.detach(), self.eps) / t, dim=1)
        return t * t * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


class LogitStdParams(MethodParams):
    method: Literal["logit_std"] = "logit_std"
    temperature: float = Field(2.0, gt=0, le=100, title="Base temperature T",
                               description="temperature applied to the Z-scores (the authors' 2 on CIFAR-100)")
    kd_weight: float = Field(9.0, ge=0, title="KD weight", description="weight of the T²-scaled KL term (the authors' 9)")
    ce_weight: float = Field(1.0, ge=0, title="Cross-entropy weight", description="weight of the cross-entropy on the labels")

    def label(self) -> str:
        return f"KD + logit std T={self.temperature:g}"


class LogitStandardKD(LogitLoss):
    """ce_weight·CE + kd_weight·T²·KL on the Z-scored logits."""

    def __init__(self, p: LogitStdParams) -> None:
        super().__init__()
        self.ce_weight, self.kd_weight = p.ce_weight, p.kd_weight
        self.soft = LogitStandardKDLoss(p.temperature)

    def terms(self, z_s, z_t, y, epoch):
        return {"hard": self.ce_weight * hard_loss(z_s, y), "soft": self.kd_weight * self.soft(z_s, z_t)}


@register_method("logit_std", family="logit", params=LogitStdParams, title="KD with logit standardisation",
                 short="KD + logit std",
                 paper="Sun, Ren, Li, Wang & Cao, Logit Standardization in Knowledge Distillation, CVPR 2024",
                 description="Hinton KD on per-sample Z-scores of the logits, so the student matches the teacher's "
                             "logit relations rather than their range.",
                 needs=Needs(labels=True))
def build(p: LogitStdParams, ctx=None) -> LogitStandardKD:
    return LogitStandardKD(p)
