"""The MobileNetV3-Large family: every DN is torchvision's ``mobilenet_v3_large(width_mult=w)``."""
from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models import mobilenet_v3_large

from ..dn import DNSpec, register_family
from ..slim.mbv3 import BN_EPS, BN_MOMENTUM, STAGE_ENDS, SlimMobileNetV3, dn_channels
from .base import Family

__all__ = ["MBV3"]


def _build_static(dn: DNSpec, num_classes=None, norm_layer=None) -> nn.Module:
    if norm_layer is None:
        norm_layer = partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
    classes = 1000 if num_classes is None else num_classes
    model = mobilenet_v3_large(width_mult=dn.width, num_classes=classes, norm_layer=norm_layer)
    if num_classes is None:
        model.classifier = nn.Identity()
    return model


def _stages(dn: DNSpec) -> tuple[tuple[str, ...], ...]:
    """features[1:4] -> stride 4 (tap features[3]), [4:7] -> 8, [7:13] -> 16, [13:17] -> 32."""
    bounds = (1,) + STAGE_ENDS
    return tuple(tuple(f"features.{i}" for i in range(start, end)) for start, end in zip(bounds[:-1], bounds[1:]))


_S11 = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))  # the paper's 5-, 3- and 11-switch sets
_S5 = (0.5, 0.625, 0.75, 0.875, 1.0)
_S3 = (0.5, 0.75, 1.0)

MBV3 = Family(
    name="mbv3", widths=tuple(sorted(set(_S11) | set(_S5))),
    sets={f"mbv3_s{len(ws)}": tuple(f"mbv3_w{w!r}" for w in ws) for ws in (_S3, _S5, _S11)}, default_set="mbv3_s5",
    resolution=224, supernet=SlimMobileNetV3, build_static=_build_static, channels=dn_channels, stem=("features.0",),
    stages=_stages, head="classifier", norm_eps=BN_EPS, norm_momentum=BN_MOMENTUM,
    regularizers=("dropout", "drop_path"))
register_family(MBV3)
