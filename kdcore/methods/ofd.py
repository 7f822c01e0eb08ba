"""Overhaul of feature distillation: pre-ReLU teacher features, margin ReLU and a partial L2.

A hint-pair preset of Φ_t, Φ_s and D: data, no code path of its own."""
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
    regressor_relu=False,
    description="The teacher's pre-ReLU features through a margin ReLU (margins from its BN) are "
    "matched by a 1×1 conv + BN connector with a partial L2 that skips what the ReLU would erase.",
    reference="Heo et al., A Comprehensive Overhaul of Feature Distillation, ICCV 2019",
))
