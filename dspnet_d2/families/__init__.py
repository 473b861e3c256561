"""Family descriptors, and what is built from a DN through them: its supernet and its static network.

Adding a family means one new file here (its ``Family``) plus its grid in ``dn.FAMILIES``.
"""
from __future__ import annotations

from typing import Callable, Iterable

from torch import nn

from ..dn import FAMILIES, DNSpec, dn_set, largest_dn, parse_dn
from .base import Family
from .mbv3 import MBV3
from .resnet import RESNET, BasicResNet

FAMILY_DESCRIPTORS: dict[str, Family] = {family.name: family for family in (MBV3, RESNET)}
assert set(FAMILY_DESCRIPTORS) == set(FAMILIES), "every family of dn.FAMILIES needs a descriptor"

__all__ = ["Family", "FAMILY_DESCRIPTORS", "BasicResNet", "get_family", "build_supernet", "build_static_dn",
           "head_names"]


def get_family(dn_or_name: "str | DNSpec") -> Family:
    """The descriptor of a family, given its name (``"mbv3"``) or any DN of it."""
    if isinstance(dn_or_name, DNSpec):
        return FAMILY_DESCRIPTORS[dn_or_name.family]
    if dn_or_name in FAMILY_DESCRIPTORS:
        return FAMILY_DESCRIPTORS[dn_or_name]
    return FAMILY_DESCRIPTORS[parse_dn(dn_or_name).family]


def build_supernet(dns: "str | Iterable[str | DNSpec]", num_classes: int | None = None):
    """The supernet holding every DN of ``dns`` (a DN-set name, a DN string or a list of DNs)."""
    top = largest_dn(dn_set(dns))
    return get_family(top).supernet(top, num_classes=num_classes)


def build_static_dn(dn: "str | DNSpec", num_classes: int | None = None,
                    norm_layer: Callable[..., nn.Module] | None = None) -> nn.Module:
    """The plain torchvision network of ``dn``; ``num_classes=None`` replaces the classifier by
    ``nn.Identity`` so the output is the pooled feature vector."""
    dn = parse_dn(dn)
    return get_family(dn).build_static(dn, num_classes, norm_layer)


def head_names() -> tuple[str, ...]:
    """The classifier module name of every family (``classifier``, ``fc``)."""
    return tuple(sorted({family.head for family in FAMILY_DESCRIPTORS.values()}))
