"""The distiller: student + frozen teacher + the chosen losses, returning (student_logits, {term: loss})."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kdcore.errors import IncompatibleLayersError, KDError
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


def resolve_hint(hint: HintSpec, teacher: nn.Module) -> ResolvedHint:
    from kdcore.losses.presets import get_preset
    from kdcore.models.layers import pre_relu_points

    preset = get_preset(hint.preset) if hint.preset else None
    phi_t = hint.phi_t or preset.phi_t
    phi_s = hint.phi_s or preset.phi_s
    distance = hint.distance or preset.distance
    weight = hint.weight if hint.weight is not None else (preset.weight if preset else 1.0)
    teacher_path, bn_path = hint.teacher_layer, None
    needs_pre_relu = phi_t == "margin_relu" or (preset is not None and preset.teacher_point == "pre_relu")
    if needs_pre_relu:
        points = pre_relu_points(teacher)
        exact = [p for p in points if p.path == teacher_path]
        inside = [p for p in points if p.path.startswith(teacher_path + ".")]
        chosen = exact or inside[-1:]
        if not chosen:
            raise IncompatibleLayersError(
                f"teacher layer {teacher_path} has no pre-ReLU feature with a BN before it, which "
                f"{preset.title if preset else 'margin ReLU'} needs; pick a block or stage of a zoo model")
        teacher_path, bn_path = chosen[0].path, chosen[0].bn_path
    label = f"{hint.preset or distance}:{hint.student_layer}"
    return ResolvedHint(teacher_path, hint.student_layer, phi_t, phi_s, distance, float(weight),
                        bool(preset.regressor_relu) if preset else False, bn_path, label,
                        preset=hint.preset, phi_s_auto=hint.phi_s is None and bool(preset and preset.regressor_if_needed))


class Distiller(nn.Module):
    """Sums nothing itself: the trainer adds up the returned terms so every term gets its own curve."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None, logit_loss: nn.Module,
                 hints: list[ResolvedHint], input_shape: tuple[int, int, int]):
        super().__init__()
        from kdcore.losses.features import FeatureKD
        from kdcore.models.layers import FeatureHooks, list_layers

        self.student = student
        self.teacher = teacher  # a submodule so .to(device) moves it; excluded from the optimiser
        self.logit_loss = logit_loss
        self.hints = hints
        self.feature_losses = nn.ModuleList()
        self._t_hooks = self._s_hooks = None
        if hints:
            assert teacher is not None
            t_shapes = {l.path: l.shape for l in list_layers(teacher, input_shape)}
            s_shapes = {l.path: l.shape for l in list_layers(student, input_shape)}
            for h in hints:
                for path, shapes, who in ((h.teacher_path, t_shapes, "teacher"), (h.student_path, s_shapes, "student")):
                    if path not in shapes:
                        raise KDError(f"the {who} has no layer named '{path}'")
                bn = teacher.get_submodule(h.teacher_bn_path) if h.teacher_bn_path else None
                t_shape, s_shape = t_shapes[h.teacher_path], s_shapes[h.student_path]
                self.feature_losses.append(FeatureKD(
                    t_shape, s_shape, phi_t=h.phi_t, phi_s=h.student_transform(t_shape, s_shape),
                    distance=h.distance, weight=h.weight, teacher_bn=bn, regressor_relu=h.regressor_relu))
            self._t_hooks = FeatureHooks(teacher, [h.teacher_path for h in hints])
            self._s_hooks = FeatureHooks(student, [h.student_path for h in hints])
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)

    def use_compiled_student(self, compiled) -> None:
        # Kept outside the module tree: a registered OptimizedModule would duplicate the student's weights.
        self.__dict__["_compiled_student"] = compiled

    @property
    def needs_teacher_forward(self) -> bool:
        return bool(self.hints)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and student-side transforms: never the teacher."""
        return list(self.student.parameters()) + list(self.feature_losses.parameters())

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher stays in eval mode (BN statistics, dropout) whatever happens
        return self

    def forward(self, x: Tensor, y: Tensor, *, epoch: int = 0, teacher_logits: Tensor | None = None,
                hint_only: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        if self._s_hooks is not None:
            self._s_hooks.clear()
            self._t_hooks.clear()
        z_s = self.__dict__.get("_compiled_student", self.student)(x)
        if self.teacher is not None and (teacher_logits is None or self.needs_teacher_forward):
            with torch.no_grad():
                z_t = self.teacher(x)
            teacher_logits = z_t if teacher_logits is None else teacher_logits
        losses: dict[str, Tensor] = {}
        if not hint_only:
            terms = self.logit_loss(z_s, teacher_logits, y, epoch=epoch)
            losses.update({k: v for k, v in terms.items() if k != "total"})
        for i, (h, loss_fn) in enumerate(zip(self.hints, self.feature_losses)):
            f_t = self._t_hooks.outputs[h.teacher_path]
            f_s = self._s_hooks.outputs[h.student_path]
            losses[f"hint{i}_{h.distance}"] = loss_fn(f_t.float(), f_s.float())
        return z_s, losses

    def close(self) -> None:
        for hooks in (self._t_hooks, self._s_hooks):
            if hooks is not None:
                hooks.remove()


def build_logit_loss_for(spec: RunSpec) -> nn.Module:
    from kdcore.losses import build_logit_loss

    if spec.teacher is None:
        return build_logit_loss("none")
    lg = spec.logit
    if lg.method == "kd":
        return build_logit_loss("kd", alpha=lg.alpha, beta=lg.beta, rho=lg.rho, soft_loss=lg.soft_loss,
                                rho_squared=lg.rho_squared)
    if lg.method == "logit_matching":
        return build_logit_loss("logit_matching", alpha=lg.alpha, beta=lg.beta)
    return build_logit_loss("dkd", alpha=lg.dkd_alpha, beta=lg.dkd_beta, rho=lg.rho, ce_weight=lg.alpha,
                            warmup_epochs=lg.dkd_warmup_epochs)
