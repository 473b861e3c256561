"""A DN out of a supernet in memory as a plain torchvision network: the leading slices of the supernet's tensors,
copied into the DN's static layers. (Out of a file: ``dspnet_d2.weights``; its BN statistics: ``recalibration``;
deployable files: ``dspnet_d2.deploy``.)"""
from __future__ import annotations

import torch
from torch import nn

from ..dn import DNSpec
from .base import Supernet

__all__ = ["slice_dn", "slice_state_dict"]


def slice_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """For every key of ``target``, the leading slice of ``source[key]`` with ``target``'s shape, cloned.

    Raises ``KeyError`` for a key the source lacks and ``ValueError`` for a source tensor smaller than
    the target (a DN that is not a sub-network of the source).
    """
    out = {}
    for key, ref in target.items():
        if key not in source:
            raise KeyError(f"weights for {key!r} are missing from the source state_dict")
        src = source[key]
        if src.dim() != ref.dim() or any(s < r for s, r in zip(src.shape, ref.shape)):
            raise ValueError(f"{key}: source shape {tuple(src.shape)} cannot be sliced to {tuple(ref.shape)}")
        out[key] = src[tuple(slice(0, n) for n in ref.shape)].clone()
    return out


@torch.no_grad()
def slice_dn(supernet: Supernet, dn: DNSpec) -> nn.Module:
    """The DN ``dn`` of ``supernet`` as a plain torchvision network with independent (cloned) weights, in the
    supernet's training mode.

    The result needs nothing from this package; its output equals the supernet's with ``dn`` active.
    """
    dn = supernet.check_dn(dn)
    model = dn.info.build_static(dn, supernet.num_classes, None)
    model.load_state_dict(slice_state_dict(supernet.state_dict(), model.state_dict()), strict=True)
    return model.train(supernet.training)
