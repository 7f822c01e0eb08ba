"""Noticing a student that stopped learning while its loss stays finite (a dead network), so a run that
silently collapsed is not read as "distillation hurts"."""
from __future__ import annotations

from torch import Tensor

ONE_CLASS_SHARE = 0.99  # predictions this concentrated on one class count as constant
AT_CHANCE = 0.05  # accuracy within this share of the way from chance to 100 % counts as chance
ABOVE_CHANCE = 0.25  # ... and beyond this share as having learned something


class CollapseWatch:
    """Fed the validation predictions of each evaluated epoch; says once, in one sentence, when for
    `patience` evaluations in a row the student predicted (nearly) one class only, or its accuracy fell
    back to chance after having been above it."""

    def __init__(self, num_classes: int, lr: float, patience: int = 2) -> None:
        self.chance = 1.0 / max(num_classes, 1)
        self.lr = lr
        self.patience = patience
        self.best = 0.0
        self.since: int | None = None  # first epoch of the current run of collapsed evaluations
        self.count = 0
        self.warned = False

    def update(self, epoch: int, logits: Tensor, labels: Tensor) -> str | None:
        if self.warned or len(labels) == 0:
            return None
        pred = logits.argmax(1)
        acc = float((pred == labels).float().mean())
        share = float(pred.bincount().max()) / len(pred)
        span = 1.0 - self.chance
        at_chance = acc <= self.chance + AT_CHANCE * span
        collapsed = share >= ONE_CLASS_SHARE or (at_chance and self.best >= self.chance + ABOVE_CHANCE * span)
        self.best = max(self.best, acc)
        if not collapsed:
            self.since, self.count = None, 0
            return None
        self.since = self.since or epoch
        self.count += 1
        if self.count < self.patience:
            return None
        self.warned = True
        what = (f"predicts one class for {share:.0%} of the validation set" if share >= ONE_CLASS_SHARE
                else "is back at chance")
        return (f"The student stopped learning at epoch {self.since}: it {what} (accuracy {acc:.1%}, chance "
                f"{self.chance:.0%}) while the loss stays finite, so this run's results say nothing about the "
                f"method; rerun with a lower learning rate (e.g. optimizer.lr: {self.lr / 5:g}) or gradient "
                f"clipping (optimizer.clip_grad_norm: 1.0).")
