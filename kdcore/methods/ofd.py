"""Overhaul of feature distillation as Heo et al. define it: the teacher's and the student's pre-ReLU
features, a margin ReLU on the teacher, a 1×1 conv + BN connector on the student, a partial L2, and the
pairs (one per stage, given shallow to deep) weighted 1/2^(n−i−1), so the deepest counts most.
A hint-pair preset of Φ_t, Φ_s and D (data, no code path of its own)."""
from kdcore.losses.presets import FeaturePreset
from kdcore.methods.registry import register_preset

PRESET = register_preset(FeaturePreset(
    name="ofd",
    title="Overhaul of feature distillation",
    phi_t="margin_relu",
    phi_s="regressor",
    distance="partial_l2",
    weight=1e-3,
    teacher_point="pre_relu",
    student_point="pre_relu",
    stage_weights=True,
    regressor_relu=False,
    description="The teacher's pre-ReLU features through a margin ReLU (margins from its BN) are "
    "matched by the student's pre-ReLU features through a 1×1 conv + BN connector, with a partial L2 that "
    "skips what the ReLU would erase; pair i of n (shallow to deep) is weighted 1/2^(n−i−1).",
    reference="Heo et al., A Comprehensive Overhaul of Feature Distillation, ICCV 2019",
), order=3)
