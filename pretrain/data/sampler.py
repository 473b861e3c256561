"""The pretraining and supervised trainers' sampler: shuffled per epoch, split across ranks, resumable at any
batch, a seed per image."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler

from dspnet_d2.errors import InvalidInputError
from dspnet_d2.runtime.seeding import derive_seed

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler):
    """Per-epoch shuffled indices split across ranks, resumable at any batch, with per-image seeds.

    Yields ``(index, seed)``. The epoch is cut to a multiple of the global batch, so every rank
    runs the same number of steps; global batch k holds the same images for any world size.
    """

    def __init__(self, size: int, global_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by world size {world_size}")
        if size < global_batch:
            raise InvalidInputError(f"the dataset has {size} images, fewer than one global batch of {global_batch}")
        self.size, self.global_batch, self.rank, self.world_size, self.seed = size, global_batch, rank, world_size, seed
        self.batch = global_batch // world_size
        self.epoch, self.start_batch = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_batch) * self.batch

    def __iter__(self):
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=gen)[:self.steps_per_epoch * self.global_batch].tolist()
        mine = order[self.rank::self.world_size]  # global batch k = order[k*B:(k+1)*B] on any world size
        for index in mine[self.start_batch * self.batch:]:
            yield index, derive_seed(self.seed, self.epoch, index)
