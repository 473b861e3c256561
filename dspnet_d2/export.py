"""Export a DN out of a supernet as a plain network, and recalibrate BN statistics."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .dn import DNSpec
from .slim.base import Supernet
from .weights import static_dn

__all__ = ["export_dn", "recalibrate_bn", "seeded_subset"]


@torch.no_grad()
def export_dn(supernet: Supernet, dn: "str | DNSpec") -> nn.Module:
    """The DN ``dn`` of ``supernet`` as a plain torchvision network with independent (cloned) weights.

    The result needs nothing from this package; its output equals the supernet's with ``dn`` active.
    """
    dn = supernet.check_dn(dn)
    return static_dn(supernet.state_dict(), dn, supernet.num_classes).train(supernet.training)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, num_batches: int | None = None) -> int:
    """Recompute every BatchNorm's running statistics as the exact average over ``num_batches`` batches.

    ``batches`` yields tensors or tuples whose first item is the input (a DataLoader works). Works on an
    exported DN or on a supernet slimmed to a DN (shared BN buffers then hold that DN's statistics).
    Returns the number of batches used. Dropout and BN modes are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch weighs the same
    model.train()
    used = 0
    try:
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(inputs)
            used += 1
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
    if used == 0:
        raise ValueError("recalibrate_bn got no batches")
    return used


def seeded_subset(num_items: int, max_items: int, seed: int) -> list[int]:
    """``min(num_items, max_items)`` distinct indices of ``range(num_items)`` drawn at random from ``seed``.

    The sample of BN recalibration: image folders list their files class by class, so reading them in
    order would show the statistics of the first few classes only (200 x 256 ImageNet images cover
    40 of its 1000 classes). The same seed gives the same sample on every rank and in every run.
    """
    if num_items < 1 or max_items < 1:
        raise ValueError(f"a sample needs items and a positive quota, got {num_items} items, quota {max_items}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_items, generator=generator)[:max_items].tolist()
