"""Slimmable MobileNetV3-Large whose sub-network at width w is torchvision's ``mobilenet_v3_large(width_mult=w)``.

Module names mirror torchvision (``features.{i}.block.{j}``, ``fc1``/``fc2`` in SE, ``classifier``),
so the supernet's state_dict is torchvision's at the largest width and a DN exports by slicing.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from ..dn import DNSpec
from .base import Supernet, init_like_torchvision
from .ops import SlimBatchNorm2d, SlimConv2d, SlimLinear, make_divisible

BN_EPS, BN_MOMENTUM = 0.001, 0.01  # torchvision's MobileNetV3 norm layer


class BlockConf(NamedTuple):
    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    activation: str  # "RE" (ReLU) or "HS" (Hardswish)
    stride: int


# torchvision's MobileNetV3-Large table (width 1.0), Table 1 of the MobileNetV3 paper.
LARGE_TABLE = tuple(BlockConf(*row) for row in (
    (16, 3, 16, 16, False, "RE", 1),
    (16, 3, 64, 24, False, "RE", 2),
    (24, 3, 72, 24, False, "RE", 1),
    (24, 5, 72, 40, True, "RE", 2),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 5, 120, 40, True, "RE", 1),
    (40, 3, 240, 80, False, "HS", 2),
    (80, 3, 200, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 184, 80, False, "HS", 1),
    (80, 3, 480, 112, True, "HS", 1),
    (112, 3, 672, 112, True, "HS", 1),
    (112, 5, 672, 160, True, "HS", 2),
    (160, 5, 960, 160, True, "HS", 1),
    (160, 5, 960, 160, True, "HS", 1),
))
LAST_CHANNEL = 1280  # classifier hidden width at 1.0
STAGE_ENDS = (4, 7, 13, 17)  # features[:4] -> stride 4 (tap features[3]), [6] -> 8, [12] -> 16, [16] -> 32


class BlockChannels(NamedTuple):
    in_channels: int
    expanded: int
    squeeze: int
    out_channels: int


def block_channels(width: float) -> list[BlockChannels]:
    """Channels of every inverted residual block at ``width``, rounded exactly as torchvision."""
    rows = []
    for conf in LARGE_TABLE:
        expanded = make_divisible(conf.expanded * width)
        rows.append(BlockChannels(make_divisible(conf.in_channels * width), expanded,
                                  make_divisible(expanded // 4), make_divisible(conf.out_channels * width)))
    return rows


def dn_channels(dn: DNSpec) -> dict[str, int]:
    """Channels of a DN's outputs res2..res5, its pooled vector, stem and classifier hidden layer."""
    blocks = block_channels(dn.width)
    taps = [blocks[end - 2].out_channels for end in STAGE_ENDS[:3]]  # features[i] is blocks[i - 1]
    pooled = 6 * blocks[-1].out_channels
    return {"res2": taps[0], "res3": taps[1], "res4": taps[2], "res5": pooled, "pooled": pooled,
            "stem": blocks[0].in_channels, "last_channel": make_divisible(LAST_CHANNEL * dn.width)}


def _conv_bn_act(in_ch, out_ch, kernel, stride=1, groups=1, activation=None) -> nn.Sequential:
    layers = [SlimConv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups),
              SlimBatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


class SlimSqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.fc1 = SlimConv2d(channels, squeeze, 1, bias=True)
        self.fc2 = SlimConv2d(squeeze, channels, 1, bias=True)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.adaptive_avg_pool2d(x, 1)
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(scale))))
        return scale * x


class SlimInvertedResidual(nn.Module):
    def __init__(self, conf: BlockConf, channels: BlockChannels, drop_path: float = 0.0):
        super().__init__()
        act = nn.Hardswish if conf.activation == "HS" else nn.ReLU
        layers = []
        self.has_expand = conf.expanded != conf.in_channels
        if self.has_expand:
            layers.append(_conv_bn_act(channels.in_channels, channels.expanded, 1, activation=act))
        layers.append(_conv_bn_act(channels.expanded, channels.expanded, conf.kernel, conf.stride,
                                   groups=channels.expanded, activation=act))
        if conf.use_se:
            layers.append(SlimSqueezeExcitation(channels.expanded, channels.squeeze))
        layers.append(_conv_bn_act(channels.expanded, channels.out_channels, 1))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = conf.stride == 1 and conf.in_channels == conf.out_channels
        # stochastic depth of the residual branch (supervised training; no parameters, identity in eval)
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path and self.use_res_connect else nn.Identity()

    def set_channels(self, channels: BlockChannels) -> None:
        if self.has_expand:
            self.block[0][0].active_out = channels.expanded
        for layer in self.block:
            if isinstance(layer, SlimSqueezeExcitation):
                layer.fc1.active_out = channels.squeeze
                layer.fc2.active_out = channels.expanded
        self.block[-1][0].active_out = channels.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return self.drop_path(out) + x if self.use_res_connect else out


class SlimMobileNetV3(Supernet):
    """MobileNetV3-Large supernet; ``set_active(parse_dn("mbv3_w0.75"))`` runs torchvision's width-0.75 network."""

    family = "mbv3"

    def __init__(self, max_dn: DNSpec, num_classes: int | None = None,
                 dropout: float = 0.2, drop_path: float = 0.0):
        """``drop_path``: stochastic-depth rate of the last block, scaled linearly from 0 over the blocks
        as timm's MobileNetV3 does (``rate x block_index / blocks``)."""
        super().__init__(max_dn, num_classes)
        width = self.max_dn.width
        blocks = block_channels(width)
        last_in = blocks[-1].out_channels
        layers = [_conv_bn_act(3, blocks[0].in_channels, 3, 2, activation=nn.Hardswish)]
        layers += [SlimInvertedResidual(conf, ch, drop_path * i / len(LARGE_TABLE))
                   for i, (conf, ch) in enumerate(zip(LARGE_TABLE, blocks))]
        layers.append(_conv_bn_act(last_in, 6 * last_in, 1, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        if num_classes is not None:
            self.classifier = nn.Sequential(
                SlimLinear(6 * last_in, make_divisible(LAST_CHANNEL * width)), nn.Hardswish(inplace=True),
                nn.Dropout(p=dropout, inplace=True), SlimLinear(make_divisible(LAST_CHANNEL * width), num_classes))
        init_like_torchvision(self)
        self.set_active(self.max_dn)

    def channels(self, dn: DNSpec) -> dict[str, int]:
        return dn_channels(dn)

    def _apply_dn(self, dn: DNSpec) -> None:
        blocks = block_channels(dn.width)
        self.features[0][0].active_out = blocks[0].in_channels
        for block, channels in zip(self.features[1:-1], blocks):
            block.set_channels(channels)
        self.features[-1][0].active_out = 6 * blocks[-1].out_channels
        if self.num_classes is not None:
            self.classifier[0].active_out = make_divisible(LAST_CHANNEL * dn.width)

    def _stages(self):
        start = 0
        for end in STAGE_ENDS:
            yield self.features[start:end]
            start = end

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x)
