"""DIST (Huang et al., NeurIPS 2022): distillation from a stronger teacher by matching correlations of
the predictions instead of the predictions themselves.

  p = softmax(z / τ) for teacher and student
  inter-class = 1 − mean over samples i of Pearson(p_s[i, :], p_t[i, :])
  intra-class = 1 − mean over classes c of Pearson(p_s[:, c], p_t[:, c])
  loss = τ² · (β · inter + γ · intra)

Pearson is the cosine of the centred vectors with ε = 1e-8 added to the product of norms, as the
authors' code computes it. β = γ = 1 and τ = 1 are the authors' classification defaults.
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from kdcore.errors import KDError
from kdcore.losses.logits import LogitLoss, hard_loss
from kdcore.methods.api import MethodParams, Needs
from kdcore.methods.registry import register_method


def pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of a with the same row of b, shape (rows,)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


class DISTLoss(nn.Module):
    """τ²·(β·inter-class + γ·intra-class) relation loss on the softened predictions."""

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, tau: float = 1.0, eps: float = 1e-8) -> None:
        super().__init__()
        if not tau > 0:
            raise KDError(f"DIST's temperature tau must be positive, got {tau}.")
        self.beta, self.gamma, self.tau, self.eps = float(beta), float(gamma), float(tau), float(eps)

    def terms(self, z_s: Tensor, z_t: Tensor) -> dict[str, Tensor]:
        if z_s.shape != z_t.shape or z_s.dim() != 2:
            raise KDError(f"DIST needs teacher and student logits of one shape (batch, classes), "
                          f"got {tuple(z_t.shape)} and {tuple(z_s.shape)}.")
        p_s = torch.softmax(z_s / self.tau, dim=1)
        p_t = torch.softmax(z_t.detach() / self.tau, dim=1)
        scale = self.tau ** 2
        inter = 1.0 - pearson_rows(p_s, p_t, self.eps).mean()
        intra = 1.0 - pearson_rows(p_s.t(), p_t.t(), self.eps).mean()
        return {"inter": scale * self.beta * inter, "intra": scale * self.gamma * intra}

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        terms = self.terms(z_s, z_t)
        return terms["inter"] + terms["intra"]

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, tau={self.tau}"


class DISTParams(MethodParams):
    method: Literal["dist"] = "dist"
    beta: float = Field(1.0, ge=0, title="β (inter-class weight)", description="β, weight of the inter-class relation")
    gamma: float = Field(1.0, ge=0, title="γ (intra-class weight)", description="γ, weight of the intra-class relation")
    tau: float = Field(1.0, gt=0, le=100, title="Temperature τ", description="temperature τ of both softmaxes; "
                                                                              "the loss is scaled by τ²")
    ce_weight: float = Field(1.0, ge=0, title="Cross-entropy weight", description="weight of the cross-entropy on the labels")


class DIST(LogitLoss):
    """ce_weight·CE + τ²·(β·inter-class + γ·intra-class) relation loss."""

    def __init__(self, p: DISTParams) -> None:
        super().__init__()
        self.ce_weight = p.ce_weight
        self.relation = DISTLoss(p.beta, p.gamma, p.tau)

    def terms(self, z_s, z_t, y, epoch):
        return {"hard": self.ce_weight * hard_loss(z_s, y), **self.relation.terms(z_s, z_t)}


@register_method("dist", family="logit", params=DISTParams, title="DIST (relations of predictions)", short="DIST",
                 paper="Huang, You, Wang, Qian & Xu, Knowledge Distillation from A Stronger Teacher, NeurIPS 2022",
                 description="Match the Pearson correlation of teacher and student predictions across classes "
                             "(per sample) and across samples (per class) instead of the predictions themselves.",
                 needs=Needs(labels=True))
def build(p: DISTParams, ctx=None) -> DIST:
    return DIST(p)
