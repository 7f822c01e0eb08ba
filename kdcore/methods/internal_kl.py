"""KL divergence on internal representations.

A hint-pair preset of Φ_t, Φ_s and D: data, no code path of its own."""
from kdcore.losses.presets import FeaturePreset
from kdcore.methods.registry import register_preset

PRESET = register_preset(FeaturePreset(
    name="internal_kl",
    title="KL on internal representations",
    phi_t="identity",
    phi_s="identity",
    distance="kl",
    weight=1.0,
    teacher_point="output",
    regressor_relu=False,
    description="KL divergence between the softmax of the flattened teacher and student "
    "representations; a regressor is added when their widths differ.",
    reference="Aguilar et al., Knowledge Distillation from Internal Representations, AAAI 2020",
    regressor_if_needed=True,
), order=4)
