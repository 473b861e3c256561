"""BN statistics of one DN: recomputed exactly on a sample of images (every DN of a supernet shares its BN
buffers, so a DN taken out of it needs statistics of its own), and the seeded sample itself."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["recalibrate_bn", "seeded_subset"]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, num_batches: int | None = None) -> int:
    """Recompute every BatchNorm's running statistics as the exact average over ``num_batches`` batches,
    each batch weighted by its number of images (a partial last batch counts for what it holds).

    ``batches`` yields tensors or tuples whose first item is the input (a DataLoader works). Works on an
    exported DN or on a supernet slimmed to a DN (shared BN buffers then hold that DN's statistics).
    Only the BN layers run in train mode: dropout and stochastic depth stay off, as at inference.
    Returns the number of batches used; every module's mode and BN momentum are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved_momentum = [m.momentum for m in norms]
    saved_modes = [(m, m.training) for m in model.modules()]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.train()
    used = seen = 0
    try:
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            seen += len(inputs)
            for m in norms:  # running = (1 - m) running + m batch: m = n / seen keeps the image-weighted mean
                m.momentum = len(inputs) / seen
            model(inputs)
            used += 1
    finally:
        for m, momentum in zip(norms, saved_momentum):
            m.momentum = momentum
        for m, training in saved_modes:
            m.training = training
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
