"""detectron2's training batches, made resumable at any iteration: a rerun with ``--resume`` after a stop sees the
very batches and augmentations an uninterrupted run would, with loader workers that outlive a stop signal.

detectron2's own loader cannot do this: its aspect-ratio grouping happens on loaded images in the main process and
its augmentations draw from each worker's generator, so both depend on everything loaded before. Here the grouping
is done on the indices (each image's aspect ratio is in its dataset dict) and each image's augmentation is seeded by
its place in the stream, so batch ``i`` is a function of the seed and ``i`` alone.
"""
from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..runtime.seeding import derive_seed, seeded
from ..runtime.workers import ShieldedLoader
from . import require_detectron2

require_detectron2(__name__)

from detectron2.data.build import _train_loader_from_config  # noqa: E402
from detectron2.data.common import DatasetFromList  # noqa: E402
from detectron2.utils import comm  # noqa: E402

__all__ = ["ResumableBatchSampler", "SeededMapDataset", "build_resumable_train_loader", "data_seed"]


class ResumableBatchSampler(Sampler):
    """This rank's batches of ``(index, position)`` from detectron2's infinite, rank-sharded index stream
    (``index_sampler``; ``position``: the index's place in that stream), grouped by aspect ratio (landscape or
    portrait, as detectron2's grouping) when ``is_landscape`` is given, starting at batch ``start_iter``.

    The batches before ``start_iter`` are replayed on indices only (no image is read): about a second for
    180k iterations."""

    def __init__(self, index_sampler, batch_size: int, is_landscape=None, start_iter: int = 0):
        self.index_sampler, self.batch_size = index_sampler, batch_size
        self.is_landscape, self.start_iter = is_landscape, start_iter

    def _batches(self):
        buckets = {False: [], True: []}
        for position, index in enumerate(self.index_sampler):
            bucket = buckets[bool(self.is_landscape[index]) if self.is_landscape is not None else True]
            bucket.append((index, position))
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()

    def __iter__(self):
        return itertools.islice(self._batches(), self.start_iter, None)


class SeededMapDataset(Dataset):
    """``mapper(dataset[index])`` for the ``(index, position)`` items of ``ResumableBatchSampler``, with Python's,
    NumPy's and torch's CPU generators seeded by ``derive_seed(seed, position, attempt)`` and restored after it
    (detectron2's augmentations draw from NumPy's; the GPUs' generators are not touched). ``seed``: the run's seed
    and this rank, so no two ranks or places share one. A dict the mapper drops (``None``) is replaced by the next
    one, as detectron2's ``MapDataset`` retries, but deterministically.

    ``dataset``: detectron2's ``DatasetFromList(serialize=True)``, the dicts as one byte buffer, so forked workers
    do not copy them page by page as Python's reference counts touch them."""

    def __init__(self, dataset, mapper, seed: int):
        self.dataset, self.mapper, self.seed = dataset, mapper, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, position = item
        for attempt in range(len(self.dataset)):
            with seeded(derive_seed(self.seed, position, attempt)):
                mapped = self.mapper(self.dataset[(index + attempt) % len(self.dataset)])
            if mapped is not None:
                return mapped
        raise RuntimeError("the dataset mapper dropped every image of the training set")


def _as_list(batch):  # detection batches are lists of dicts, not collated tensors
    return batch


def data_seed(cfg) -> int:
    """The seed of the training batches: ``SEED``, or for detectron2's ``-1`` (a random seed per run in its own
    trainer) 0, so that a resumed run continues the same stream."""
    return max(cfg.SEED, 0)


def build_resumable_train_loader(cfg, mapper=None) -> ShieldedLoader:
    """detectron2's training loader of ``cfg`` (its dataset, mapper and index sampler, ``IMS_PER_BATCH`` split
    across ranks, ``ASPECT_RATIO_GROUPING``), resumable: set ``loader.batch_sampler.start_iter`` before the first
    batch is drawn. ``mapper``: as in ``build_detection_train_loader`` (default: ``DatasetMapper(cfg, True)``)."""
    parts = _train_loader_from_config(cfg, mapper=mapper)
    dicts = parts["dataset"]
    world = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise ValueError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by {world} processes")
    landscape = (np.array([d["width"] >= d["height"] for d in dicts], dtype=bool)
                 if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None)
    dataset = dicts if isinstance(dicts, DatasetFromList) else DatasetFromList(dicts, copy=False, serialize=True)
    del dicts, parts["dataset"]  # only the serialized copy stays
    batches = ResumableBatchSampler(parts["sampler"], cfg.SOLVER.IMS_PER_BATCH // world, landscape)
    workers = cfg.DATALOADER.NUM_WORKERS
    seed = data_seed(cfg)
    # a generator of its own: starting the workers would otherwise draw from the global one, which the checkpoint
    # restores for the proposal sampling, and a resumed run starts its workers after that restore
    return ShieldedLoader(SeededMapDataset(dataset, parts["mapper"], derive_seed(seed, comm.get_rank())),
                          batch_sampler=batches, num_workers=workers, collate_fn=_as_list,
                          persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed))
