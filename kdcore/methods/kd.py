"""Hinton KD, the survey's L_LB: α·H(y, σ(z_s)) + β·ρ²·D_soft(σ(z_t; ρ), σ(z_s; ρ))."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kdcore.errors import KDError
from kdcore.losses.logits import LogitLoss, _check_rho, ce_soft, check_weight, hard_loss, kl_soft, log_soft_labels
from kdcore.methods.api import MethodParams, Needs
from kdcore.methods.registry import register_method


class KDParams(MethodParams):
    method: Literal["kd"] = "kd"
    rho: float = Field(4.0, title="Temperature ρ", gt=0, le=100,
                       description="temperature ρ: higher softens the teacher's distribution")
    alpha: float = Field(0.1, title="α (hard-label weight)", ge=0, description="α, weight of the cross-entropy on the labels")
    beta: float = Field(0.9, title="β (soft-label weight)", ge=0, description="β, weight of the soft-label term")
    soft_loss: Literal["kl", "ce"] = Field(
        "kl", title="Soft-label distance D", description="D_soft: KL divergence, or cross-entropy (same gradient)",
        json_schema_extra={"choice_labels": {"kl": "KL divergence", "ce": "cross-entropy (same gradient)"}})
    rho_squared: bool = Field(True, title="Multiply the soft term by ρ²",
                              description="multiply the soft term by ρ² (Hinton), keeping its gradient's size "
                                          "independent of ρ")

    @model_validator(mode="after")
    def _weights_not_both_zero(self) -> KDParams:
        if self.alpha == 0 and self.beta == 0:
            raise ValueError("alpha and beta cannot both be 0: nothing would be learned")
        return self

    def label(self) -> str:
        return f"KD ρ={self.rho:g}"


class HintonKD(LogitLoss):
    """Hinton's KD, the survey's L_LB:

        total = α·H(y, σ(z_s)) + β·[ρ² if rho_squared]·D_soft(σ(z_t/ρ), σ(z_s/ρ))

    D_soft is KL (``"kl"``, summed over classes, mean over the batch, every sample labelled or not)
    or the survey's cross-entropy H(p_t, p_s) (``"ce"``), which is KL plus the teacher's entropy: a
    constant for the student, so both give the same gradient. ρ² keeps the soft gradients' scale
    independent of ρ (Hinton); it is switchable because libraries disagree.

    Returns {"hard": α·H, "soft": β·ρ²·D_soft, "total": hard + soft} (weighted contributions)."""

    def __init__(
        self,
        alpha: float = 0.1,
        beta: float = 0.9,
        rho: float = 4.0,
        soft_loss: Literal["kl", "ce"] = "kl",
        rho_squared: bool = True,
    ) -> None:
        super().__init__()
        if soft_loss not in ("kl", "ce"):
            raise KDError(f"The soft loss must be 'kl' or 'ce', got {soft_loss!r}.")
        self.alpha = check_weight("alpha", alpha)
        self.beta = check_weight("beta", beta)
        self.rho = _check_rho(rho)
        self.soft_loss = soft_loss
        self.rho_squared = bool(rho_squared)

    @property
    def soft_scale(self) -> float:
        """β·ρ² (or β): the factor in front of D_soft."""
        return self.beta * (self.rho**2 if self.rho_squared else 1.0)

    def terms(self, z_s, z_t, y, epoch):
        log_p_t = log_soft_labels(z_t, self.rho)
        log_p_s = log_soft_labels(z_s, self.rho)
        divergence = kl_soft(log_p_t, log_p_s) if self.soft_loss == "kl" else ce_soft(log_p_t, log_p_s)
        return {"hard": self.alpha * hard_loss(z_s, y), "soft": self.soft_scale * divergence}

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, rho={self.rho}, soft_loss={self.soft_loss!r}, "
            f"rho_squared={self.rho_squared}"
        )


@register_method("kd", family="logit", params=KDParams, title="Hinton KD", short="KD", order=0,
                 needs=Needs(labels=True),
                 paper="Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, 2015",
                 description="α·CE on labels + β·ρ²·KL between teacher and student soft labels at temperature ρ.")
def build(p: KDParams, ctx=None) -> HintonKD:
    return HintonKD(alpha=p.alpha, beta=p.beta, rho=p.rho, soft_loss=p.soft_loss, rho_squared=p.rho_squared)
