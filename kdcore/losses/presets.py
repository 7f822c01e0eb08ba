"""Feature-distillation methods as presets: each is only a choice of Φ_t, Φ_s, D and a weight.

There is no code path per method: ``build_feature_kd`` turns a preset and a (hint, guided)
shape pair into one ``FeatureKD``. A new method is a new entry here (or one new Φ or D)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from kdcore.errors import UnknownNameError
from kdcore.losses.features import FeatureKD, check_pair


@dataclass(frozen=True)
class FeaturePreset:
    name: str
    title: str
    phi_t: str
    phi_s: str
    distance: str
    weight: float
    #: where the hint is read: the layer's output, or before its ReLU (OFD reads the BN output)
    teacher_point: Literal["output", "pre_relu"]
    regressor_relu: bool
    description: str
    reference: str
    #: when phi_s is "identity" and the shapes differ, fall back to a regressor instead of failing
    regressor_if_needed: bool = False


PRESETS: dict[str, FeaturePreset] = {
    p.name: p
    for p in (
        FeaturePreset(
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
        ),
        FeaturePreset(
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
        ),
        FeaturePreset(
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
        ),
        FeaturePreset(
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
        ),
        FeaturePreset(
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
        ),
    )
}


def get_preset(name: str) -> FeaturePreset:
    """The preset called ``name``; UnknownNameError listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise UnknownNameError(
            f"Unknown feature distillation preset {name!r}; choose one of: {', '.join(PRESETS)}."
        ) from None


def preset_student_transform(preset: FeaturePreset, teacher_shape, student_shape) -> str:
    """The Φ_s the preset uses for this pair (``identity`` may become ``regressor`` if the preset allows)."""
    if preset.regressor_if_needed and preset.phi_s == "identity":
        check = check_pair(teacher_shape, student_shape, preset.phi_t, "identity", preset.distance)
        if not check.ok and check.transform.startswith("regressor"):
            return "regressor"
    return preset.phi_s


def build_feature_kd(
    preset: FeaturePreset | str,
    teacher_shape: tuple[int, ...],
    student_shape: tuple[int, ...],
    teacher_bn: nn.BatchNorm2d | None = None,
    weight: float | None = None,
) -> FeatureKD:
    """One FeatureKD for a (hint, guided) pair configured by ``preset`` (a preset or its name);
    ``weight`` overrides the preset's weight. Raises IncompatibleLayersError for pairs it cannot bridge."""
    if isinstance(preset, str):
        preset = get_preset(preset)
    return FeatureKD(
        teacher_shape,
        student_shape,
        phi_t=preset.phi_t,
        phi_s=preset_student_transform(preset, teacher_shape, student_shape),
        distance=preset.distance,
        weight=preset.weight if weight is None else weight,
        teacher_bn=teacher_bn,
        regressor_relu=preset.regressor_relu,
    )
