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

import torch
from torch import Tensor, nn

from kdcore.errors import KDError


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
        return {"dist_inter": scale * self.beta * inter, "dist_intra": scale * self.gamma * intra}

    def forward(self, z_s: Tensor, z_t: Tensor) -> Tensor:
        terms = self.terms(z_s, z_t)
        return terms["dist_inter"] + terms["dist_intra"]

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, tau={self.tau}"
