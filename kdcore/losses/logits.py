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
import math

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
    no labels yields an exact 0 that is still connected to ``z_s`` for backward. Labels are checked only
    when cross-entropy refuses them (on a CPU; the trainer checks a run's labels once, before any step),
    so a step pays nothing for the check."""
    if y is None:
        return z_s.sum() * 0.0
    y = y.long()
    try:
        summed = F.cross_entropy(z_s, y, ignore_index=UNLABELLED, reduction="sum")
    except (IndexError, RuntimeError):
        check_labels(y, z_s.shape[-1])  # a label out of range: say so in one sentence
        raise
    n_labelled = (y != UNLABELLED).sum().clamp_min(1)
    return summed / n_labelled


def check_labels(y: Tensor, num_classes: int) -> None:
    """Every label is a class index in 0…num_classes-1, or -1 (unlabelled); one sentence otherwise."""
    bad = (y != UNLABELLED) & ((y < 0) | (y >= num_classes))
    if bool(bad.any()):
        raise KDError(f"Labels must be class indices in 0…{num_classes - 1} (or -1 for unlabelled), "
                      f"got {int(y[bad][0])}.")


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
        terms = self.checked_terms(z_s, z_t, y, epoch)
        total = None
        for value in terms.values():
            total = value if total is None else total + value
        terms["total"] = total
        return terms

    def checked_terms(self, z_s: Tensor, z_t: Tensor | None, y: Tensor | None, epoch: float = 0
                      ) -> dict[str, Tensor]:
        """forward's terms without "total" (the trainer adds every loss's terms itself)."""
        _check_logits(z_s, z_t, y)
        if z_t is None and self.needs_teacher:
            raise KDError(f"{type(self).__name__} needs the teacher's logits, but none were given.")
        z_s = _at_least_fp32(z_s)
        z_t = None if z_t is None else _at_least_fp32(z_t.detach())
        return self.terms(z_s, z_t, y, epoch)

    @abc.abstractmethod
    def terms(self, z_s: Tensor, z_t: Tensor | None, y: Tensor | None, epoch: float) -> dict[str, Tensor]:
        """The weighted terms, without "total"; ``z_t`` is already detached."""


class CrossEntropyOnly(LogitLoss):
    """Plain supervised training of the student (the "no distillation" baseline): {"hard", "total"}."""

    needs_teacher = False

    def terms(self, z_s, z_t, y, epoch):
        return {"hard": hard_loss(z_s, y)}


# ----------------------------------------------------------------------------- by name


def build_logit_loss(method: str, **params) -> LogitLoss:
    """The logit loss named ``method`` built with ``params``: "none" (labels only, no teacher) or any
    registered logit method ("kd", "logit_matching", "dkd", ...), its parameters checked by its model."""
    if method == "none":
        if params:
            raise KDError(f"Training without a teacher takes no parameters, got {', '.join(sorted(params))}.")
        return CrossEntropyOnly()
    from pydantic import ValidationError

    from kdcore.methods import all_methods, get_method

    logit_names = [r.name for r in all_methods(family="logit")]
    if method not in logit_names:
        raise UnknownNameError(f"Unknown logit distillation method {method!r}; choose one of: "
                               f"{', '.join(['none', *logit_names])}.")
    record = get_method(method)
    try:
        spec = record.params.model_validate({**params, "method": method})
    except ValidationError as err:
        problems = []
        for e in err.errors():
            name = ".".join(str(p) for p in e["loc"]) or method
            if e["type"] == "extra_forbidden":
                accepted = ", ".join(f for f in record.params.model_fields if f != "method")
                problems.append(f"Logit method {method!r} has no parameter {name!r}; its parameters are: {accepted}.")
            else:
                problems.append(f"{method} {name}: {e['msg'].removeprefix('Value error, ')}.")
        raise KDError(" ".join(problems)) from None
    return record.build(spec, None)
