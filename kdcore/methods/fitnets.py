"""FitNets: the student's guided layer regresses the teacher's hint through a conv regressor.

A hint-pair preset of Φ_t, Φ_s and D: data, no code path of its own."""
from kdcore.losses.presets import FeaturePreset
from kdcore.methods.registry import register_preset

PRESET = register_preset(FeaturePreset(
    name="fitnets",
    title="FitNets (hints)",
    phi_t="identity",
    phi_s="regressor",
    distance="l2",
    weight=100.0,
    teacher_point="output",
    regressor_relu=True,
    description="The student's guided layer, through a 1×1 conv + BN + ReLU regressor, "
    "regresses the teacher's hint with mean squared error.",
    reference="Romero et al., FitNets: Hints for Thin Deep Nets, ICLR 2015",
), order=0)
