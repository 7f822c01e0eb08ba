"""Why the soft term is multiplied by ρ²: the size of its gradient on the student's logits against ρ,
measured with the project's own HintonKD loss on real teacher and student logits.

For KL(σ(z_t/ρ) ‖ σ(z_s/ρ)) the gradient on z_s is (σ(z_s/ρ) − σ(z_t/ρ)) / ρ. For large ρ both
softmaxes are ≈ 1/K + (z − mean z)/(Kρ), so the gradient shrinks like 1/ρ²; ρ² undoes exactly that,
keeping the soft term's pull comparable to the hard term's whatever ρ is chosen."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from kdcore.losses import HintonKD
from kdcore.losses.logits import hard_loss


def _per_sample_grad_norm(loss_fn, z_s: torch.Tensor, z_t: torch.Tensor, y: torch.Tensor, term: str) -> float:
    z = z_s.detach().clone().requires_grad_(True)
    # .forward, not __call__: in the dashboard another thread may be counting FLOPs, and FlopCounterMode's
    # module tracker installs *global* module hooks whose grad hooks break autograd.grad in this thread.
    terms = loss_fn.forward(z, z_t, y)
    (grad,) = torch.autograd.grad(terms[term], z)
    # The loss is a batch mean: times N gives each sample's own gradient.
    return float((grad * len(z)).norm(dim=1).mean())


def soft_gradient_curve(teacher_logits: np.ndarray, student_logits: np.ndarray, labels: np.ndarray | None = None,
                        rhos: Sequence[float] | None = None, *, max_samples: int = 2000) -> pd.DataFrame:
    """Mean per-sample ‖∂ soft term / ∂ z_s‖₂ at each ρ, with the ρ² factor (Hinton) and without it.

    Columns: rho, with_rho2, without_rho2, hard (the hard-label term's gradient, ρ-independent; NaN
    without labels). Uses the first `max_samples` samples (the curve is a mean: a few thousand suffice)."""
    rhos = np.geomspace(0.5, 50, 41) if rhos is None else np.asarray(rhos, dtype=np.float64)
    z_t = torch.as_tensor(np.asarray(teacher_logits)[:max_samples], dtype=torch.float64)
    z_s = torch.as_tensor(np.asarray(student_logits)[:max_samples], dtype=torch.float64)
    y = None if labels is None else torch.as_tensor(np.asarray(labels)[:max_samples], dtype=torch.long)
    hard = float("nan")
    if y is not None:
        z = z_s.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(hard_loss(z, y), z)
        hard = float((grad * len(z)).norm(dim=1).mean())
    rows = []
    for rho in rhos:
        with_sq = HintonKD(alpha=0.0, beta=1.0, rho=float(rho), rho_squared=True)
        without_sq = HintonKD(alpha=0.0, beta=1.0, rho=float(rho), rho_squared=False)
        rows.append({
            "rho": float(rho),
            "with_rho2": _per_sample_grad_norm(with_sq, z_s, z_t, y, "soft"),
            "without_rho2": _per_sample_grad_norm(without_sq, z_s, z_t, y, "soft"),
            "hard": hard,
        })
    return pd.DataFrame(rows, columns=["rho", "with_rho2", "without_rho2", "hard"])
