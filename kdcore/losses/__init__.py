"""Distillation losses: logit-based (L_LB) and feature-based (L_FB), plus the feature presets.

The methods themselves live in kdcore/methods/ (one module each); the logit ones are re-exported
here under their historical names."""

from kdcore.losses.features import (
    DISTANCE_FUNCTIONS,
    DISTANCES,
    STUDENT_TRANSFORMS,
    TEACHER_TRANSFORMS,
    FeatureKD,
    PairCheck,
    attention_map,
    check_pair,
    margins_from_bn,
)
from kdcore.losses.logits import (
    CrossEntropyOnly,
    LogitLoss,
    build_logit_loss,
    log_soft_labels,
    soft_labels,
)
from kdcore.losses.presets import PRESETS, FeaturePreset, build_feature_kd, get_preset

# Resolved on first use: the method modules import this package's helpers.
_FROM_METHODS = {"HintonKD": "kdcore.methods.kd", "LogitMatching": "kdcore.methods.logit_matching",
                 "DKD": "kdcore.methods.dkd"}


def __getattr__(name: str):
    if name in _FROM_METHODS:
        import importlib

        return getattr(importlib.import_module(_FROM_METHODS[name]), name)
    if name == "LOGIT_METHODS":
        from kdcore.methods import all_methods

        return {"none": "No distillation: the student learns from the labels alone (cross-entropy).",
                **{r.name: f"{r.title}: {r.description}" for r in all_methods(family="logit")}}
    raise AttributeError(f"module 'kdcore.losses' has no attribute {name!r}")


__all__ = [
    "DISTANCE_FUNCTIONS",
    "DISTANCES",
    "DKD",
    "LOGIT_METHODS",
    "PRESETS",
    "STUDENT_TRANSFORMS",
    "TEACHER_TRANSFORMS",
    "CrossEntropyOnly",
    "FeatureKD",
    "FeaturePreset",
    "HintonKD",
    "LogitLoss",
    "LogitMatching",
    "PairCheck",
    "attention_map",
    "build_feature_kd",
    "build_logit_loss",
    "check_pair",
    "get_preset",
    "log_soft_labels",
    "margins_from_bn",
    "soft_labels",
]
