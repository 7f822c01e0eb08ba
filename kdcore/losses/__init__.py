"""Distillation losses: logit-based (L_LB) and feature-based (L_FB), plus the feature presets."""

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
    DKD,
    LOGIT_METHODS,
    CrossEntropyOnly,
    HintonKD,
    LogitLoss,
    LogitMatching,
    build_logit_loss,
    log_soft_labels,
    logit_method_params,
    soft_labels,
)
from kdcore.losses.presets import PRESETS, FeaturePreset, build_feature_kd, get_preset

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
    "logit_method_params",
    "margins_from_bn",
    "soft_labels",
]
