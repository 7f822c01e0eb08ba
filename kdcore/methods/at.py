"""Attention transfer: matching spatial attention maps of teacher and student.

A hint-pair preset of Φ_t, Φ_s and D: data, no code path of its own."""
from kdcore.losses.presets import FeaturePreset
from kdcore.methods.registry import register_preset

PRESET = register_preset(FeaturePreset(
    name="at",
    title="Attention transfer",
    phi_t="attention",
    phi_s="attention",
    distance="l2",
    weight=1000.0,
    teacher_point="output",
    regressor_relu=False,
    description="Match the normalised spatial attention maps (mean of squared activations over "
    "channels); channel counts may differ.",
    reference="Zagoruyko & Komodakis, Paying More Attention to Attention, ICLR 2017",
), order=1)
