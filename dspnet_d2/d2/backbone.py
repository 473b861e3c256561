"""detectron2 backbones of a DN: the DN's static network + FPN, the family read from MODEL.DSPNET.DN.

``build_dspnet_fpn_backbone`` serves every family (set ``MODEL.BACKBONE.NAME`` to it once; the DN is
then the only key to change). ``build_dspnet_mbv3_fpn_backbone`` / ``build_dspnet_resnet_fpn_backbone``
are the older per-family names, kept as aliases that refuse a DN of the other family.
"""
from __future__ import annotations

from . import require_detectron2

require_detectron2("dspnet_d2.d2.backbone")

from detectron2.layers import FrozenBatchNorm2d, ShapeSpec, get_norm  # noqa: E402
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone  # noqa: E402
from detectron2.modeling.backbone.fpn import LastLevelMaxPool  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..dn import DNSpec, parse_dn  # noqa: E402
from ..errors import InvalidInputError  # noqa: E402
from ..families import Family  # noqa: E402
from ..slim.base import FEATURE_NAMES, FEATURE_STRIDES  # noqa: E402

__all__ = ["DSPNetBackbone", "dn_backbone", "build_dspnet_fpn_backbone", "build_dspnet_mbv3_fpn_backbone",
           "build_dspnet_resnet_fpn_backbone"]


def _norm_factory(norm: str, family: Family):
    """detectron2's ``get_norm`` with the eps/momentum the DN was pretrained with (MobileNetV3: 1e-3/0.01)."""

    def make(channels: int) -> nn.Module:
        layer = get_norm(norm, channels)
        if layer is None:
            raise InvalidInputError("MODEL.DSPNET.NORM must name a norm layer; the DNs were pretrained with BN")
        if hasattr(layer, "eps"):
            layer.eps = family.norm_eps
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.momentum = family.norm_momentum
        return layer

    return make


class DSPNetBackbone(Backbone):
    """The static network of one DN with outputs res2..res5 (strides 4/8/16/32)."""

    def __init__(self, dn: DNSpec, out_features=FEATURE_NAMES, norm: str = "BN", freeze_at: int = 0):
        super().__init__()
        self.dn = dn
        self.family = dn.info
        unknown = set(out_features) - set(FEATURE_NAMES)
        if unknown:
            raise InvalidInputError(f"unknown OUT_FEATURES {sorted(unknown)}; choose from {list(FEATURE_NAMES)}")
        self.body = self.family.build_static(self.dn, None, _norm_factory(norm, self.family))
        self._out_features = list(out_features)
        self._freeze(freeze_at)  # before the stage views are built, as freezing swaps norm modules
        # a plain list: the modules stay registered only under body, so the state_dict keys are torchvision's
        self._stages = [nn.Sequential(*map(self.body.get_submodule, names)) for names in self._stage_names()]
        self._out_feature_strides = {name: FEATURE_STRIDES[name] for name in FEATURE_NAMES}
        self._out_feature_channels = {name: self.family.channels(self.dn)[name] for name in FEATURE_NAMES}

    def _stage_names(self) -> list[tuple[str, ...]]:
        """Module names of res2..res5, the stem running first (inside res2)."""
        stages = list(self.family.stages(self.dn))
        return [self.family.stem + stages[0]] + stages[1:]

    def _freeze(self, freeze_at: int) -> None:
        """detectron2's convention: 1 freezes the stem, k freezes the stem and res2..res{k}."""
        parts = [self.family.stem] + list(self.family.stages(self.dn))
        for names in parts[:max(0, freeze_at)]:
            for name in names:
                parent_name, _, child = name.rpartition(".")
                parent = self.body.get_submodule(parent_name)
                module = getattr(parent, child).requires_grad_(False)
                setattr(parent, child, FrozenBatchNorm2d.convert_frozen_batchnorm(module))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = {}
        for name, stage in zip(FEATURE_NAMES, self._stages):
            x = stage(x)
            outputs[name] = x
        return {name: outputs[name] for name in self._out_features}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
                for name in self._out_features}


def dn_backbone(dn: str, out_features=FEATURE_NAMES, norm: str = "BN", freeze_at: int = 0) -> DSPNetBackbone:
    """``DSPNetBackbone`` of a DN string: what a LazyConfig instantiates, its ``dn`` value being text (the edge)."""
    return DSPNetBackbone(parse_dn(dn), out_features, norm, freeze_at)


def _build(cfg, family: str | None = None) -> Backbone:
    dn = parse_dn(cfg.MODEL.DSPNET.DN)  # the edge: detectron2's config holds the DN string
    if family is not None and dn.family != family:
        raise InvalidInputError(f"MODEL.DSPNET.DN={dn} is a {dn.family} DN but MODEL.BACKBONE.NAME is "
                                f"build_dspnet_{family}_fpn_backbone; use build_dspnet_fpn_backbone, which "
                                f"serves every family")
    bottom_up = DSPNetBackbone(dn, cfg.MODEL.DSPNET.OUT_FEATURES, cfg.MODEL.DSPNET.NORM, cfg.MODEL.DSPNET.FREEZE_AT)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE_REGISTRY.register()
def build_dspnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """The DN of ``MODEL.DSPNET.DN`` (any family: ``mbv3_w0.75``, ``resnet18``, ...) + FPN with LastLevelMaxPool."""
    return _build(cfg)


@BACKBONE_REGISTRY.register()
def build_dspnet_mbv3_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Alias of ``build_dspnet_fpn_backbone`` for MobileNetV3 DNs."""
    return _build(cfg, "mbv3")


@BACKBONE_REGISTRY.register()
def build_dspnet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Alias of ``build_dspnet_fpn_backbone`` for BasicBlock ResNet DNs."""
    return _build(cfg, "resnet")
