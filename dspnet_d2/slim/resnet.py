"""Slimmable BasicBlock ResNet (width x depth): ResNet-18 ... ResNet-34 x1.5 in one supernet.

Module names mirror torchvision's ResNet (``conv1``, ``bn1``, ``layer{i}.{j}.conv1``, ``downsample``,
``fc``). Depth slimming keeps the first d blocks of each stage; width slimming keeps leading channels.
"""
from __future__ import annotations

import torch
from torch import nn

from ..dn import DNSpec
from .base import Supernet, init_like_torchvision
from .ops import SlimBatchNorm2d, SlimConv2d, SlimLinear

BASE_WIDTHS = (64, 128, 256, 512)


def stage_widths(width: float) -> tuple[int, ...]:
    """Stage widths of a DN: [64,128,256,512] x width (x1.25 -> [80,...], x1.5 -> [96,...])."""
    return tuple(int(round(c * width)) for c in BASE_WIDTHS)


def dn_channels(dn: DNSpec) -> dict[str, int]:
    """Channels of a DN's outputs res2..res5, its pooled vector and stem."""
    widths = stage_widths(dn.width)
    return {"res2": widths[0], "res3": widths[1], "res4": widths[2], "res5": widths[3],
            "pooled": widths[3], "stem": widths[0]}


class SlimBasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = SlimConv2d(in_channels, channels, 3, stride, 1)
        self.bn1 = SlimBatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = SlimConv2d(channels, channels, 3, 1, 1)
        self.bn2 = SlimBatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(SlimConv2d(in_channels, channels, 1, stride), SlimBatchNorm2d(channels))

    def set_channels(self, channels: int) -> None:
        self.conv1.active_out = channels
        self.conv2.active_out = channels
        if self.downsample is not None:
            self.downsample[0].active_out = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class SlimResNet(Supernet):
    """BasicBlock ResNet supernet; ``set_active(parse_dn("resnet18"))`` runs torchvision's ResNet-18."""

    family = "resnet"

    def __init__(self, max_dn: DNSpec, num_classes: int | None = None):
        super().__init__(max_dn, num_classes)
        widths = stage_widths(self.max_dn.width)
        self.conv1 = SlimConv2d(3, widths[0], 7, 2, 3)
        self.bn1 = SlimBatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = widths[0]
        for index, (channels, depth) in enumerate(zip(widths, self.max_dn.depths)):
            stride = 1 if index == 0 else 2
            blocks = [SlimBasicBlock(in_channels if j == 0 else channels, channels, stride if j == 0 else 1)
                      for j in range(depth)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            in_channels = channels
        if num_classes is not None:
            self.fc = SlimLinear(widths[-1], num_classes)
        init_like_torchvision(self, linear_std=None)
        self.set_active(self.max_dn)

    @property
    def layers(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def channels(self, dn: DNSpec) -> dict[str, int]:
        return dn_channels(dn)

    def _apply_dn(self, dn: DNSpec) -> None:
        widths = stage_widths(dn.width)
        self.conv1.active_out = widths[0]
        for layer, channels in zip(self.layers, widths):
            for block in layer:
                block.set_channels(channels)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def _stages(self):
        depths = self._active.depths
        yield lambda x: self._run(self.layer1, depths[0], self._stem(x))
        for layer, depth in zip(self.layers[1:], depths[1:]):
            yield lambda x, layer=layer, depth=depth: self._run(layer, depth, x)

    @staticmethod
    def _run(layer: nn.Sequential, depth: int, x: torch.Tensor) -> torch.Tensor:
        for block in layer[:depth]:
            x = block(x)
        return x

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)
