"""Decoupled KD (Zhao et al., 2022): target-class and non-target-class knowledge weighted apart."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from kdcore.errors import KDError
from kdcore.losses.logits import UNLABELLED, LogitLoss, _check_rho, check_weight, hard_loss, kl_soft
from kdcore.methods.api import MethodParams, Needs
from kdcore.methods.registry import register_method


class DKDParams(MethodParams):
    method: Literal["dkd"] = "dkd"
    alpha: float = Field(1.0, title="α (TCKD weight)", ge=0, description="α, weight of the target-class term TCKD")
    beta: float = Field(8.0, title="β (NCKD weight)", ge=0, description="β, weight of the non-target-class term NCKD")
    rho: float = Field(4.0, title="Temperature ρ", gt=0, le=100, description="temperature ρ")
    ce_weight: float = Field(1.0, title="Cross-entropy weight", ge=0, description="weight of the cross-entropy on the labels")
    warmup_epochs: int = Field(20, title="Warm-up epochs", ge=0, description="epochs over which the distillation term ramps up "
                                                     "linearly (0 = no warm-up)")


def _non_target_logits(z: Tensor, target: Tensor) -> Tensor:
    """The (N, C-1) logits of every class except the target, in class order.

    Built with gather rather than a -inf/-1000 mask: exact for any logit scale, no host sync."""
    n, c = z.shape
    columns = torch.arange(c - 1, device=z.device).expand(n, c - 1)
    columns = columns + (columns >= target.unsqueeze(1)).long()  # skip the target column
    return z.gather(1, columns)


def _binary_log_probs(z_scaled: Tensor, target: Tensor) -> Tensor:
    """log [p_target, 1 - p_target] of softmax(z_scaled), computed in log space: (N, 2)."""
    log_all = torch.logsumexp(z_scaled, dim=1)
    log_target = z_scaled.gather(1, target.unsqueeze(1)).squeeze(1) - log_all
    log_rest = torch.logsumexp(_non_target_logits(z_scaled, target), dim=1) - log_all
    return torch.stack([log_target, log_rest], dim=1)


class DKD(LogitLoss):
    """Decoupled KD, as mdistiller defines it:

        TCKD = KL([p_t^target, 1 - p_t^target] ‖ [p_s^target, 1 - p_s^target])
        NCKD = KL(softmax over non-target classes of z_t/ρ ‖ same for z_s/ρ)   (target logit removed)
        total = ce_weight·H(y, σ(z_s)) + min(epoch / warmup_epochs, 1)·(α·TCKD + β·NCKD)·ρ²

    Both KLs are summed over their classes and averaged over the batch. For an unlabelled sample
    (y == -1) the teacher's argmax stands in for the target class. ``epoch`` may be fractional
    (a per-step warm-up); epoch 0 gives no distillation term, so pass epochs counted from 1 to
    match mdistiller. warmup_epochs=0 switches the warm-up off.

    Returns {"hard": ce_weight·H, "tckd": w·α·ρ²·TCKD, "nckd": w·β·ρ²·NCKD, "total"}."""

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        rho: float = 4.0,
        ce_weight: float = 1.0,
        warmup_epochs: float = 20,
    ) -> None:
        super().__init__()
        self.alpha = check_weight("alpha", alpha)
        self.beta = check_weight("beta", beta)
        self.rho = _check_rho(rho)
        self.ce_weight = check_weight("ce_weight", ce_weight)
        self.warmup_epochs = check_weight("warmup_epochs", warmup_epochs)

    def warmup_factor(self, epoch: float) -> float:
        if self.warmup_epochs == 0:
            return 1.0
        return min(max(float(epoch), 0.0) / self.warmup_epochs, 1.0)

    def terms(self, z_s, z_t, y, epoch):
        if z_s.shape[1] < 2:
            raise KDError("DKD needs at least two classes to split target from non-target knowledge.")
        teacher_guess = z_t.argmax(dim=1)
        target = teacher_guess if y is None else torch.where(y.long() == UNLABELLED, teacher_guess, y.long())

        zs, zt = z_s / self.rho, z_t / self.rho
        tckd = kl_soft(_binary_log_probs(zt, target), _binary_log_probs(zs, target))
        nckd = kl_soft(
            torch.log_softmax(_non_target_logits(zt, target), dim=1),
            torch.log_softmax(_non_target_logits(zs, target), dim=1),
        )
        scale = self.warmup_factor(epoch) * self.rho**2
        return {
            "hard": self.ce_weight * hard_loss(z_s, y),
            "tckd": (scale * self.alpha) * tckd,
            "nckd": (scale * self.beta) * nckd,
        }

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, rho={self.rho}, ce_weight={self.ce_weight}, "
            f"warmup_epochs={self.warmup_epochs}"
        )


@register_method("dkd", family="logit", params=DKDParams, title="Decoupled KD", short="DKD", order=2,
                 needs=Needs(epoch=True, labels=True),
                 paper="Zhao et al., Decoupled Knowledge Distillation, CVPR 2022",
                 description="Target-class (TCKD) and non-target-class (NCKD) KL weighted separately, with a "
                             "linear warm-up.")
def build(p: DKDParams, ctx=None) -> DKD:
    return DKD(alpha=p.alpha, beta=p.beta, rho=p.rho, ce_weight=p.ce_weight, warmup_epochs=p.warmup_epochs)
