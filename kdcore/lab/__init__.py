"""The dark-knowledge lab's logic, without any UI: shipped teachers and their logits (assets),
soft-label statistics at a temperature ρ (softlabels), the soft term's gradient against ρ (gradients),
Hinton's bias correction for an omitted class (bias) and the one-click experiments (experiments)."""
from kdcore.lab.assets import LAB_DATASETS, LabBundle, bundle_path, load_bundle, load_lab_teacher, teacher_path
from kdcore.lab.bias import BiasFit, apply_class_bias, correction_table, fit_class_bias, per_class_accuracy
from kdcore.lab.gradients import soft_gradient_curve
from kdcore.lab.softlabels import (
                                   RHO_STEPS,
                                   effective_classes,
                                   entropy,
                                   entropy_curve,
                                   most_similar_pairs,
                                   similar_classes,
                                   similarity_matrix,
                                   soften,
)

__all__ = [
    "LAB_DATASETS", "LabBundle", "bundle_path", "load_bundle", "load_lab_teacher", "teacher_path",
    "BiasFit", "apply_class_bias", "correction_table", "fit_class_bias", "per_class_accuracy",
    "soft_gradient_curve",
    "RHO_STEPS", "effective_classes", "entropy", "entropy_curve", "most_similar_pairs", "similar_classes",
    "similarity_matrix", "soften",
]
