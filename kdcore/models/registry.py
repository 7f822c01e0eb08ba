"""The model registry: names → builders, with the parsed families wrn_D_K and mlp_W1_W2_..."""
from __future__ import annotations

import difflib
import functools
import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from kdcore.errors import KDError, ModelTooLargeError, UnknownNameError

# A model is refused before it is built when it would have more parameters than this: a name such as
# mlp_200000_200000 must not make a process allocate hundreds of gigabytes. KD_MAX_MODEL_PARAMS overrides it.
DEFAULT_MAX_PARAMS = 500_000_000


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str  # "cifar-resnet", "wrn", "vgg", "mobilenet", "lenet", "mlp", "cnn", "torchvision"
    description: str


# (num_classes, in_channels, input_size) -> model
Builder = Callable[[int, int, int], nn.Module]


def _cifar_resnet(depth: int, widths: tuple[int, int, int, int]) -> Builder:
    def build(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        from kdcore.models.cifar_resnet import CifarResNet

        return CifarResNet(depth, widths, num_classes, in_channels)

    return build


def _wrn(depth: int, width: int) -> Builder:
    def build(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        from kdcore.models.wrn import WideResNet

        return WideResNet(depth, width, num_classes, in_channels)

    return build


def _vgg(name: str) -> Builder:
    def build(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        from kdcore.models.vgg import CONFIGS, VGG

        return VGG(CONFIGS[name], num_classes, in_channels)

    return build


def _mobilenetv2(width_mult: float) -> Builder:
    def build(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        from kdcore.models.mobilenetv2 import MobileNetV2

        return MobileNetV2(num_classes, in_channels, expansion=6, width_mult=width_mult)

    return build


def _lenet(half: bool) -> Builder:
    def build(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        from kdcore.models.small import LeNet5

        return LeNet5(num_classes, in_channels, input_size, half=half)

    return build


def _mlp(hidden: list[int], dropout: float = 0.0, input_dropout: float = 0.0) -> Builder:
    def build(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        from kdcore.models.small import MLP

        return MLP(in_channels * input_size * input_size, hidden, num_classes, dropout, input_dropout)

    return build


def _cnn_small(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    from kdcore.models.small import SmallCNN

    return SmallCNN(num_classes, in_channels)


def _torchvision(arch: str) -> Builder:
    def build(num_classes: int, in_channels: int, input_size: int) -> nn.Module:
        from kdcore.models.tv import build_torchvision

        return build_torchvision(arch, num_classes, in_channels)

    return build


def _registry() -> dict[str, tuple[ModelEntry, Builder]]:
    from kdcore.models.tv import TORCHVISION_MODELS

    small, wide = (16, 16, 32, 64), (32, 64, 128, 256)
    table: dict[str, tuple[ModelEntry, Builder]] = {}

    def add(name: str, family: str, description: str, builder: Builder) -> None:
        table[name] = (ModelEntry(name, family, description), builder)

    for depth in (8, 14, 20, 32, 44, 56, 110):
        add(f"resnet{depth}", "cifar-resnet", f"CIFAR ResNet-{depth}, basic blocks, 16-32-64 channels",
            _cifar_resnet(depth, small))
    for depth in (8, 32):
        add(f"resnet{depth}x4", "cifar-resnet", f"CIFAR ResNet-{depth}, 4x wide: 64-128-256 channels", _cifar_resnet(depth, wide))
    for depth, width in ((16, 1), (16, 2), (40, 1), (40, 2)):
        add(f"wrn_{depth}_{width}", "wrn", f"Wide ResNet depth {depth}, width x{width}", _wrn(depth, width))
    for name, layers in (("vgg8", 8), ("vgg11", 11), ("vgg13", 13)):
        add(name, "vgg", f"CIFAR VGG-{layers} with BatchNorm, global average pool", _vgg(name))
    add("mobilenetv2", "mobilenet", "CIFAR MobileNetV2, expansion 6, width 0.5 (RepDistiller's MobileNetV2)", _mobilenetv2(0.5))
    add("mobilenetv2_x1", "mobilenet", "CIFAR MobileNetV2, expansion 6, width 1.0", _mobilenetv2(1.0))
    add("lenet5", "lenet", "LeNet-5: conv 6, conv 16, fc 120, fc 84", _lenet(half=False))
    add("lenet5_half", "lenet", "LeNet-5-half: conv 3, conv 8, fc 60, fc 42 (ZSKD student)", _lenet(half=True))
    add("mlp_1200_1200", "mlp", "Hinton's MNIST teacher: 2x1200 ReLU, dropout 0.2 input / 0.5 hidden",
        _mlp([1200, 1200], 0.5, 0.2))
    add("mlp_800_800", "mlp", "Hinton's MNIST student: 2x800 ReLU, no regularisation", _mlp([800, 800]))
    add("mlp_64", "mlp", "tiny MLP: one hidden layer of 64 ReLU units", _mlp([64]))
    add("cnn_small", "cnn", "small CNN: (conv-BN-ReLU)x2 + pool at 32 then 64 channels, < 100K params", _cnn_small)
    for arch, description in TORCHVISION_MODELS.items():
        add(f"tv_{arch}", "torchvision", f"torchvision {description}, random init", _torchvision(arch))
    return table


_REGISTRY = _registry()
_WRN_NAME = re.compile(r"wrn_(\d+)_(\d+)")
_MLP_NAME = re.compile(r"mlp(?:_\d+)+")


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _parsed_builder(name: str) -> tuple[ModelEntry, Builder] | None:
    """wrn_D_K and mlp_W1_W2_... beyond the listed ones."""
    if m := _WRN_NAME.fullmatch(name):
        depth, width = int(m.group(1)), int(m.group(2))
        if (depth - 4) % 6 != 0 or depth < 10 or width < 1:
            raise UnknownNameError(f"unknown model '{name}': a Wide ResNet needs depth 6n+4 (10, 16, 22, 28, 40, ...) "
                                   "and width >= 1, e.g. wrn_28_10.")
        return ModelEntry(name, "wrn", f"Wide ResNet depth {depth}, width x{width}"), _wrn(depth, width)
    if _MLP_NAME.fullmatch(name):
        hidden = [int(w) for w in name.split("_")[1:]]
        if min(hidden) < 1:
            raise UnknownNameError(f"unknown model '{name}': every hidden width of an MLP must be at least 1.")
        return ModelEntry(name, "mlp", f"MLP with hidden widths {'-'.join(map(str, hidden))}"), _mlp(hidden)
    return None


def list_models() -> list[ModelEntry]:
    """The listed zoo (wrn_D_K and mlp_W1_W2_... accept more names than are listed)."""
    return [entry for entry, _ in _REGISTRY.values()]


def model_entry(name: str) -> ModelEntry:
    return _lookup(name)[0]


def _lookup(name: str) -> tuple[ModelEntry, Builder]:
    if len(name) > 100:
        raise UnknownNameError(f"unknown model '{name[:40]}...': a model name has at most 100 characters.")
    key = _normalise(name)
    if key in _REGISTRY:
        return _REGISTRY[key]
    parsed = _parsed_builder(key)
    if parsed is not None:
        return parsed
    close = _close_names(key, list(_REGISTRY))
    hint = f"; did you mean {', '.join(close)}?" if close else "."
    raise UnknownNameError(f"unknown model '{name}'{hint} Run `python -m kdcore models` for the list.")


def _close_names(key: str, names: list[str], n: int = 3) -> list[str]:
    """The most similar names; among equally similar ones the nearest number first (resnet9 → resnet8, resnet14)."""
    number = re.search(r"\d+", key)

    def distance(name: str) -> float:
        other = re.search(r"\d+", name)
        return abs(int(number.group()) - int(other.group())) if number and other else float("inf")

    scored = [(difflib.SequenceMatcher(None, key, name).ratio(), name) for name in names]
    scored = [(ratio, name) for ratio, name in scored if ratio >= 0.6]
    scored.sort(key=lambda item: (-round(item[0], 3), distance(item[1]), item[1]))
    return [name for _, name in scored[:n]]


def build_model(name: str, num_classes: int, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    """A freshly initialised model for `num_classes` classes and in_channels × input_size² images.
    A model above the parameter ceiling (KD_MAX_MODEL_PARAMS) is refused, before it is built whenever
    its size could be large."""
    for field, value in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise KDError(f"{field} must be a positive integer, got {value!r}.")
    _, builder = _lookup(name)
    bounded = _fixed_size(name) and num_classes <= _SAFE_CLASSES and in_channels <= _SAFE_CHANNELS
    if not bounded:  # the name or the shape chooses the size: count by formula first
        _refuse_above_ceiling(name, num_classes, parameter_count(name, num_classes, in_channels, input_size))
    model = builder(num_classes, in_channels, input_size)
    if bounded:  # a fixed architecture at a usual shape is small: counting it built costs nothing
        _refuse_above_ceiling(name, num_classes, sum(p.numel() for p in model.parameters()))
    return model


# A fixed architecture (not mlp_*/wrn_*) with up to this many classes and input channels stays within
# tens of millions of parameters, so it can be built before it is counted.
_SAFE_CLASSES, _SAFE_CHANNELS = 25_000, 64


def max_model_params() -> int:
    raw = os.environ.get("KD_MAX_MODEL_PARAMS", "").strip()
    try:
        return int(float(raw)) if raw else DEFAULT_MAX_PARAMS
    except ValueError:
        raise KDError(f"KD_MAX_MODEL_PARAMS must be a number of parameters, not {raw[:40]!r}") from None


def _refuse_above_ceiling(name: str, num_classes: int, count: int) -> None:
    limit = max_model_params()
    if count > limit:
        raise ModelTooLargeError(f"the model {name} for {num_classes} classes would have {count:,} parameters, "
                                 f"more than the limit of {limit:,} (KD_MAX_MODEL_PARAMS); choose a smaller model")


def _fixed_size(name: str) -> bool:
    key = _normalise(name)
    return not (_MLP_NAME.fullmatch(key) or _WRN_NAME.fullmatch(key))


def parameter_count(name: str, num_classes: int, in_channels: int = 3, input_size: int = 32) -> int:
    """Parameters of build_model(name, ...) without building it at that size: by formula for the
    families whose size the name chooses (mlp_W1_..., wrn_D_K); for a fixed architecture from the
    model built at one and two classes and channels (its classifier grows with the classes, its stem
    with the channels, linearly)."""
    key = _normalise(name)
    _lookup(name)  # an unknown name is refused as such
    if _MLP_NAME.fullmatch(key):
        widths = [in_channels * input_size * input_size, *(int(w) for w in key.split("_")[1:]), num_classes]
        return sum(a * b + b for a, b in itertools.pairwise(widths))
    if m := _WRN_NAME.fullmatch(key):
        return _wrn_parameters(int(m.group(1)), int(m.group(2)), num_classes, in_channels)
    base = _built_count(key, 1, 1, input_size)
    per_class = _built_count(key, 2, 1, input_size) - base
    per_channel = _built_count(key, 1, 2, input_size) - base
    return base + (num_classes - 1) * per_class + (in_channels - 1) * per_channel


@functools.lru_cache(maxsize=64)
def _built_count(key: str, num_classes: int, in_channels: int, input_size: int) -> int:
    model = _lookup(key)[1](num_classes, in_channels, input_size)
    return sum(p.numel() for p in model.parameters())


def _wrn_parameters(depth: int, width: int, num_classes: int, in_channels: int) -> int:
    """kdcore.models.wrn.WideResNet's parameters: a 3x3 stem, three stages of pre-activation blocks
    (BN, 3x3 conv, BN, 3x3 conv, a 1x1 projection where the shape changes), a final BN and the classifier."""
    n = (depth - 4) // 6
    channels = [16, 16 * width, 32 * width, 64 * width]
    total = in_channels * channels[0] * 9
    for stage in range(3):
        for i in range(n):
            c_in, c_out = (channels[stage] if i == 0 else channels[stage + 1]), channels[stage + 1]
            total += 2 * c_in + c_in * c_out * 9 + 2 * c_out + c_out * c_out * 9
            if i == 0 and (c_in != c_out or stage > 0):
                total += c_in * c_out
    return total + 2 * channels[3] + channels[3] * num_classes + num_classes
