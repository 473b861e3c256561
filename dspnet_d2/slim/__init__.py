"""Slimmable supernets and their layers."""
from __future__ import annotations

from typing import Iterable

from ..dn import DNSpec, dn_set, largest_dn
from .base import FEATURE_NAMES, FEATURE_STRIDES, Supernet
from .mobilenetv3 import SlimMobileNetV3
from .resnet import SlimResNet

SUPERNETS = {"mbv3": SlimMobileNetV3, "resnet": SlimResNet}

__all__ = ["Supernet", "SlimMobileNetV3", "SlimResNet", "SUPERNETS", "FEATURE_NAMES", "FEATURE_STRIDES",
           "build_supernet"]


def build_supernet(dns: "str | Iterable[str | DNSpec]", num_classes: int | None = None) -> Supernet:
    """The supernet holding every DN of ``dns`` (a DN-set name, a DN string or a list of DNs)."""
    dns = dn_set(dns)
    top = largest_dn(dns)
    return SUPERNETS[top.family](top, num_classes=num_classes)
