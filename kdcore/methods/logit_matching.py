"""Buciluă's logit matching: β·MSE(z_s, z_t) on raw logits, plus an optional α·H(y, σ(z_s))."""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from pydantic import Field, model_validator

from kdcore.losses.logits import LogitLoss, check_weight, hard_loss
from kdcore.methods.api import MethodParams, Needs
from kdcore.methods.registry import register_method


class LogitMatchingParams(MethodParams):
    method: Literal["logit_matching"] = "logit_matching"
    alpha: float = Field(0.0, title="α (hard-label weight)", ge=0, description="α, weight of the cross-entropy on the labels")
    beta: float = Field(1.0, title="β (logit MSE weight)", ge=0,
                        description="β, weight of the mean squared error between raw logits")

    @model_validator(mode="after")
    def _weights_not_both_zero(self) -> LogitMatchingParams:
        if self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha and beta cannot both be 0: nothing would be learned")
        return self


class LogitMatching(LogitLoss):
    """β·MSE(z_s, z_t) on raw logits (mean over all entries), plus an optional α·H(y, σ(z_s)).
    It is the high-temperature limit of Hinton's KD.

    Returns {"hard": α·H, "logit_mse": β·MSE, "total"}."""

    def __init__(self, alpha: float = 0.0, beta: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_weight("alpha", alpha)
        self.beta = check_weight("beta", beta)

    def terms(self, z_s, z_t, y, epoch):
        return {"hard": self.alpha * hard_loss(z_s, y), "logit_mse": self.beta * F.mse_loss(z_s, z_t)}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"


@register_method("logit_matching", family="logit", params=LogitMatchingParams, title="Logit matching",
                 short="logit MSE", needs=Needs(labels=True), order=1,
                 paper="Buciluă, Caruana & Niculescu-Mizil, Model Compression, KDD 2006",
                 description="Mean squared error between raw teacher and student logits (the ρ→∞ limit of KD).")
def build(p: LogitMatchingParams, ctx=None) -> LogitMatching:
    return LogitMatching(alpha=p.alpha, beta=p.beta)
