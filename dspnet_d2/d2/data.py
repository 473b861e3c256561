"""detectron2's training batches, made resumable at any iteration: a rerun with ``--resume`` after a stop sees the
very batches and augmentations an uninterrupted run would, with loader workers that outlive a stop signal.

detectron2's own loader cannot do this: its aspect-ratio grouping happens on loaded images in the main process and
its augmentations draw from each worker's generator, so both depend on everything loaded before. Here the grouping
is done on the indices (each image's aspect ratio is in its dataset dict) and each image's augmentation is seeded by
its place in the stream, so batch ``i`` is a function of the seed and ``i`` alone.
"""
from __future__ import annotations

import copy
import itertools
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..stopping import ShieldedWorkerInit
from . import require_detectron2

require_detectron2(__name__)

from detectron2.data.build import _train_loader_from_config  # noqa: E402
from detectron2.utils import comm  # noqa: E402

__all__ = ["ResumableBatchSampler", "SeededMapDataset", "build_resumable_train_loader"]


class ResumableBatchSampler(Sampler):
    """This rank's batches of ``(index, seed)`` from detectron2's infinite, rank-sharded index stream
    (``index_sampler``), grouped by aspect ratio (landscape or portrait, as detectron2's grouping) when
    ``is_landscape`` is given, starting at batch ``start_iter``.

    The batches before ``start_iter`` are replayed on indices only (no image is read): about a second for
    180k iterations."""

    def __init__(self, index_sampler, batch_size: int, seed: int, is_landscape: list[bool] | None = None,
                 start_iter: int = 0):
        self.index_sampler, self.batch_size, self.seed = index_sampler, batch_size, seed
        self.is_landscape, self.start_iter = is_landscape, start_iter

    def _batches(self):
        buckets = {False: [], True: []}
        for position, index in enumerate(self.index_sampler):
            bucket = buckets[bool(self.is_landscape[index]) if self.is_landscape is not None else True]
            bucket.append((index, (self.seed * 1_000_003 + comm.get_rank()) * 1_000_000_007 + position))
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()

    def __iter__(self):
        return itertools.islice(self._batches(), self.start_iter, None)


class SeededMapDataset(Dataset):
    """``mapper(dataset_dicts[index])`` for ``(index, seed)`` items, with Python's, NumPy's and torch's generators
    seeded by ``seed`` (detectron2's augmentations draw from NumPy's). A dict the mapper drops (``None``) is
    replaced by the next one, as detectron2's ``MapDataset`` retries, but deterministically."""

    def __init__(self, dataset_dicts, mapper):
        self.dicts, self.mapper = dataset_dicts, mapper

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        states = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                for attempt in range(len(self.dicts)):
                    random.seed(seed + attempt)
                    np.random.seed((seed + attempt) % 2 ** 32)
                    torch.manual_seed(seed + attempt)
                    mapped = self.mapper(copy.deepcopy(self.dicts[(index + attempt) % len(self.dicts)]))
                    if mapped is not None:
                        return mapped
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
        raise RuntimeError("the dataset mapper dropped every image of the training set")


def _as_list(batch):  # detection batches are lists of dicts, not collated tensors
    return batch


def build_resumable_train_loader(cfg) -> DataLoader:
    """detectron2's training loader of ``cfg`` (its dataset, mapper and index sampler, ``IMS_PER_BATCH`` split
    across ranks, ``ASPECT_RATIO_GROUPING``), resumable: set ``loader.batch_sampler.start_iter`` before the first
    batch is drawn."""
    parts = _train_loader_from_config(cfg)
    dicts = parts["dataset"]
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by {world} processes")
    landscape = [d["width"] >= d["height"] for d in dicts] if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None
    batches = ResumableBatchSampler(parts["sampler"], cfg.SOLVER.IMS_PER_BATCH // world, max(cfg.SEED, 0), landscape)
    workers = cfg.DATALOADER.NUM_WORKERS
    # a generator of its own: starting the workers would otherwise draw from the global one, which the checkpoint
    # restores for the proposal sampling, and a resumed run starts its workers after that restore
    return DataLoader(SeededMapDataset(dicts, parts["mapper"]), batch_sampler=batches, num_workers=workers,
                      collate_fn=_as_list, worker_init_fn=ShieldedWorkerInit(), persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(max(cfg.SEED, 0)))
