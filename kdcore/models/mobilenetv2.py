"""MobileNetV2 for CIFAR as in RepDistiller ("MobileNetV2" there is expansion 6, width 0.5).

Each inverted residual ends in a linear bottleneck (BN, no ReLU); a `preact` marker on the block
output makes the point RepDistiller's OFD uses hookable. Parameter names follow RepDistiller except
the classifier, a plain Linear here (RepDistiller: classifier.0)."""
from __future__ import annotations

import torch
from torch import nn

from kdcore.models.blocks import PreAct, ZooModel, init_wyang

# expansion t, channels c, repeats n, first stride s
SETTINGS = [(1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1), (None, 160, 3, 2),
            (None, 320, 1, 1)]
OFD_STAGES = (1, 2, 4, 6)  # the blocks RepDistiller reads features from


def _conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(oup), nn.ReLU()
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )
        self.preact = PreAct("conv.7")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return self.preact(x + out if self.use_res_connect else out)


class MobileNetV2(ZooModel):
    classifier_layer = "classifier"

    def __init__(self, num_classes: int, in_channels: int = 3, expansion: int = 6, width_mult: float = 0.5) -> None:
        super().__init__()
        input_channel = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, input_channel, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in SETTINGS:
            output_channel = int(c * width_mult)
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t or expansion))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*stage))
        for index in OFD_STAGES:
            self.blocks[index][-1].preact.stage_end = True
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(input_channel, self.last_channel, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(self.last_channel, num_classes)
        init_wyang(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        x = self.conv2(x)
        return self.classifier(self.flatten(self.pool(x)))
