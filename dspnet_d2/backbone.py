"""detectron2 backbones of a DN: MobileNetV3-FPN and ResNet(BasicBlock)-FPN, selected by MODEL.DSPNET.DN.

The only module of the package that imports detectron2. The backbone is the DN's static
torchvision network (no per-forward slicing) built with detectron2's norms, wrapped as ``body``.
"""
from __future__ import annotations

try:
    from detectron2.layers import FrozenBatchNorm2d, ShapeSpec, get_norm
    from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool
except ImportError as err:  # pragma: no cover - exercised only without detectron2
    raise ImportError(
        "dspnet_d2.backbone needs detectron2, which is not on PyPI: install it from its official source "
        "(https://detectron2.readthedocs.io/en/latest/tutorials/install.html)") from err

import torch
from torch import nn

from .dn import DNSpec, parse_dn
from .errors import InvalidInputError
from .models import build_static_dn
from .slim.base import FEATURE_NAMES, FEATURE_STRIDES
from .slim.mobilenetv3 import BN_EPS, BN_MOMENTUM, STAGE_ENDS

__all__ = ["DSPNetBackbone", "build_dspnet_mbv3_fpn_backbone", "build_dspnet_resnet_fpn_backbone"]


def _norm_factory(norm: str, dn: DNSpec):
    """detectron2's ``get_norm`` with the eps/momentum the DN was pretrained with (MobileNetV3: 1e-3/0.01)."""
    eps, momentum = (BN_EPS, BN_MOMENTUM) if dn.family == "mbv3" else (1e-5, 0.1)

    def make(channels: int) -> nn.Module:
        layer = get_norm(norm, channels)
        if layer is None:
            raise InvalidInputError("MODEL.DSPNET.NORM must name a norm layer; the DNs were pretrained with BN")
        if hasattr(layer, "eps"):
            layer.eps = eps
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.momentum = momentum
        return layer

    return make


class DSPNetBackbone(Backbone):
    """The static network of one DN with outputs res2..res5 (strides 4/8/16/32)."""

    def __init__(self, dn: "str | DNSpec", out_features=FEATURE_NAMES, norm: str = "BN", freeze_at: int = 0):
        super().__init__()
        self.dn = parse_dn(dn)
        unknown = set(out_features) - set(FEATURE_NAMES)
        if unknown:
            raise InvalidInputError(f"unknown OUT_FEATURES {sorted(unknown)}; choose from {list(FEATURE_NAMES)}")
        self.body = build_static_dn(self.dn, norm_layer=_norm_factory(norm, self.dn))
        self._out_features = list(out_features)
        self._freeze(freeze_at)  # before the stage views are built, as freezing swaps norm modules
        self._stages = self._split()  # a plain list: the modules stay registered only under body
        self._out_feature_strides = {name: FEATURE_STRIDES[name] for name in FEATURE_NAMES}
        self._out_feature_channels = self._probe_channels()

    def _parts(self) -> list[list[tuple[nn.Module, str]]]:
        """(parent, child name) of the stem, then of each stage res2..res5 (res2 without the stem)."""
        body = self.body
        if self.dn.family == "mbv3":
            bounds = (1,) + STAGE_ENDS
            return [[(body.features, "0")]] + [[(body.features, str(i)) for i in range(s, e)]
                                                for s, e in zip(bounds[:-1], bounds[1:])]
        return [[(body, "conv1"), (body, "bn1")]] + [[(body, f"layer{i}")] for i in range(1, 5)]

    def _freeze(self, freeze_at: int) -> None:
        """detectron2's convention: 1 freezes the stem, k freezes the stem and res2..res{k}."""
        for part in self._parts()[:max(0, freeze_at)]:
            for parent, name in part:
                module = getattr(parent, name).requires_grad_(False)
                setattr(parent, name, FrozenBatchNorm2d.convert_frozen_batchnorm(module))

    def _split(self) -> list[nn.Module]:
        body = self.body
        if self.dn.family == "mbv3":
            starts = (0,) + STAGE_ENDS[:-1]
            return [body.features[s:e] for s, e in zip(starts, STAGE_ENDS)]
        stem = nn.Sequential(body.conv1, body.bn1, body.relu, body.maxpool)
        return [nn.Sequential(stem, body.layer1), body.layer2, body.layer3, body.layer4]

    @torch.no_grad()
    def _probe_channels(self) -> dict[str, int]:
        was_training = self.training
        self.eval()
        outputs = self._run(torch.zeros(1, 3, 64, 64))
        self.train(was_training)
        return {name: outputs[name].shape[1] for name in FEATURE_NAMES}

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        for name, stage in zip(FEATURE_NAMES, self._stages):
            x = stage(x)
            outputs[name] = x
        return outputs

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self._run(x)
        return {name: outputs[name] for name in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
                for name in self._out_features}


def _build(cfg, family: str) -> Backbone:
    dn = parse_dn(cfg.MODEL.DSPNET.DN)
    if dn.family != family:
        raise InvalidInputError(f"MODEL.DSPNET.DN={dn} is a {dn.family} DN; use build_dspnet_{dn.family}_fpn_backbone")
    bottom_up = DSPNetBackbone(dn, cfg.MODEL.DSPNET.OUT_FEATURES, cfg.MODEL.DSPNET.NORM, cfg.MODEL.DSPNET.FREEZE_AT)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_dspnet_mbv3_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """MobileNetV3-Large DN (``MODEL.DSPNET.DN mbv3_w*``) + FPN with LastLevelMaxPool."""
    return _build(cfg, "mbv3")


@BACKBONE_REGISTRY.register()
def build_dspnet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """BasicBlock ResNet DN (``MODEL.DSPNET.DN resnet18 / resnet_w*_d*``) + FPN with LastLevelMaxPool."""
    return _build(cfg, "resnet")
