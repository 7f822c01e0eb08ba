"""Feature-distillation methods as presets: each is only a choice of Φ_t, Φ_s, D and a weight.

There is no code path per method: ``build_feature_kd`` turns a preset and a (hint, guided)
shape pair into one ``FeatureKD``. Each preset is data registered in its own module of
kdcore/methods/ with ``register_preset`` (a new one is a new module, or one new Φ or D)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
    #: where the guided (student) feature is read: the layer's output, or before its ReLU (Heo's OFD)
    student_point: Literal["output", "pre_relu"] = "output"
    #: weight the preset's pairs by stage, in spec order (shallow to deep): pair i of n gets 1/2^(n−i−1)
    stage_weights: bool = False


class _RegisteredPresets(Mapping):
    """Every registered hint-pair preset by name (built-ins live in kdcore/methods/, one module each;
    installed packages add more), read from the method registry on each access."""

    def _current(self) -> dict[str, FeaturePreset]:
        from kdcore.methods import all_methods

        return {r.name: r.preset for r in all_methods(slot="hints")}

    def __getitem__(self, name: str) -> FeaturePreset:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


PRESETS: Mapping[str, FeaturePreset] = _RegisteredPresets()


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
