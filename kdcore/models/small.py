"""Small models for digits / (Fashion-)MNIST: LeNet-5, MLPs (Hinton's 1200-1200 and 800-800) and a
BN CNN under 100K parameters."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from kdcore.models.blocks import PreAct, ZooModel, init_conv_bn_kaiming


class LeNet5(ZooModel):
    """LeNet-5 (conv 6, conv 16, fc 120, fc 84); LeNet-5-half halves every width (ZSKD).

    The first conv is padded (the usual 28-px MNIST form); the second too when the input is under
    12 px, and an adaptive pool to 5×5 keeps fc1 at 16·5·5 inputs whatever the image size."""

    penultimate_layer = "relu4"

    def __init__(self, num_classes: int, in_channels: int = 1, input_size: int = 28, half: bool = False) -> None:
        super().__init__()
        c1, c2, f1, f2 = (3, 8, 60, 42) if half else (6, 16, 120, 84)
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, padding=0 if input_size >= 12 else 2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.pool = nn.AdaptiveAvgPool2d(5)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c2 * 25, f1)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(f1, f2)
        self.relu4 = nn.ReLU()
        self.fc = nn.Linear(f2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.flatten(self.pool(x))
        x = self.relu4(self.fc2(self.relu3(self.fc1(x))))
        return self.fc(x)


class MLP(ZooModel):
    """Flatten, then hidden Linear+ReLU(+Dropout) layers fc1, fc2, ..., then `fc`.

    Hinton et al.'s MNIST teacher is 1200-1200 with dropout (0.2 on the input, 0.5 on hidden
    units, as in the dropout paper it cites); the 800-800 student has no regularisation."""

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        num_classes: int,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("an MLP needs at least one hidden layer")
        self.flatten = nn.Flatten()
        self.drop0 = nn.Dropout(input_dropout) if input_dropout > 0 else None
        width = in_features
        self.depth = len(hidden)
        for i, h in enumerate(hidden, start=1):
            setattr(self, f"fc{i}", nn.Linear(width, h))
            setattr(self, f"relu{i}", nn.ReLU())
            setattr(self, f"drop{i}", nn.Dropout(dropout) if dropout > 0 else None)
            width = h
        self.fc = nn.Linear(width, num_classes)
        self.penultimate_layer = f"relu{self.depth}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        if self.drop0 is not None:
            x = self.drop0(x)
        for i in range(1, self.depth + 1):
            x = getattr(self, f"relu{i}")(getattr(self, f"fc{i}")(x))
            drop = getattr(self, f"drop{i}")
            if drop is not None:
                x = drop(x)
        return self.fc(x)


def _cnn_stage(in_channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            bn1=nn.BatchNorm2d(width),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(width, width, 3, padding=1, bias=False),
            bn2=nn.BatchNorm2d(width),
            preact=PreAct("bn2", stage_end=True),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
    )


class SmallCNN(ZooModel):
    """Two stages of (conv-BN-ReLU)×2 + max-pool, 32 then 64 channels, global average pool, Linear:
    about 66K parameters, in the "2-conv CNN under 100K" class of the Fashion-MNIST benchmark."""

    def __init__(self, num_classes: int, in_channels: int = 1, widths: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        self.stage1 = _cnn_stage(in_channels, widths[0])
        self.stage2 = _cnn_stage(widths[0], widths[1])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[1], num_classes)
        init_conv_bn_kaiming(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.stage2(self.stage1(x)))))
