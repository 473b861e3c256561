"""The families of networks, and what is built from a DN through them: its supernet and its static network.

A family is one ``Family`` (every fact about it: width grid, depth limits, DN sets, resolutions, builders)
handed to ``register_family``, plus its slimmable supernet. Adding one takes two files, ``families/<name>.py``
(its ``Family``, registered at import: every module of this package is imported below) and ``slim/<name>.py``
(its ``Supernet``); a family defined outside the package calls ``register_family`` itself.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from torch import nn

from ..dn import FAMILIES, DNSpec, largest_dn, register_family, unregister_family
from ..errors import InvalidInputError
from .base import Family

for _module in pkgutil.iter_modules(__path__):  # each family module registers its Family
    importlib.import_module(f"{__name__}.{_module.name}")

from .resnet import BasicResNet  # noqa: E402

__all__ = ["Family", "FAMILIES", "register_family", "unregister_family", "BasicResNet", "get_family",
           "build_supernet", "build_static_dn"]


def get_family(name: str) -> Family:
    """The registered family named ``name`` (``"mbv3"``; a DN's is ``dn.info``)."""
    if name not in FAMILIES:
        raise InvalidInputError(f"unknown DN family {name!r}; known families: {sorted(FAMILIES)}")
    return FAMILIES[name]


def build_supernet(dns: tuple[DNSpec, ...], num_classes: int | None = None):
    """The supernet holding every DN of ``dns`` (one family)."""
    top = largest_dn(dns)
    return top.info.supernet(top, num_classes=num_classes)


def build_static_dn(dn: DNSpec, num_classes: int | None = None,
                    norm_layer: Callable[..., nn.Module] | None = None) -> nn.Module:
    """The plain torchvision network of ``dn``; ``num_classes=None`` replaces the classifier by
    ``nn.Identity`` so the output is the pooled feature vector."""
    return dn.info.build_static(dn, num_classes, norm_layer)
