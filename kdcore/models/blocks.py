"""Small building blocks shared by the zoo models."""
from __future__ import annotations

from torch import nn


class PreAct(nn.Identity):
    """Marks a pre-ReLU feature so it can be hooked by path (OFD distils it).

    It passes its input through unchanged; its output is exactly what the following ReLU
    receives. `bn` names, relative to the module that owns this marker, the BatchNorm whose
    affine parameters give OFD's per-channel margins. `stage_end` is True for the last
    block of a stage (the points RepDistiller's OFD uses)."""

    def __init__(self, bn: str, stage_end: bool = False) -> None:
        super().__init__()
        self.bn = bn
        self.stage_end = stage_end

    def extra_repr(self) -> str:
        return f"bn={self.bn!r}, stage_end={self.stage_end}"


def init_conv_bn_kaiming(model: nn.Module) -> None:
    """He init (fan_out) for convs, BN to identity: what RepDistiller's ResNet does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_wyang(model: nn.Module, linear_std: float | None = None) -> None:
    """Wei Yang's init used by RepDistiller's WRN, VGG and MobileNetV2: conv ~ N(0, 2/(k²·out)),
    BN to identity, Linear bias zero (and weight ~ N(0, linear_std) when given)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / n) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class ZooModel(nn.Module):
    """Base of the zoo models: each names its penultimate (flat) feature and its logits layer,
    so pages and presets can find them without knowing the architecture."""

    penultimate_layer: str = "flatten"
    classifier_layer: str = "fc"
