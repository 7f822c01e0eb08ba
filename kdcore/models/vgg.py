"""CIFAR VGGs with BatchNorm as in RepDistiller (five conv blocks, global average pool, one Linear).

Each block ends with a BN (its ReLU is applied outside, as in the reference), followed by a `preact`
marker, so `blockN` / `blockN.preact` is the pre-ReLU feature. Parameter names follow RepDistiller
(blockN.K, classifier), so its checkpoints load."""
from __future__ import annotations

import torch
from torch import nn

from kdcore.models.blocks import PreAct, ZooModel, init_wyang

CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _make_block(widths: list[int], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        in_channels = w
    layers = layers[:-1]  # the block's last ReLU runs outside it: the block output is pre-ReLU
    layers.append(PreAct(str(len(layers) - 1), stage_end=True))
    return nn.Sequential(*layers)


class VGG(ZooModel):
    classifier_layer = "classifier"

    def __init__(self, config: list[list[int]], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        widths_in = [in_channels] + [block[-1] for block in config[:-1]]
        self.block0 = _make_block(config[0], widths_in[0])
        self.relu0 = nn.ReLU()
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.block1 = _make_block(config[1], widths_in[1])
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.block2 = _make_block(config[2], widths_in[2])
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.block3 = _make_block(config[3], widths_in[3])
        self.relu3 = nn.ReLU()
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)  # used only for inputs of 64 px and more, as in the reference
        self.block4 = _make_block(config[4], widths_in[4])
        self.relu4 = nn.ReLU()
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(config[4][-1], num_classes)
        init_wyang(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool0(self.relu0(self.block0(x)))
        x = self.pool1(self.relu1(self.block1(x)))
        x = self.pool2(self.relu2(self.block2(x)))
        x = self.relu3(self.block3(x))
        if x.shape[-1] >= 8:  # a 64-px input reaches block3 at 8 px; RepDistiller pools once more there
            x = self.pool3(x)
        x = self.relu4(self.block4(x))
        return self.classifier(self.flatten(self.pool4(x)))
