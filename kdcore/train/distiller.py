"""The distiller: student + frozen teacher + the chosen losses, returning (student_logits, {term: loss})."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdcore.errors import IncompatibleLayersError, KDError
from kdcore.losses.logits import LogitLoss
from kdcore.methods.api import EMBEDDING, Batch, BuildContext, Tap
from kdcore.spec import HintSpec, RunSpec


@dataclass(frozen=True)
class ResolvedHint:
    """A hint pair with the preset expanded and the teacher path moved to its pre-ReLU point if needed."""

    teacher_path: str
    student_path: str
    phi_t: str
    phi_s: str
    distance: str
    weight: float
    regressor_relu: bool
    teacher_bn_path: str | None
    label: str
    preset: str | None = None
    phi_s_auto: bool = False  # the preset may swap identity for a regressor when widths differ

    def student_transform(self, teacher_shape: tuple, student_shape: tuple) -> str:
        if not self.phi_s_auto:
            return self.phi_s
        from kdcore.losses.presets import get_preset, preset_student_transform

        return preset_student_transform(get_preset(self.preset), teacher_shape, student_shape)


def _pre_relu_point(model: nn.Module, path: str, side: str, what: str):
    """The pre-ReLU feature at `path` or the last one inside it (a block or stage of a zoo model)."""
    from kdcore.models.layers import pre_relu_points

    points = pre_relu_points(model)
    exact = [p for p in points if p.path == path]
    inside = [p for p in points if p.path.startswith(path + ".")]
    chosen = exact or inside[-1:]
    if not chosen:
        raise IncompatibleLayersError(
            f"{side} layer {path} has no pre-ReLU feature with a BN before it, which {what} needs; "
            "pick a block or stage of a zoo model")
    return chosen[0]


def resolve_hint(hint: HintSpec, teacher: nn.Module, student: nn.Module | None = None) -> ResolvedHint:
    """The pair with its preset expanded; the teacher (and, where the preset reads it there, the student)
    layer moved to its pre-ReLU point. Without `student` the student layer is taken as given."""
    from kdcore.losses.presets import get_preset

    preset = get_preset(hint.preset) if hint.preset else None
    phi_t = hint.phi_t or preset.phi_t
    phi_s = hint.phi_s or preset.phi_s
    distance = hint.distance or preset.distance
    weight = hint.weight if hint.weight is not None else (preset.weight if preset else 1.0)
    teacher_path, bn_path = hint.teacher_layer, None
    what = preset.title if preset else "margin ReLU"
    needs_pre_relu = phi_t == "margin_relu" or (preset is not None and preset.teacher_point == "pre_relu")
    if needs_pre_relu:
        point = _pre_relu_point(teacher, teacher_path, "teacher", what)
        teacher_path, bn_path = point.path, point.bn_path
    student_path = hint.student_layer
    if student is not None and preset is not None and preset.student_point == "pre_relu":
        student_path = _pre_relu_point(student, student_path, "student", what).path
    label = f"{hint.preset or distance}:{hint.student_layer}"
    return ResolvedHint(teacher_path, student_path, phi_t, phi_s, distance, float(weight),
                        bool(preset.regressor_relu) if preset else False, bn_path, label,
                        preset=hint.preset, phi_s_auto=hint.phi_s is None and bool(preset and preset.regressor_if_needed))


def resolve_hints(hints: Sequence[HintSpec], teacher: nn.Module, student: nn.Module) -> list[ResolvedHint]:
    """Every pair resolved; a preset with stage weights (OFD) weights its i-th of n pairs, in spec order,
    by 1/2^(n−i−1) on top of the pair's weight, as Heo et al. weight their stages."""
    from dataclasses import replace

    from kdcore.losses.presets import get_preset

    resolved = [resolve_hint(h, teacher, student) for h in hints]
    for name in {h.preset for h in hints if h.preset and get_preset(h.preset).stage_weights}:
        mine = [i for i, h in enumerate(hints) if h.preset == name]
        for rank, i in enumerate(mine):
            resolved[i] = replace(resolved[i], weight=resolved[i].weight / 2 ** (len(mine) - rank - 1))
    return resolved


class Distiller(nn.Module):
    """Student + frozen teacher + the chosen losses. Sums nothing itself: the trainer adds up the returned
    terms so every term gets its own curve.

    Each step it receives a batch (inputs, labels, sample indices, epoch), runs the models once with
    hooks on every layer output or input a loss declared, and hands each loss what it asked for: the
    logit loss the logits, each hint pair its two features, each further method a ``Batch``."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, logit_loss: nn.Module,
                 hints: list[ResolvedHint], input_shape: tuple[int, int, int],
                 methods: Sequence[tuple[str, nn.Module]] = (), context: BuildContext | None = None,
                 student_view: nn.Module | None = None):
        super().__init__()
        from kdcore.losses.features import FeatureKD
        from kdcore.models.layers import FeatureHooks, list_layers

        self.student = student
        self.student_view = student_view  # the student's own view of each input; None = the teacher's
        self.teacher = teacher  # a submodule so .to(device) moves it; excluded from the optimiser
        self.logit_loss = logit_loss
        self.hints = hints
        self.feature_losses = nn.ModuleList()
        self.methods = nn.ModuleList(loss for _, loss in methods)
        self.method_names = _term_prefixes([name for name, _ in methods])
        self._t_hooks = self._s_hooks = None
        if (hints or methods) and teacher is None:
            raise KDError("hint pairs and feature or relation methods need a teacher")
        context = context or BuildContext(student, teacher, tuple(input_shape), 0, 0)
        if hints:
            t_shapes = {info.path: info.shape for info in list_layers(teacher, input_shape)}
            s_shapes = {info.path: info.shape for info in list_layers(student, context.input_shape_of("student"))}
            for h in hints:
                for path, shapes, who in ((h.teacher_path, t_shapes, "teacher"), (h.student_path, s_shapes, "student")):
                    if path not in shapes:
                        raise KDError(f"the {who} has no layer named '{path}'")
                bn = teacher.get_submodule(h.teacher_bn_path) if h.teacher_bn_path else None
                t_shape, s_shape = t_shapes[h.teacher_path], s_shapes[h.student_path]
                self.feature_losses.append(FeatureKD(
                    t_shape, s_shape, phi_t=h.phi_t, phi_s=h.student_transform(t_shape, s_shape),
                    distance=h.distance, weight=h.weight, teacher_bn=bn, regressor_relu=h.regressor_relu))
        # every tap a method declared, with EMBEDDING resolved to the classifier's input
        self._taps: list[tuple[Tap, Tap]] = [(tap, context.resolve(tap))
                                             for loss in self.methods for tap in getattr(loss, "taps", ())]
        if hints or self._taps:
            for side, model in (("teacher", teacher), ("student", student)):
                outputs = [h.teacher_path if side == "teacher" else h.student_path for h in hints]
                outputs += [real.layer for _, real in self._taps if real.side == side and real.io == "output"]
                inputs = [real.layer for _, real in self._taps if real.side == side and real.io == "input"]
                hooks = FeatureHooks(model, outputs, input_paths=inputs)
                if side == "teacher":
                    self._t_hooks = hooks
                else:
                    self._s_hooks = hooks
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        # What a step calls, resolved once: plain attributes, not a walk through nn.Module's submodule lookup
        # and the checks below on every step (a few µs each, on steps of a few ms).
        self.__dict__["_run_student"] = student
        self._needs_teacher_forward = bool(hints) or any(real.side == "teacher" for _, real in self._taps)
        self._logit_terms = logit_loss.checked_terms if isinstance(logit_loss, LogitLoss) else self._any_loss_terms

    def use_compiled_student(self, compiled) -> None:
        # Kept outside the module tree: a registered OptimizedModule would duplicate the student's weights.
        self.__dict__["_run_student"] = compiled

    def _any_loss_terms(self, z_s: Tensor, z_t: Tensor | None, y: Tensor, epoch: float) -> dict[str, Tensor]:
        """A logit loss that is not a LogitLoss: its terms but "total"."""
        return {k: v for k, v in self.logit_loss(z_s, z_t, y, epoch=epoch).items() if k != "total"}

    @property
    def needs_teacher_forward(self) -> bool:
        """Whether a step must run the teacher even when its logits are cached: some loss reads its layers."""
        return self._needs_teacher_forward

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and student-side transforms and method heads: never the teacher."""
        return (list(self.student.parameters()) + list(self.feature_losses.parameters())
                + list(self.methods.parameters()))

    def loss_state(self) -> dict[str, dict]:
        """The losses' own state (regressors, margins, memory banks), checkpointed with the run."""
        return {"feature_losses": self.feature_losses.state_dict(), "methods": self.methods.state_dict()}

    def load_loss_state(self, state: dict) -> None:
        self.feature_losses.load_state_dict(state["feature_losses"])
        if state.get("methods") is not None:
            self.methods.load_state_dict(state["methods"])

    def train(self, mode: bool = True) -> "Distiller":
        """Everything but the teacher, which stays in eval mode (BN statistics, dropout) whatever happens.
        The teacher's tree is not walked each epoch: it is put back only if something switched it."""
        self.training = mode
        for child in self.children():
            if child is not self.teacher:
                child.train(mode)
        if self.teacher is not None and self.teacher.training:
            self.teacher.eval()
        return self

    def forward(self, x: Tensor, y: Tensor, *, epoch: float = 0, teacher_logits: Tensor | None = None,
                hint_only: bool = False, indices: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """One step's losses for inputs ``x``, labels ``y`` (-1 = unlabelled), the samples' ``indices``
        in the transfer set and the ``epoch`` (from 1). Returns (student logits, {term: tensor})."""
        if self._s_hooks is not None:
            self._s_hooks.clear()
            self._t_hooks.clear()
        x_s = x if self.student_view is None else self.student_view(x)
        z_s = self._run_student(x_s)
        if (teacher_logits is None or self._needs_teacher_forward) and self.teacher is not None:
            with torch.no_grad():
                z_t = self.teacher(x)
            teacher_logits = z_t if teacher_logits is None else teacher_logits
        # the logit loss's terms alone: the trainer adds every term up
        losses: dict[str, Tensor] = {} if hint_only else self._logit_terms(z_s, teacher_logits, y, epoch)
        if self.hints:
            for i, (h, loss_fn) in enumerate(zip(self.hints, self.feature_losses)):
                f_t = self._t_hooks.outputs[h.teacher_path]
                f_s = self._s_hooks.outputs[h.student_path]
                losses[f"hint{i}_{h.distance}"] = loss_fn(f_t.float(), f_s.float())
        if self.method_names:
            batch = Batch(inputs=x, labels=y, indices=indices, epoch=epoch, student_logits=z_s,
                          teacher_logits=teacher_logits, features=self._tapped())
            for prefix, loss_fn in zip(self.method_names, self.methods):
                for term, value in loss_fn(batch).items():
                    if term != "total":
                        losses[f"{prefix}_{term}"] = value
        return z_s, losses

    def _tapped(self) -> dict[Tap, Tensor]:
        out = {}
        for tap, real in self._taps:
            hooks = self._t_hooks if real.side == "teacher" else self._s_hooks
            value = (hooks.outputs if real.io == "output" else hooks.inputs)[real.layer]
            if tap.layer == EMBEDDING:
                value = value.flatten(1)
            out[tap] = value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
        return out

    def close(self) -> None:
        for hooks in (self._t_hooks, self._s_hooks):
            if hooks is not None:
                hooks.remove()


def _term_prefixes(names: list[str]) -> list[str]:
    """Method names as loss-term prefixes; a method used twice gets a number (rkd0, rkd1)."""
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if counts[n] > 1:
            out.append(f"{n}{seen.get(n, 0)}")
            seen[n] = seen.get(n, 0) + 1
        else:
            out.append(n)
    return out


def build_logit_loss_for(spec: RunSpec) -> nn.Module:
    """The spec's logit method, built from its parameters (labels only without a teacher)."""
    from kdcore.losses import build_logit_loss
    from kdcore.methods import build_loss

    if spec.teacher is None:
        return build_logit_loss("none")
    return build_loss(spec.logit, None)


def build_methods(spec: RunSpec, context: BuildContext) -> list[tuple[str, nn.Module]]:
    """Each entry of ``spec.losses`` built by its registered method: (method name, loss)."""
    from kdcore.methods import build_loss

    if spec.teacher is None:
        return []
    return [(params.method, build_loss(params, context)) for params in spec.losses]
