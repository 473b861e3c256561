"""A DN out of a supernet in memory as a plain torchvision network (out of a file: ``weights.read_weights``).
Its BN statistics: ``recalibration``; deployable files: ``deploy``."""
from __future__ import annotations

import torch
from torch import nn

from ..dn import DNSpec
from ..slim.base import Supernet
from ..weights import static_dn

__all__ = ["export_dn"]

@torch.no_grad()
def export_dn(supernet: Supernet, dn: "str | DNSpec") -> nn.Module:
    """The DN ``dn`` of ``supernet`` as a plain torchvision network with independent (cloned) weights.

    The result needs nothing from this package; its output equals the supernet's with ``dn`` active.
    """
    dn = supernet.check_dn(dn)
    return static_dn(supernet.state_dict(), dn, supernet.num_classes).train(supernet.training)
