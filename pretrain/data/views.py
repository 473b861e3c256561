"""Pretraining data: BYOL's two views of each image of a folder, with the images skipped and the label.

Augmentations are seeded per (epoch, image), so a resumed run sees exactly the views an
uninterrupted one would, whatever the number of workers or ranks.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from dspnet_d2.images import ImageFolderIO, load_readable

from .augment import BYOLViews

__all__ = ["TwoViewDataset", "collate_views"]


class TwoViewDataset(Dataset):
    """Two augmented uint8 views of each image (``BYOLViews``), the images skipped and the class label (what
    the online linear probe trains on). Items are requested as ``(index, seed)``.

    A corrupt image is replaced by the next readable one and counted, so batches keep their size
    (DDP ranks stay in step) and the count reaches the logs.
    """

    def __init__(self, images: ImageFolderIO, views: BYOLViews):
        self.images, self.views = images, views

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU generator alone: torch.manual_seed costs ~1 ms
            decoded, position, skipped = load_readable(self.images, index, self.views.decode)
            view1, view2 = self.views.augment(decoded)  # outside the unreadable-file guard: its errors surface
        return view1, view2, skipped, self.images.samples[position][1]


def collate_views(batch):
    view1, view2, skipped, labels = zip(*batch)
    return _stack_hwc(view1), _stack_hwc(view2), sum(skipped), torch.tensor(labels)


def _stack_hwc(views) -> torch.Tensor:
    """CHW views of HWC images -> an NCHW batch in channels_last strides: the HWC memory is copied as it is,
    the transpose is left to the device (``Trainer.run_batch``)."""
    return torch.stack([v.permute(1, 2, 0) for v in views]).permute(0, 3, 1, 2)
