"""How well a student matches its teacher and the labels: accuracy, agreement, KL at a temperature, ECE."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def accuracy(logits: Tensor, y: Tensor) -> float:
    return (logits.argmax(dim=1) == y).float().mean().item() if len(y) else float("nan")


def agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Fraction of samples where student and teacher predict the same class (top-1)."""
    return (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()


def mean_kl(teacher_logits: Tensor, student_logits: Tensor, rho: float = 1.0) -> float:
    """Mean over samples of KL(σ(z_t; ρ) ‖ σ(z_s; ρ)), summed over classes."""
    log_p_t = F.log_softmax(teacher_logits.float() / rho, dim=1)
    log_p_s = F.log_softmax(student_logits.float() / rho, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(1).mean().item()


def expected_calibration_error(logits: Tensor, y: Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: Σ_b |B|/N · |acc(B) − conf(B)|."""
    probs = F.softmax(logits.float(), dim=1)
    conf, pred = probs.max(1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1, device=logits.device)
    which = torch.bucketize(conf, edges[1:-1], right=True)
    # per bin: |Σ correct − Σ conf| / N  ==  |B|/N · |acc(B) − conf(B)|  (empty bins add 0)
    gap = torch.zeros(bins, dtype=conf.dtype, device=logits.device).index_add_(0, which, correct - conf)
    return (gap.abs().sum() / max(len(y), 1)).item()


def fidelity_report(student_logits: Tensor, teacher_logits: Tensor | None, y: Tensor, rho: float, *,
                    teacher_ece: float | None = None) -> dict[str, float]:
    """Student calibration, and with a teacher: agreement, KL at ρ=1 and ρ, the teacher's calibration
    (pass `teacher_ece` when it is already known: the teacher does not change during a run)."""
    report = {"calib/ece_student": expected_calibration_error(student_logits, y)}
    if teacher_logits is not None:
        report.update({
            "fidelity/agreement": agreement(student_logits, teacher_logits),
            "fidelity/kl_rho1": mean_kl(teacher_logits, student_logits, 1.0),
            "fidelity/kl_rho": mean_kl(teacher_logits, student_logits, rho),
            "calib/ece_teacher": (teacher_ece if teacher_ece is not None
                                  else expected_calibration_error(teacher_logits, y)),
        })
    return report
