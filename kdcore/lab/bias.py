"""Hinton's bias correction for a class the student never saw in its transfer set.

A student distilled without any example of class c still learns, from the teacher's soft labels on
the other classes, *how much* each input resembles c; only its bias for c is too low, because c never
won during training. Raising that one logit by a constant b repairs it (Hinton et al. 2015: +3.5 for
the digit 3). b is fitted on the VALIDATION split only; the test split is used once, to report.

Two ways to fit b:
- "accuracy": the b that maximises overall validation accuracy (class c counts with its share of
  samples, so b cannot buy c's accuracy by ruining the other classes);
- "prior": Hinton's reading, the b at which c is predicted as often as it occurs in validation.

Both are exact: sample i switches to c when b exceeds max_{j≠c} z_ij − z_ic, so accuracy and the
predicted share only change at those breakpoints, and a sort finds the best interval."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from kdcore.errors import KDError

BiasMethod = Literal["accuracy", "prior"]


@dataclass(frozen=True)
class BiasFit:
    cls: int
    bias: float
    method: str
    val_samples: int
    val_class_samples: int
    val_acc_before: float
    val_acc_after: float
    val_class_acc_before: float
    val_class_acc_after: float
    val_prior: float            # share of class c among the validation labels
    val_predicted_share: float  # share of validation samples predicted as c after the correction

    def to_dict(self) -> dict:
        return asdict(self)


def apply_class_bias(logits: np.ndarray, cls: int, bias: float) -> np.ndarray:
    """A copy of the logits with `bias` added to class `cls`."""
    out = np.array(logits, dtype=np.float64, copy=True)
    out[:, cls] += bias
    return out


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Accuracy on the samples of each true class (NaN for a class without samples)."""
    pred = np.asarray(logits).argmax(1)
    labels = np.asarray(labels).astype(int)
    hits = np.bincount(labels, weights=(pred == labels).astype(np.float64), minlength=num_classes)[:num_classes]
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def _check(logits: np.ndarray, labels: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    if z.ndim != 2 or len(z) != len(y):
        raise KDError(f"logits {z.shape} and labels {y.shape} do not match")
    if not 0 <= cls < z.shape[1]:
        raise KDError(f"class {cls} is not one of the {z.shape[1]} classes")
    if not len(y):
        raise KDError("the validation split is empty: the bias cannot be fitted (use val_fraction > 0)")
    return z, y


def fit_class_bias(val_logits: np.ndarray, val_labels: np.ndarray, cls: int,
                   method: BiasMethod = "accuracy") -> BiasFit:
    """Fit the bias of class `cls` on validation logits and labels (and nothing else)."""
    z, y = _check(val_logits, val_labels, cls)
    n = len(y)
    others = np.delete(np.arange(z.shape[1]), cls)
    best_other = z[:, others].max(axis=1)
    alt_pred = others[z[:, others].argmax(axis=1)]
    breakpoints = best_other - z[:, cls]          # sample i is predicted as cls iff bias > breakpoints[i]
    order = np.argsort(breakpoints, kind="stable")
    b_sorted = breakpoints[order]
    is_cls = (y[order] == cls).astype(np.int64)
    alt_right = ((y[order] != cls) & (alt_pred[order] == y[order])).astype(np.int64)
    # correct[k]: the k samples with the lowest breakpoints are predicted cls, the rest keep alt_pred.
    gained = np.concatenate([[0], np.cumsum(is_cls)])
    kept = alt_right.sum() - np.concatenate([[0], np.cumsum(alt_right)])
    correct = gained + kept
    if method == "accuracy":
        best = correct.max()
        ties = np.flatnonzero(correct == best)
        k_now = int((breakpoints < 0).sum())
        k = int(ties[np.argmin(np.abs(ties - k_now))])  # of equally good choices, the smallest change
    elif method == "prior":
        k = int(is_cls.sum())  # predicted as often as it occurs
    else:
        raise KDError(f"unknown bias method {method!r}; use 'accuracy' or 'prior'")
    # The middle of the interval that gives exactly k switched samples (one logit unit beyond the ends).
    low = b_sorted[k - 1] if k > 0 else b_sorted[0] - 2.0
    high = b_sorted[k] if k < n else b_sorted[-1] + 2.0
    bias = float((low + high) / 2)

    before = z.argmax(1)
    after = apply_class_bias(z, cls, bias).argmax(1)
    mask = y == cls
    return BiasFit(
        cls=int(cls), bias=bias, method=method, val_samples=n, val_class_samples=int(mask.sum()),
        val_acc_before=float((before == y).mean()), val_acc_after=float((after == y).mean()),
        val_class_acc_before=float((before[mask] == cls).mean()) if mask.any() else float("nan"),
        val_class_acc_after=float((after[mask] == cls).mean()) if mask.any() else float("nan"),
        val_prior=float(mask.mean()), val_predicted_share=float((after == cls).mean()),
    )


def correction_table(test_logits: np.ndarray, test_labels: np.ndarray, fit: BiasFit,
                     class_names: Sequence[str], classes: Sequence[int] | None = None) -> pd.DataFrame:
    """Test accuracy per class before and after adding fit.bias to class fit.cls, plus an "all classes"
    row. Columns: class, index, samples, before, after, omitted."""
    z, y = _check(test_logits, test_labels, fit.cls)
    k = z.shape[1]
    before = per_class_accuracy(z, y, k)
    corrected = apply_class_bias(z, fit.cls, fit.bias)
    after = per_class_accuracy(corrected, y, k)
    counts = np.bincount(y, minlength=k)[:k]
    chosen = range(k) if classes is None else classes
    rows = [{"class": class_names[c], "index": int(c), "samples": int(counts[c]), "before": float(before[c]),
             "after": float(after[c]), "omitted": c == fit.cls} for c in chosen]
    rows.append({"class": "all classes", "index": -1, "samples": int(len(y)),
                 "before": float((z.argmax(1) == y).mean()), "after": float((corrected.argmax(1) == y).mean()),
                 "omitted": False})
    return pd.DataFrame(rows, columns=["class", "index", "samples", "before", "after", "omitted"])
