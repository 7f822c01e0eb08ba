"""What a distillation method is made of: its parameters, what it reads from a batch, and its loss.

A method module defines a parameters model (a ``MethodParams`` subclass whose defaults are the
authors' settings), a loss (an ``nn.Module``) and registers them with ``register_method``
(see ``kdcore/methods/registry.py`` and docs/adding-a-method.md).

Two loss shapes exist, by family:
- ``logit`` methods build a ``kdcore.losses.LogitLoss``: ``forward(z_s, z_t, y, epoch)`` → terms.
- ``feature`` and ``relation`` methods build a ``MethodLoss``: ``forward(batch)`` → terms, where
  ``batch`` is a ``Batch`` carrying the logits, labels, sample indices, the epoch and every layer
  output or input the loss declared in ``taps``.
Terms are the *weighted* contributions, keyed by a short name; the trainer sums them and logs each.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

from kdcore.errors import KDError
from kdcore.methods.params import MethodParams

Family = Literal["logit", "feature", "relation"]
Side = Literal["teacher", "student"]

#: the layer name that means "the penultimate embedding": the input of the model's classifier, flattened
EMBEDDING = "@embedding"


@dataclass(frozen=True)
class Needs:
    """What a method reads from a batch, declared for people and tools (the listing, the form).
    The layers it actually hooks are the ``taps`` of the loss it builds."""

    logits: bool = True  # student (and teacher) logits
    layers: bool = False  # the outputs of named layers
    inputs: bool = False  # the inputs of named layers (pre-activation features)
    embedding: bool = False  # the penultimate embedding (the classifier's input)
    stages: bool = False  # several stages at once (fused or compared together)
    indices: bool = False  # each sample's index in the transfer set, and the set's size
    epoch: bool = False  # the (fractional) epoch, for warm-ups and schedules
    labels: bool = False  # the ground-truth labels (-1 marks an unlabelled sample)

    def describe(self) -> list[str]:
        words = {"logits": "logits", "layers": "layer outputs", "inputs": "layer inputs (pre-activation)",
                 "embedding": "penultimate embedding", "stages": "several stages", "indices": "sample indices",
                 "epoch": "epoch", "labels": "labels"}
        return [text for key, text in words.items() if getattr(self, key)]


@dataclass(frozen=True)
class Tap:
    """One tensor a loss reads: a layer's output (or input) on the teacher or the student.
    ``layer`` is a module path (``layer2.1.bn2``) or ``EMBEDDING``."""

    side: Side
    layer: str
    io: Literal["output", "input"] = "output"


@dataclass
class Batch:
    """What a feature or relation method receives at each step.

    ``labels`` uses -1 for an unlabelled sample; ``indices`` are the samples' positions in the transfer
    set (``ctx.dataset_size`` long); ``epoch`` counts from 1 and is fractional within an epoch."""

    inputs: Tensor
    labels: Tensor
    indices: Tensor | None
    epoch: float
    student_logits: Tensor
    teacher_logits: Tensor | None
    features: dict[Tap, Tensor] = field(default_factory=dict)

    def student(self, layer: str, io: Literal["output", "input"] = "output") -> Tensor:
        return self._get(Tap("student", layer, io))

    def teacher(self, layer: str, io: Literal["output", "input"] = "output") -> Tensor:
        return self._get(Tap("teacher", layer, io))

    def _get(self, tap: Tap) -> Tensor:
        try:
            return self.features[tap]
        except KeyError:
            raise KDError(f"the method read the {tap.side}'s {tap.layer} {tap.io} without declaring it in its "
                          "taps") from None


class MethodLoss(nn.Module):
    """Base of feature and relation losses: declare ``taps``, implement ``forward(batch) -> {term: tensor}``.

    Anything the loss keeps across steps (a memory bank, a running statistic) belongs in a parameter or
    a registered buffer: the trainer checkpoints the loss's ``state_dict`` with the run and restores it
    on resume. Trainable parameters (regressors, embedding heads) are optimised with the student."""

    taps: tuple[Tap, ...] = ()

    def forward(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass
class BuildContext:
    """What a method may look at while it builds its loss: the two models, the input shape, the number
    of classes and of transfer samples, and the per-sample shape of any layer (one dry run, cached)."""

    student: nn.Module
    teacher: nn.Module | None
    input_shape: tuple[int, int, int]
    num_classes: int
    dataset_size: int
    student_input_shape: tuple[int, int, int] | None = None  # the student's own view, when it differs
    _shapes: dict[Tap, tuple[int, ...]] = field(default_factory=dict, repr=False)

    def model(self, side: Side) -> nn.Module:
        model = self.teacher if side == "teacher" else self.student
        if model is None:
            raise KDError("this method needs a teacher")
        return model

    def resolve(self, tap: Tap) -> Tap:
        """The tap with ``EMBEDDING`` replaced by the input of the model's classifier."""
        if tap.layer != EMBEDDING:
            return tap
        from kdcore.models.layers import classifier_path

        path = classifier_path(self.model(tap.side))
        if path is None:
            raise KDError(f"the {tap.side} has no Linear classifier, so it has no penultimate embedding")
        return Tap(tap.side, path, "input")

    def shape(self, tap: Tap) -> tuple[int, ...]:
        """The tensor's shape without the batch dimension (an embedding is flattened)."""
        if tap not in self._shapes:
            from kdcore.models.layers import tap_shapes

            real = self.resolve(tap)
            shape = tap_shapes(self.model(tap.side), self.input_shape_of(tap.side),
                               [(real.layer, real.io)])[(real.layer, real.io)]
            if tap.layer == EMBEDDING:
                shape = (_prod(shape),)
            self._shapes[tap] = shape
        return self._shapes[tap]

    def input_shape_of(self, side: Side) -> tuple[int, int, int]:
        """The input shape the model on `side` sees (the student may see a downscaled or grey view)."""
        if side == "student" and self.student_input_shape is not None:
            return self.student_input_shape
        return self.input_shape

    def layer(self, side: Side, path: str) -> nn.Module:
        return self.model(side).get_submodule(path)


def stage_pairs(ctx: BuildContext, params: Any) -> list[tuple[str, str]]:
    """(teacher, student) stage paths for a multi-stage method: the ones its parameters name
    (``teacher_layers``, ``student_layers``), or each model's stages at the input shape it sees, the
    deepest paired when the counts differ."""
    from kdcore.models.layers import paired_stages

    t, s = paired_stages(ctx.model("teacher"), ctx.student, ctx.input_shape_of("teacher"),
                         params.teacher_layers, params.student_layers,
                         student_input_shape=ctx.input_shape_of("student"))
    return list(zip(t, s))


def pair_taps(pairs: list[tuple[str, str]]) -> tuple[Tap, ...]:
    """The taps reading each pair's teacher and student layer outputs."""
    return tuple(Tap(side, path) for pair in pairs for side, path in zip(("teacher", "student"), pair))


def paired_stage_taps(ctx: BuildContext, params: Any) -> tuple[list[tuple[str, str]], tuple[Tap, ...]]:
    """`stage_pairs` and the taps that read them."""
    pairs = stage_pairs(ctx, params)
    return pairs, pair_taps(pairs)


def _prod(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= int(d)
    return out


def describe_params(params: type[MethodParams]) -> list[dict[str, Any]]:
    """Each parameter with its type, default, range and description (the listing and the form read this)."""
    out = []
    for name, info in params.model_fields.items():
        if name == "method":
            continue
        bounds = {}
        for m in info.metadata:
            for key in ("ge", "gt", "le", "lt"):
                if getattr(m, key, None) is not None:
                    bounds[key] = getattr(m, key)
        annotation = info.annotation
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        out.append({"name": name, "type": _type_name(annotation), "default": info.get_default(call_default_factory=True),
                    "title": info.title or name.replace("_", " "), "description": info.description or "", **bounds,
                    **({"choices": list(annotation.__args__)} if _is_literal(annotation) else {}),
                    **({"layer": extra["layer"]} if extra.get("layer") else {}),
                    **({"choice_labels": dict(extra["choice_labels"])} if extra.get("choice_labels") else {})})
    return out


def layer_field(side: Side, default: str = EMBEDDING, description: str = "") -> Any:
    """A parameter naming one layer of the teacher or the student (the form shows a layer picker).
    ``EMBEDDING`` means the penultimate embedding."""
    return Field(default, title=f"{side.title()} layer", description=description or f"the {side} layer to read",
                 json_schema_extra={"layer": side})


def layers_field(side: Side, description: str = "") -> Any:
    """A parameter naming several layers (stages) of one model, in order; empty = the method's choice."""
    return Field(default_factory=list, title=f"{side.title()} layers",
                 description=description or f"the {side} layers to read, in order",
                 json_schema_extra={"layer": side})


def _is_literal(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is Literal


def _type_name(annotation: Any) -> str:
    if _is_literal(annotation):
        return "choice"
    if getattr(annotation, "__origin__", None) is not None:  # list[str], dict[...]: the written form
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


__all__ = ["EMBEDDING", "Batch", "BuildContext", "Family", "MethodLoss", "MethodParams", "Needs", "Tap",
           "describe_params", "layer_field", "layers_field", "pair_taps", "paired_stage_taps", "stage_pairs"]
