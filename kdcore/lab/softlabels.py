"""Soft-label statistics for the dark-knowledge lab (numpy only, no model): re-tempering logits at ρ,
entropy and the effective number of classes, the classes a teacher finds similar, and the
class-similarity matrix built from average soft labels."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from kdcore.errors import KDError

# The lab's ρ slider: the Renard R10 series (ten steps per decade, evenly spaced on a log scale)
# from 0.5 to 50. It holds 1 and the sweep's 2, 4, 8, 16, 32 (R10 rounds 2^k to 2, 4, 8, 16, 32).
RHO_STEPS: tuple[float, ...] = (0.5, 0.63, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0, 10.0,
                                12.5, 16.0, 20.0, 25.0, 32.0, 40.0, 50.0)


def rho_grid(low: float = 0.5, high: float = 50.0, points: int = 41) -> np.ndarray:
    """ρ values evenly spaced on a log scale (for curves against ρ)."""
    return np.geomspace(low, high, points)


def _check_rho(rho: float) -> float:
    rho = float(rho)
    if not (rho > 0) or not np.isfinite(rho):
        raise KDError(f"the temperature rho must be a positive finite number, got {rho!r}")
    return rho


def soften(logits: np.ndarray, rho: float) -> np.ndarray:
    """σ(z/ρ) over the last axis, computed stably (the row maximum is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64) / _check_rho(rho)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats over the last axis (0·log 0 counts as 0)."""
    p = np.asarray(probs, dtype=np.float64)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)


def effective_classes(probs: np.ndarray) -> np.ndarray:
    """exp(entropy): 1 for a one-hot answer, K for a uniform one over K classes."""
    return np.exp(entropy(probs))


def entropy_curve(logits: np.ndarray, rhos: Sequence[float] | None = None) -> pd.DataFrame:
    """Entropy (nats) and effective number of classes against ρ. `logits` is one sample (K,) or many
    (N, K); for many, both are averaged over the samples. Columns: rho, entropy, effective_classes."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[None]
    rhos = rho_grid() if rhos is None else np.asarray(rhos, dtype=np.float64)
    rows = []
    for rho in rhos:
        h = entropy(soften(z, rho))
        rows.append({"rho": float(rho), "entropy": float(h.mean()), "effective_classes": float(np.exp(h).mean())})
    return pd.DataFrame(rows, columns=["rho", "entropy", "effective_classes"])


def distribution_frame(logits: np.ndarray, class_names: Sequence[str], rho: float,
                       student_logits: np.ndarray | None = None) -> pd.DataFrame:
    """One sample's soft labels at ρ: columns class, teacher (and student when given), rank (1 = top)."""
    p = soften(np.asarray(logits), rho)
    frame = pd.DataFrame({"class": list(class_names), "teacher": p})
    if student_logits is not None:
        frame["student"] = soften(np.asarray(student_logits), rho)
    frame["rank"] = frame["teacher"].rank(ascending=False, method="first").astype(int)
    return frame


def similar_classes(logits: np.ndarray, class_names: Sequence[str], rho: float, *, top: int = 3,
                    min_prob: float = 0.0) -> pd.DataFrame:
    """The teacher's runner-up classes for one sample (its top class left out), most probable first:
    columns class, prob. The order never changes with ρ (softmax keeps it); the probabilities do."""
    p = soften(np.asarray(logits), rho)
    order = np.argsort(-p, kind="stable")[1:top + 1]
    rows = [{"class": class_names[i], "prob": float(p[i])} for i in order if p[i] >= min_prob]
    return pd.DataFrame(rows, columns=["class", "prob"])


def similarity_matrix(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str], rho: float) -> pd.DataFrame:
    """Average soft label at ρ per true class: row = true class, column = class the teacher gives
    probability to; every row with samples sums to 1 (a class with no sample is a row of NaN)."""
    probs = soften(np.asarray(logits), rho)
    labels = np.asarray(labels).astype(int)
    k = len(class_names)
    if probs.shape[-1] != k:
        raise KDError(f"the logits have {probs.shape[-1]} classes but {k} class names were given")
    sums = np.zeros((k, k))
    np.add.at(sums, labels, probs)
    counts = np.bincount(labels, minlength=k)[:k].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = sums / counts[:, None]
    return pd.DataFrame(matrix, index=pd.Index(list(class_names), name="true class"),
                        columns=pd.Index(list(class_names), name="soft label for"))


def most_similar_pairs(matrix: pd.DataFrame, top: int = 5) -> pd.DataFrame:
    """The class pairs the teacher confuses most: symmetric score (M[a,b] + M[b,a]) / 2, off the
    diagonal, highest first. Columns: class_a, class_b, similarity, a_to_b, b_to_a."""
    m = matrix.to_numpy(dtype=np.float64)
    names = list(matrix.index)
    rows = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            score = (m[a, b] + m[b, a]) / 2
            if np.isfinite(score):
                rows.append({"class_a": names[a], "class_b": names[b], "similarity": float(score),
                             "a_to_b": float(m[a, b]), "b_to_a": float(m[b, a])})
    frame = pd.DataFrame(rows, columns=["class_a", "class_b", "similarity", "a_to_b", "b_to_a"])
    return frame.sort_values("similarity", ascending=False, kind="stable").head(top).reset_index(drop=True)


def pick_showcase_sample(logits: np.ndarray, labels: np.ndarray, candidates: np.ndarray,
                         preferred_class: int | None = None, *, runner_up_class: int | None = None,
                         confident: float = 0.97) -> int:
    """A sample that shows dark knowledge well: right and near one-hot at ρ = 1 (top probability at
    least `confident`), yet with the largest runner-up probability at ρ = 4; from `preferred_class`
    when it has such a sample, and preferably with `runner_up_class` as its runner-up (a shirt whose
    second guess is the T-shirt). Falls back to any right sample, then to any sample."""
    candidates = np.asarray(candidates).astype(int)
    z = np.asarray(logits)[candidates]
    y = np.asarray(labels)[candidates]
    correct = z.argmax(1) == y
    sure = soften(z, 1.0).max(1) >= confident
    p4 = soften(z, 4.0)
    runner_up = np.sort(p4, axis=1)[:, -2]
    score = runner_up + 1.0 * correct + 1.0 * (correct & sure)
    if runner_up_class is not None:
        score = score + 1.0 * (np.argsort(-p4, axis=1)[:, 1] == runner_up_class)
    if preferred_class is not None:
        score = score + 4.0 * (y == preferred_class)
    return int(candidates[int(np.argmax(score))])
