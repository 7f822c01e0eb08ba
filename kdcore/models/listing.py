"""Each model's layers at its own input shape: the teacher sees the dataset's input, a student with a view
(`student_input`: downscaled, grey, cropped) sees that view, so its layers, their output shapes and its
stages are those of the view. What `python -m kdcore layers --view` prints and what a form lists.

    shapes = input_shapes((1, 28, 28), {"size": 14})       # {"teacher": (1, 28, 28), "student": (1, 14, 14)}
    pair = pair_layers("lenet5", "lenet5_half", 10, (1, 28, 28), {"size": 14})
    pair.student.input_shape, pair.student.candidates, pair.stage_pairs
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from kdcore.errors import KDError
from kdcore.models.layers import LayerInfo, align_stages, hint_candidates, list_layers, stage_paths

if TYPE_CHECKING:
    from kdcore.spec import InputViewSpec

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class ModelLayers:
    """One model listed at the input shape it sees."""

    name: str
    input_shape: Shape
    layers: list[LayerInfo]  # every module, in definition order (output shapes at `input_shape`)
    candidates: list[LayerInfo]  # the layers worth distilling between (`hint_candidates`)
    stages: list[str]  # what multi-stage methods (FSP, VID, ReviewKD, ...) read by default; [] if none
    parameters: int


@dataclass(frozen=True)
class PairLayers:
    """A teacher and a student, each listed at its own input shape, and the stages a multi-stage method
    pairs by default (deepest aligned; [] when either model has no stage with a feature map)."""

    teacher: ModelLayers
    student: ModelLayers
    stage_pairs: list[tuple[str, str]]


def student_input_shape(input_shape: Shape, student_input: InputViewSpec | Mapping[str, Any] | None = None) -> Shape:
    """The (C, H, W) a student sees: the dataset's, or the one its view gives (e.g. {"size": 14})."""
    view = _view(student_input)
    return tuple(int(v) for v in (view.shape_for(tuple(input_shape)) if view else input_shape))  # type: ignore[return-value]


def input_shapes(input_shape: Shape, student_input: InputViewSpec | Mapping[str, Any] | None = None) -> dict[str, Shape]:
    """{"teacher": the dataset's (C, H, W), "student": the shape its view gives (the same without a view)}."""
    return {"teacher": tuple(int(v) for v in input_shape),  # type: ignore[dict-item]
            "student": student_input_shape(input_shape, student_input)}


def model_layers(model: str | nn.Module, num_classes: int, input_shape: Shape) -> ModelLayers:
    """A zoo model (built for `input_shape`) or a given module, listed from one dry run at `input_shape`."""
    from kdcore.models import build_model, count_parameters

    shape: Shape = tuple(int(v) for v in input_shape)  # type: ignore[assignment]
    if isinstance(model, str):
        name, module = model, build_model(model, num_classes, in_channels=shape[0], input_size=shape[1])
    else:
        name, module = type(model).__name__, model
    layers = list_layers(module, shape)
    return ModelLayers(name=name, input_shape=shape, layers=layers, candidates=hint_candidates(module, layers),
                       stages=stage_paths(module, shape, layers), parameters=count_parameters(module))


def pair_layers(teacher: str | nn.Module, student: str | nn.Module, num_classes: int, input_shape: Shape,
                student_input: InputViewSpec | Mapping[str, Any] | None = None) -> PairLayers:
    """The teacher listed at the dataset's `input_shape`, the student at its view's shape, and the stages a
    multi-stage method pairs between them by default."""
    shapes = input_shapes(input_shape, student_input)
    t, s = model_layers(teacher, num_classes, shapes["teacher"]), model_layers(student, num_classes, shapes["student"])
    pairs = list(zip(*align_stages(t.stages, s.stages))) if t.stages and s.stages else []
    return PairLayers(teacher=t, student=s, stage_pairs=pairs)


def _view(student_input: InputViewSpec | Mapping[str, Any] | None) -> InputViewSpec | None:
    from pydantic import ValidationError

    from kdcore.spec import InputViewSpec, format_validation_error

    if student_input is None or isinstance(student_input, InputViewSpec):
        return student_input
    try:
        return InputViewSpec.model_validate(dict(student_input))
    except ValidationError as err:
        raise KDError(f"the student's view: {'; '.join(format_validation_error(err))}.") from None
