"""Wide ResNets (pre-activation, Zagoruyko & Komodakis) as in RepDistiller.

Parameter names follow RepDistiller (blockN.layer.M.bn1/conv1/bn2/conv2/convShortcut, bn1, fc), so
its checkpoints load. The pre-ReLU feature of a pre-activation net is the BN output at the start of
the next block (and the final bn1); a `preact` marker after each of those BNs makes it hookable."""
from __future__ import annotations

import torch
from torch import nn

from kdcore.models.blocks import PreAct, ZooModel, init_wyang


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.preact = PreAct("bn1")
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        # RepDistiller's name, kept so its checkpoints load.
        self.convShortcut: nn.Module | None = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.preact(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        # As in the reference: an identity shortcut takes the raw input, a projection the activated one.
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(ZooModel):
    """depth = 6n + 4, widths 16, 16k, 32k, 64k."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10 or widen_factor < 1:
            raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, ...) and width >= 1, got {depth}, {widen_factor}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.preact = PreAct("bn1", stage_end=True)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[3], num_classes)
        # The first BN of stage k+1 sees the end of stage k: RepDistiller's OFD points.
        self.block2.layer[0].preact.stage_end = True
        self.block3.layer[0].preact.stage_end = True
        init_wyang(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.preact(self.bn1(x)))
        return self.fc(self.flatten(self.pool(x)))
