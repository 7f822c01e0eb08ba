"""Logit-based distillation losses (the survey's L_LB and its relatives).

Every loss takes student logits ``z_s`` (N, C), teacher logits ``z_t`` (N, C) and labels ``y`` (N,)
and returns a dict of named terms whose values add up to ``"total"``: the trainer sums nothing
itself, it backpropagates ``total`` and logs every other key as its own curve.

Conventions shared by all losses
- The returned terms are the *weighted contributions* (α·H, β·ρ²·D, ...), so the terms other
  than ``total`` always sum to ``total`` exactly, and a curve shows what the optimiser really sees.
- ``y == -1`` marks an unlabelled sample (a transfer set): the hard term averages over the labelled
  samples only; a batch with no labelled sample gives a hard term of 0 that still supports backward.
  ``y=None`` means the whole batch is unlabelled.
- Teacher logits are detached inside: no gradient ever reaches the teacher.
"""

from __future__ import annotations

import abc
import inspect
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdcore.errors import KDError, UnknownNameError

UNLABELLED = -1


# ----------------------------------------------------------------------------- soft labels


def _check_rho(rho: float) -> float:
    """ρ must be a positive finite number; NaN fails the comparison and lands here too."""
    try:
        value = float(rho)
    except (TypeError, ValueError):
        raise KDError(f"The temperature rho must be a positive number, got {rho!r}.") from None
    if not (value > 0.0) or not math.isfinite(value):
        raise KDError(f"The temperature rho must be a positive finite number, got {rho!r}.")
    return value


def soft_labels(logits: Tensor, rho: float) -> Tensor:
    """Hinton's soft labels: softmax(z / ρ) over the last dim; ρ=1 is the ordinary softmax."""
    return torch.softmax(logits / _check_rho(rho), dim=-1)


def log_soft_labels(logits: Tensor, rho: float) -> Tensor:
    """log softmax(z / ρ), computed stably (no log of an underflowed probability)."""
    return torch.log_softmax(logits / _check_rho(rho), dim=-1)


# ----------------------------------------------------------------------------- helpers


def check_weight(name: str, value: float) -> float:
    """Loss weights (and the warm-up length) are non-negative finite numbers."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise KDError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(number) or number < 0.0:
        raise KDError(f"{name} must be a non-negative finite number, got {value!r}.")
    return number


def _check_logits(z_s: Tensor, z_t: Tensor | None, y: Tensor | None) -> None:
    """Shape checks only (free on any device); a mismatch here is a wiring mistake worth one sentence."""
    if z_s.dim() != 2:
        raise KDError(f"Student logits must have shape (batch, classes), got {tuple(z_s.shape)}.")
    if z_t is not None and z_t.shape != z_s.shape:
        raise KDError(
            f"Teacher logits {tuple(z_t.shape)} and student logits {tuple(z_s.shape)} must have the same shape "
            "(same batch and the same number of classes)."
        )
    if y is not None and (y.dim() != 1 or y.shape[0] != z_s.shape[0]):
        raise KDError(f"Labels must have shape ({z_s.shape[0]},) to match the logits, got {tuple(y.shape)}.")


def _at_least_fp32(x: Tensor) -> Tensor:
    """Half-precision logits (AMP, .half() models) are compared in float32 for stable soft labels."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def hard_loss(z_s: Tensor, y: Tensor | None) -> Tensor:
    """Cross-entropy H(y, softmax(z_s)) averaged over the labelled samples (y != -1).

    Sum over labelled samples divided by their count (at least 1): no host sync, and a batch with
    no labels yields an exact 0 that is still connected to ``z_s`` for backward."""
    if y is None:
        return z_s.sum() * 0.0
    y = y.long()
    summed = F.cross_entropy(z_s, y, ignore_index=UNLABELLED, reduction="sum")
    n_labelled = (y != UNLABELLED).sum().clamp_min(1)
    return summed / n_labelled


def kl_soft(log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
    """KL(p_t ‖ p_s) summed over classes, mean over the batch, from log-probabilities."""
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def ce_soft(log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
    """Cross-entropy H(p_t, p_s) summed over classes, mean over the batch (= KL + teacher entropy)."""
    return -(log_p_t.exp() * log_p_s).sum(dim=-1).mean()


# ----------------------------------------------------------------------------- losses


class LogitLoss(nn.Module, abc.ABC):
    """Base class: ``forward(z_s, z_t, y, epoch=0) -> {term: tensor, ..., "total": tensor}``."""

    #: whether forward needs teacher logits (False only for plain supervised training)
    needs_teacher: bool = True

    def forward(self, z_s: Tensor, z_t: Tensor | None, y: Tensor | None, epoch: float = 0) -> dict[str, Tensor]:
        _check_logits(z_s, z_t, y)
        if z_t is None and self.needs_teacher:
            raise KDError(f"{type(self).__name__} needs the teacher's logits, but none were given.")
        z_s = _at_least_fp32(z_s)
        z_t = None if z_t is None else _at_least_fp32(z_t.detach())
        terms = self.terms(z_s, z_t, y, epoch)
        total = None
        for value in terms.values():
            total = value if total is None else total + value
        terms["total"] = total
        return terms

    @abc.abstractmethod
    def terms(self, z_s: Tensor, z_t: Tensor | None, y: Tensor | None, epoch: float) -> dict[str, Tensor]:
        """The weighted terms, without "total"; ``z_t`` is already detached."""


class CrossEntropyOnly(LogitLoss):
    """Plain supervised training of the student (the "no distillation" baseline): {"hard", "total"}."""

    needs_teacher = False

    def terms(self, z_s, z_t, y, epoch):
        return {"hard": hard_loss(z_s, y)}


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


class LogitMatching(LogitLoss):
    """Buciluă's logit matching: β·MSE(z_s, z_t) on raw logits (mean over all entries), plus an
    optional α·H(y, σ(z_s)). It is the high-temperature limit of Hinton's KD.

    Returns {"hard": α·H, "logit_mse": β·MSE, "total"}."""

    def __init__(self, alpha: float = 0.0, beta: float = 1.0) -> None:
        super().__init__()
        self.alpha = check_weight("alpha", alpha)
        self.beta = check_weight("beta", beta)

    def terms(self, z_s, z_t, y, epoch):
        return {"hard": self.alpha * hard_loss(z_s, y), "logit_mse": self.beta * F.mse_loss(z_s, z_t)}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}"


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
    """Decoupled KD (Zhao et al., 2022), as mdistiller defines it:

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


# ----------------------------------------------------------------------------- registry

_LOGIT_CLASSES: dict[str, type[LogitLoss]] = {
    "none": CrossEntropyOnly,
    "kd": HintonKD,
    "logit_matching": LogitMatching,
    "dkd": DKD,
}

LOGIT_METHODS: dict[str, str] = {
    "none": "No distillation: the student learns from the labels alone (cross-entropy).",
    "kd": "Hinton KD: α·CE on labels + β·ρ²·KL between teacher and student soft labels at temperature ρ.",
    "logit_matching": "Buciluă logit matching: mean squared error between raw teacher and student logits.",
    "dkd": "Decoupled KD: target-class (TCKD) and non-target-class (NCKD) KL weighted separately, with warm-up.",
}


def logit_method_params(method: str) -> dict[str, object]:
    """The parameters ``method`` accepts, with their defaults (for forms and validation)."""
    cls = _logit_class(method)
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and p.default is not inspect.Parameter.empty
    }


def _logit_class(method: str) -> type[LogitLoss]:
    try:
        return _LOGIT_CLASSES[method]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(_LOGIT_CLASSES))
        raise UnknownNameError(f"Unknown logit distillation method {method!r}; choose one of: {valid}.") from None


def build_logit_loss(method: str, **params) -> LogitLoss:
    """The logit loss named ``method`` ("none", "kd", "logit_matching", "dkd") built with ``params``."""
    cls = _logit_class(method)
    accepted = logit_method_params(method)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        valid = ", ".join(accepted) or "none"
        raise KDError(
            f"Logit method {method!r} has no parameter {', '.join(map(repr, unknown))}; its parameters are: {valid}."
        )
    return cls(**params)
