"""Neuron selectivity transfer: matching the distribution of channel activations with an MMD.

A hint-pair preset of Φ_t, Φ_s and D: data, no code path of its own."""
from kdcore.losses.presets import FeaturePreset
from kdcore.methods.registry import register_preset

PRESET = register_preset(FeaturePreset(
    name="nst",
    title="Neuron selectivity transfer",
    phi_t="identity",
    phi_s="identity",
    distance="mmd",
    weight=50.0,
    teacher_point="output",
    regressor_relu=False,
    description="Match the distributions of the channels' normalised spatial maps with a squared "
    "MMD and the polynomial kernel (xᵀy)²; channel counts may differ.",
    reference="Huang & Wang, Like What You Like: Knowledge Distill via Neuron Selectivity Transfer, 2017",
), order=2)
