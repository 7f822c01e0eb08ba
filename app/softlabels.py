"""Soft-label arithmetic on stored probe logits (numpy only): re-tempering at any ρ, entropy, KL,
and the class-by-class "dark knowledge" matrix; which runs have probes to show. Pages turn these data
frames into figures."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kdcore.lab.softlabels import soften  # the one σ(z; ρ) of the project
from kdcore.paths import run_dir


def log_soften(logits: np.ndarray, rho: float) -> np.ndarray:
    """log σ(z; ρ) row by row, in the log domain so tiny probabilities keep their exact size."""
    z = np.asarray(logits, dtype=np.float64) / float(rho)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of each row (0·log 0 counts as 0)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-300, 1.0)
    return -(np.asarray(probs) * np.log2(p)).sum(axis=-1)


def kl_from_logits(teacher_logits: np.ndarray, student_logits: np.ndarray, rho: float) -> np.ndarray:
    """KL(σ(z_t; ρ) ‖ σ(z_s; ρ)) in nats of each row, from log-probabilities (no clipping, exact even for
    a very confident student)."""
    log_p, log_q = log_soften(teacher_logits, rho), log_soften(student_logits, rho)
    return (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)


@dataclass(frozen=True)
class Probes:
    """A run's probe samples (probes.pt) as numpy arrays."""

    labels: np.ndarray  # (P,)
    images: np.ndarray  # (P, C, H, W) uint8
    class_names: list[str]
    teacher: np.ndarray | None  # (P, K) logits, None for a run without a teacher
    student: list[np.ndarray]  # one (P, K) logits array per recorded epoch
    epochs: list[int]
    teacher_members: list[np.ndarray] | None = None  # an ensemble's members' logits, (P, K) each
    teacher_member_names: list[str] | None = None

    @property
    def size(self) -> int:
        return int(len(self.labels))

    def student_at(self, epoch: int) -> np.ndarray:
        """The student's probe logits at `epoch` (the nearest recorded epoch not after it)."""
        if not self.epochs:
            raise ValueError("no epoch has been recorded yet")
        earlier = [i for i, e in enumerate(self.epochs) if e <= epoch]
        return self.student[earlier[-1] if earlier else 0]


def load_probes(path: str | Path) -> Probes | None:
    """Read probes.pt without unpickling code; None when the file does not exist (yet) or is unreadable."""
    import torch  # imported here so figure tests need no torch

    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # half-written or foreign file: the page says "no probes yet"
        return None

    def arr(t) -> np.ndarray:
        return t.detach().cpu().float().numpy() if hasattr(t, "numpy") else np.asarray(t)

    return Probes(
        labels=np.asarray(data["labels"]).astype(int),
        images=np.asarray(data["images"]),
        class_names=[str(c) for c in data["class_names"]],
        teacher=None if data.get("teacher") is None else arr(data["teacher"]),
        student=[arr(s) for s in data.get("student", [])],
        epochs=[int(e) for e in data.get("epochs", [])],
        teacher_members=[arr(z) for z in data["teacher_members"]] if data.get("teacher_members") else None,
        teacher_member_names=[str(n) for n in data.get("teacher_member_names", [])] or None,
    )


def distribution_frame(class_names: list[str], teacher_logits: np.ndarray | None, student_logits: np.ndarray | None,
                       rho: float) -> pd.DataFrame:
    """One sample's soft labels at ρ: columns class, teacher, student (NaN for a missing side)."""
    k = len(class_names)
    t = soften(teacher_logits, rho) if teacher_logits is not None else np.full(k, np.nan)
    s = soften(student_logits, rho) if student_logits is not None else np.full(k, np.nan)
    return pd.DataFrame({"class": class_names, "teacher": t, "student": s})


def per_class_kl(teacher_logits: np.ndarray, student_logits: np.ndarray, labels: np.ndarray,
                 class_names: list[str], rho: float) -> pd.DataFrame:
    """Mean KL(teacher ‖ student) at ρ over the probe samples of each true class: columns class, kl, samples."""
    kl = kl_from_logits(teacher_logits, student_logits, rho)
    rows = []
    for c, name in enumerate(class_names):
        mask = labels == c
        rows.append({"class": name, "kl": float(kl[mask].mean()) if mask.any() else np.nan, "samples": int(mask.sum())})
    return pd.DataFrame(rows)


def class_matrix(logits: np.ndarray, labels: np.ndarray, class_names: list[str], rho: float) -> pd.DataFrame:
    """Average soft label per true class: row = true class, column = class, each row sums to 1."""
    probs = soften(logits, rho)
    k = len(class_names)
    matrix = np.full((k, k), np.nan)
    for c in range(k):
        mask = labels == c
        if mask.any():
            matrix[c] = probs[mask].mean(axis=0)
    return pd.DataFrame(matrix, index=pd.Index(class_names, name="true class"),
                        columns=pd.Index(class_names, name="class"))


def entropy_curve(teacher_logits: np.ndarray | None, student_logits: np.ndarray | None,
                  rhos: np.ndarray | None = None) -> pd.DataFrame:
    """Mean entropy (bits) of the soft labels over the probe samples at each ρ: columns rho, teacher, student."""
    if rhos is None:
        rhos = np.geomspace(0.5, 32, 25)
    rows = []
    for rho in rhos:
        rows.append({
            "rho": float(rho),
            "teacher": float(entropy(soften(teacher_logits, rho)).mean()) if teacher_logits is not None else np.nan,
            "student": float(entropy(soften(student_logits, rho)).mean()) if student_logits is not None else np.nan,
        })
    return pd.DataFrame(rows)


def preview_frame(logits: np.ndarray, labels: np.ndarray, class_names: list[str], rho: float,
                  samples: int = 6) -> pd.DataFrame:
    """Soft labels of the first `samples` probes, one per class where possible (the form's preview):
    long frame with columns sample (a label like "#3 (true 7)"), class, prob."""
    chosen: list[int] = []
    for c in range(len(class_names)):
        hits = np.flatnonzero(labels == c)
        if len(hits):
            chosen.append(int(hits[0]))
        if len(chosen) >= samples:
            break
    probs = soften(logits[chosen], rho)
    rows = []
    for row, i in zip(probs, chosen):
        label = f"#{i} (true {class_names[labels[i]]})"
        rows += [{"sample": label, "class": name, "prob": float(p)} for name, p in zip(class_names, row)]
    return pd.DataFrame(rows, columns=["sample", "class", "prob"])


def probe_image(images: np.ndarray, index: int, size: int = 160) -> np.ndarray:
    """One probe image as H×W (grey) or H×W×3 uint8, enlarged with whole-pixel blocks so 8×8 digits stay sharp."""
    img = np.asarray(images[index])
    c, h, w = img.shape
    scale = max(1, size // max(h, w))
    img = img.repeat(scale, axis=1).repeat(scale, axis=2)
    return img[0] if c == 1 else np.transpose(img[:3], (1, 2, 0))


# ---- choosing a run ---------------------------------------------------------------------------------
def runs_with_probes(records: Iterable[Any]) -> list[Any]:
    """The runs whose probe logits have been written (after their first epoch), in the given order."""
    return [r for r in records if (run_dir(r.id) / "probes.pt").is_file()]


def default_probe_run(records: Sequence[Any], requested: str | None = None) -> str | None:
    """The run the Soft labels page opens with: the one asked for (`?run=`) when it has probes, else the
    first finished KD run (student and teacher to compare), else the first run."""
    ids = [r.id for r in records]
    if requested in ids:
        return requested
    kd_done = [r.id for r in records if r.spec.teacher is not None and r.status.value == "completed"]
    return (kd_done or ids or [None])[0]


def default_rho(record: Any, low: float = 0.5, high: float = 20.0) -> float:
    """The ρ the page starts at: the run's own temperature when it distilled, else 4 (inside the slider)."""
    rho = float(getattr(record.spec.logit, "rho", 4.0)) if record.spec.teacher is not None else 4.0
    return min(max(rho, low), high)
