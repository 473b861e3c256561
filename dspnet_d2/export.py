"""A DN as a plain torchvision network: out of a supernet in memory (``export_dn``) or out of a weight file
(``load_dn_model``). Its BN statistics: ``recalibration``; deployable files: ``deploy``."""
from __future__ import annotations

import torch
from torch import nn

from .dn import DNSpec
from .families import get_family
from .slim.base import Supernet
from .weights import dn_in_source, read_source, static_dn

__all__ = ["export_dn", "load_dn_model"]

@torch.no_grad()
def export_dn(supernet: Supernet, dn: "str | DNSpec") -> nn.Module:
    """The DN ``dn`` of ``supernet`` as a plain torchvision network with independent (cloned) weights.

    The result needs nothing from this package; its output equals the supernet's with ``dn`` active.
    """
    dn = supernet.check_dn(dn)
    return static_dn(supernet.state_dict(), dn, supernet.num_classes).train(supernet.training)


def load_dn_model(source: str, dn: "str | DNSpec | None" = None, classifier: bool = True) -> tuple[nn.Module, DNSpec]:
    """The static DN of a weight file (pretraining or supervised checkpoint, exported DN), in eval mode,
    with its classifier when the file has one and ``classifier`` is true. ``dn`` may be omitted for a
    file of one DN."""
    weights, dns, _ = read_source(source, allow_torchvision=False)
    dn = dn_in_source(source, dns, dn)
    head = get_family(dn.family).head
    head_weights = sorted((k for k in weights if k.startswith(head + ".") and k.endswith(".weight")),
                          key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")])
    num_classes = weights[head_weights[-1]].shape[0] if classifier and head_weights else None
    return static_dn(weights, dn, num_classes).eval(), dn
