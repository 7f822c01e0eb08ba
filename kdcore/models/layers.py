"""Layers addressed by module path: listing with output shapes (one dry run), forward hooks that
collect features, pre-ReLU points for OFD, and a shape check for a (hint, guided) pair."""
from __future__ import annotations

import difflib
import weakref
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from kdcore.errors import IncompatibleLayersError, KDError, UnknownNameError
from kdcore.models.blocks import PreAct
from kdcore.models.stats import dry_input, eval_mode

if TYPE_CHECKING:  # written by the losses engineer; imported lazily at run time
    from kdcore.losses.features import PairCheck


@dataclass(frozen=True)
class LayerInfo:
    path: str
    type: str
    shape: tuple[int, ...]  # output shape without the batch dimension; () when not a single tensor
    params: int  # the module's own parameters (recurse=False)
    calls: int = 1  # times the module ran in one forward: 0 = unused, > 1 = shared (a hook keeps the last call)


@dataclass(frozen=True)
class PreReluPoint:
    path: str  # a module whose output is the pre-ReLU feature
    bn_path: str  # the BatchNorm whose affine parameters give OFD's margins
    stage_end: bool = False  # the last block of a stage (the points RepDistiller's OFD distils)


def list_layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerInfo]:
    """Every named module (the root excluded) with its output shape from one dry run: eval mode,
    no grad, a batch of 2 zeros on the model's device; each module's train/eval flag is restored."""
    shapes: dict[str, tuple[int, ...]] = {}
    calls: Counter[str] = Counter()

    def hook_for(path: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            calls[path] += 1
            shapes[path] = tuple(output.shape[1:]) if isinstance(output, Tensor) else ()

        return hook

    named = [(path, module) for path, module in model.named_modules() if path]
    handles = [module.register_forward_hook(hook_for(path)) for path, module in named]
    try:
        _dry_run(model, input_shape)
    finally:
        for handle in handles:
            handle.remove()
    return [
        LayerInfo(
            path=path,
            type=type(module).__name__,
            shape=shapes.get(path, ()),
            params=sum(p.numel() for p in module.parameters(recurse=False)),
            calls=calls[path],
        )
        for path, module in named
    ]


def layer_output_shapes(model: nn.Module, input_shape: tuple[int, int, int], paths: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Output shapes (batch excluded) of a few layers from one dry run; () for a non-tensor output."""
    with FeatureHooks(model, paths) as hooks:
        _dry_run(model, input_shape)
        return {p: tuple(out.shape[1:]) if isinstance(out, Tensor) else () for p, out in hooks.outputs.items()}


def tap_shapes(model: nn.Module, input_shape: tuple[int, int, int],
               taps: Sequence[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, ...]]:
    """Shapes (batch excluded) of layer outputs or inputs, `taps` as (path, "output" | "input"), from one
    dry run; () for a non-tensor."""
    outs = [path for path, io in taps if io == "output"]
    ins = [path for path, io in taps if io == "input"]
    with FeatureHooks(model, outs, input_paths=ins) as hooks:
        _dry_run(model, input_shape)
        found = {**{(p, "output"): v for p, v in hooks.outputs.items()},
                 **{(p, "input"): v for p, v in hooks.inputs.items()}}
    return {key: tuple(v.shape[1:]) if isinstance(v, Tensor) else () for key, v in found.items()}


def _dry_run(model: nn.Module, input_shape: tuple[int, int, int]) -> None:
    x = dry_input(model, tuple(input_shape), batch=2)
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KDError(
            f"{type(model).__name__} cannot run on inputs of shape {tuple(input_shape)}: {first_line}"
        ) from err


class FeatureHooks:
    """Collects the outputs of modules chosen by path during forward passes.

        with FeatureHooks(model, ["layer1.0.bn2", "fc"]) as hooks:
            model(x)
            hooks.outputs["fc"]

    Outputs keep their graph (distillation needs gradients through the student's features) unless
    `detach=True`. While hooks are attached every `inplace` activation/dropout in the model runs
    out of place, so a stored feature is never overwritten by the ReLU that follows it (torchvision
    uses `ReLU(inplace=True)` after BN); the flags are restored on `remove()`."""

    def __init__(self, model: nn.Module, paths: Sequence[str], *, detach: bool = False,
                 input_paths: Sequence[str] = ()) -> None:
        self.model = model
        self.paths: tuple[str, ...] = tuple(dict.fromkeys(paths))
        self.input_paths: tuple[str, ...] = tuple(dict.fromkeys(input_paths))
        self.detach = detach
        self.outputs: dict[str, Tensor] = {}
        self.inputs: dict[str, Tensor] = {}  # first positional input of each of `input_paths`
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        modules = dict(model.named_modules())
        for path in self.paths + self.input_paths:
            if path not in modules:
                raise UnknownNameError(_unknown_layer_message(model, path, modules))
        _inplace_off(model)
        self._attached = True
        self._handles = [modules[path].register_forward_hook(self._hook_for(path)) for path in self.paths]
        self._handles += [modules[path].register_forward_hook(self._input_hook_for(path))
                          for path in self.input_paths]

    def _keep(self, value: Any) -> Any:
        return value.detach() if self.detach and isinstance(value, Tensor) else value

    def _hook_for(self, path: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.outputs[path] = self._keep(output)

        return hook

    def _input_hook_for(self, path: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self.inputs[path] = self._keep(inputs[0] if isinstance(inputs, tuple) and inputs else inputs)

        return hook

    def clear(self) -> None:
        """Forget collected tensors (call between steps so old graphs can be freed)."""
        self.outputs.clear()
        self.inputs.clear()

    def remove(self) -> None:
        """Detach every hook and restore in-place flags; safe to call twice."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._attached:
            self._attached = False
            _inplace_restore(self.model)

    def __enter__(self) -> FeatureHooks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _unknown_layer_message(model: nn.Module, path: str, modules: dict[str, nn.Module]) -> str:
    close = difflib.get_close_matches(path, [p for p in modules if p], n=4, cutoff=0.5)
    where = type(model).__name__
    if close:
        return f"unknown layer '{path}' in {where}; did you mean {', '.join(close)}?"
    return f"unknown layer '{path}' in {where}; `python -m kdcore layers MODEL --dataset NAME --all` lists every valid path."


# model -> [number of attached FeatureHooks, {module: original inplace flag}]
_INPLACE_SAVED: weakref.WeakKeyDictionary[nn.Module, list[Any]] = weakref.WeakKeyDictionary()


def _inplace_off(model: nn.Module) -> None:
    if model in _INPLACE_SAVED:
        _INPLACE_SAVED[model][0] += 1
        return
    saved = {m: True for m in model.modules() if getattr(m, "inplace", None) is True}
    for module in saved:
        module.inplace = False
    _INPLACE_SAVED[model] = [1, saved]


def _inplace_restore(model: nn.Module) -> None:
    entry = _INPLACE_SAVED.get(model)
    if entry is None:
        return
    entry[0] -= 1
    if entry[0] == 0:
        for module, flag in entry[1].items():
            module.inplace = flag
        del _INPLACE_SAVED[model]


def pre_relu_points(model: nn.Module) -> list[PreReluPoint]:
    """The zoo's pre-ReLU features (one per block end), each with the BN giving OFD's margins.
    Models without `PreAct` markers (torchvision, user models) have none: []."""
    points = []
    for path, module in model.named_modules():
        if isinstance(module, PreAct):
            parent = path.rpartition(".")[0]
            bn_path = f"{parent}.{module.bn}" if parent else module.bn
            points.append(PreReluPoint(path=path, bn_path=bn_path, stage_end=module.stage_end))
    return points


def penultimate_path(model: nn.Module) -> str | None:
    """The layer whose output is the feature the classifier reads (zoo: declared; torchvision: avgpool)."""
    declared = getattr(model, "penultimate_layer", None)
    if isinstance(declared, str):
        return declared
    return "avgpool" if isinstance(getattr(model, "avgpool", None), nn.Module) else None


def classifier_path(model: nn.Module) -> str | None:
    """The layer producing the logits (zoo: declared; otherwise the last Linear module)."""
    declared = getattr(model, "classifier_layer", None)
    if isinstance(declared, str):
        return declared
    linears = [path for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


_HINT_LEAVES = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.Linear, nn.GroupNorm, nn.LayerNorm)


def hint_candidates(model: nn.Module, layers: list[LayerInfo]) -> list[LayerInfo]:
    """The layers worth distilling between: convs, norms, Linear layers, blocks and stages
    (modules with children), pre-ReLU points and the penultimate feature; activations, pooling,
    dropout and unused or non-tensor modules are left out."""
    keep_paths = {penultimate_path(model), classifier_path(model)}
    modules = dict(model.named_modules())
    kept = []
    for info in layers:
        if info.calls == 0 or not info.shape:
            continue
        module = modules[info.path]
        has_children = next(module.children(), None) is not None
        if info.path in keep_paths or isinstance(module, (PreAct, *_HINT_LEAVES)) or has_children:
            kept.append(info)
    return kept


def check_layer_pair(
    teacher: nn.Module,
    teacher_path: str,
    student: nn.Module,
    student_path: str,
    input_shape: tuple[int, int, int],
    phi_t: str = "identity",
    phi_s: str = "identity",
    distance: str = "l2",
    student_input_shape: tuple[int, int, int] | None = None,
) -> PairCheck:
    """Whether Φ_t(teacher[teacher_path]) and Φ_s(student[student_path]) can be compared with
    `distance`, judged on the output shapes of one dry run of each model (each on its own input shape:
    the student may see a downscaled or grey view)."""
    from kdcore.losses.features import check_pair

    t_shape = layer_output_shapes(teacher, input_shape, [teacher_path])[teacher_path]
    s_shape = layer_output_shapes(student, student_input_shape or input_shape, [student_path])[student_path]
    for owner, path, shape in (("teacher", teacher_path, t_shape), ("student", student_path, s_shape)):
        if not shape:
            raise IncompatibleLayersError(
                f"the {owner} layer '{path}' does not output a single tensor, so it cannot be distilled.")
    return check_pair(t_shape, s_shape, phi_t, phi_s, distance)


def stage_paths(model: nn.Module, input_shape: tuple[int, int, int],
                layers: Sequence[LayerInfo] | None = None) -> list[str]:
    """A model's stages, shallow to deep, for methods that read several (FSP, VID, ReviewKD, ...): among
    the top-level layers with a feature-map output (more than 1×1), the last of each run with the same
    channel count. A model whose top level holds one such run (a single `features` block) is read one
    level down. They depend on the input shape (a 7×7 view shrinks deep maps to 1×1), so pass the shape
    the model itself sees; `layers` reuses a listing made at that shape. `python -m kdcore layers MODEL`
    shows them; a spec may name stages itself."""
    layers = list(layers) if layers is not None else list_layers(model, input_shape)

    def runs_below(prefix: str) -> list[str]:
        depth = prefix.count(".") + 1 if prefix else 0
        chosen: list[tuple[str, int]] = []
        for info in layers:
            if info.path.count(".") != depth or not info.path.startswith(prefix) or info.calls != 1:
                continue
            if len(info.shape) != 3 or info.shape[1] * info.shape[2] <= 1:
                continue
            if chosen and chosen[-1][1] == info.shape[0]:
                chosen[-1] = (info.path, info.shape[0])
            else:
                chosen.append((info.path, info.shape[0]))
        return [path for path, _ in chosen]

    stages = runs_below("")
    if len(stages) == 1:
        deeper = runs_below(stages[0] + ".")
        if len(deeper) > 1:
            stages = deeper
    return stages


def paired_stages(teacher: nn.Module, student: nn.Module, input_shape: tuple[int, int, int],
                  teacher_paths: Sequence[str] = (), student_paths: Sequence[str] = (), *,
                  student_input_shape: tuple[int, int, int] | None = None) -> tuple[list[str], list[str]]:
    """Teacher and student stage lists of equal length: the given ones, or each model's `stage_paths` at
    its own input shape (`input_shape` for the teacher, `student_input_shape` for a student that sees
    another view); when the counts differ the deepest ones are paired (as mdistiller aligns its lists)."""
    t = list(teacher_paths) or stage_paths(teacher, input_shape)
    s = list(student_paths) or stage_paths(student, student_input_shape or input_shape)
    if (teacher_paths and student_paths) and len(t) != len(s):
        raise KDError(f"name as many teacher stages ({len(t)}) as student stages ({len(s)})")
    for side, model, found in (("teacher", teacher, t), ("student", student, s)):
        if not found:
            raise KDError(f"the {side} ({type(model).__name__}) has no stage with a feature map; pick a convolutional "
                          f"{side} or name its layers in the method's parameters")
    return align_stages(t, s)


def align_stages(teacher_stages: Sequence[str], student_stages: Sequence[str]) -> tuple[list[str], list[str]]:
    """The deepest stages of each list, as many as the shorter has (as mdistiller aligns its stage lists)."""
    n = min(len(teacher_stages), len(student_stages))
    return list(teacher_stages[len(teacher_stages) - n:]), list(student_stages[len(student_stages) - n:])
