"""Slimmable layers: each holds the largest weight and runs on its leading slice.

The input width follows the input tensor; the output width is ``active_out`` and is set from outside
by the supernet's ``set_active`` (never decided inside ``forward``). The classes subclass the plain
torch layers so their state_dict keys and shapes are those of the largest network.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["make_divisible", "SlimConv2d", "SlimBatchNorm2d", "SlimLinear", "set_bn_momentum"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: the rounding of every MobileNet channel count."""
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:  # never round down by more than 10%
        new_value += divisor
    return new_value


class SlimConv2d(nn.Conv2d):
    """Conv2d (dense or depthwise) on the leading ``[:active_out, :in]`` slice of its weight."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = False):
        if groups not in (1, in_channels) or (groups > 1 and in_channels != out_channels):
            raise ValueError("SlimConv2d supports dense (groups=1) and depthwise convolutions only")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.depthwise = groups > 1
        self.active_out = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_channels = x.shape[1]
        if self.depthwise:
            out_channels, groups = in_channels, in_channels
            weight = self.weight[:out_channels]
        else:
            out_channels, groups = self.active_out, 1
            weight = self.weight[:out_channels, :in_channels]
        bias = self.bias[:out_channels] if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class SlimBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose statistics and affine parameters are shared leading slices.

    Running statistics are updated in place on the active slice; a DN's statistics are only exact
    after ``recalibrate_bn`` (US-Nets / OFA practice), since every sub-network writes to them.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean[:channels], self.running_var[:channels],
                            self.weight[:channels], self.bias[:channels], self.training, factor, self.eps)


class SlimLinear(nn.Linear):
    """Linear on the leading ``[:active_out, :in]`` slice (the projector's slimmable input)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.active_out = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias[:self.active_out] if self.bias is not None else None
        return F.linear(x, self.weight[:self.active_out, :x.shape[-1]], bias)


def set_bn_momentum(module: nn.Module, momentum: float | None) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
