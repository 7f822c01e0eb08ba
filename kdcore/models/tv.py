"""torchvision classifiers by name (random init, `weights=None`), adapted to the input channels."""
from __future__ import annotations

from torch import nn

TORCHVISION_MODELS = {
    "resnet18": "ResNet-18 (ImageNet architecture: 7x7 stride-2 stem and max-pool)",
    "resnet34": "ResNet-34 (ImageNet architecture)",
    "resnet50": "ResNet-50, bottleneck blocks (ImageNet architecture)",
    "mobilenet_v3_small": "MobileNetV3-Small (ImageNet architecture)",
    "efficientnet_b0": "EfficientNet-B0 (ImageNet architecture)",
}


def build_torchvision(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision.models  # imported on use: it is slow to import and most runs never need it

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    return model


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    path, old = next((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=1,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")  # torchvision's own conv init
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path), name, new)
