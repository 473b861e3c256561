"""BN recalibration on training images: the one sampler that evaluation, export and conversion share (their
command-line options are in ``cli_args``)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from dspnet_d2.recalibration import recalibrate_bn, seeded_subset
from dspnet_d2.stopping import ShieldedWorkerInit

from .folder import ImageFolderIO, LabelledImages
from .transforms import eval_transform

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def recalibration_loader(images: ImageFolderIO, transform, batch_size: int, num_batches: int, seed: int,
                         num_workers: int = 0) -> DataLoader:
    """Batches of a seeded random sample (without replacement) of ``num_batches x batch_size`` images."""
    indices = seeded_subset(len(images), num_batches * batch_size, seed)
    return DataLoader(LabelledImages(images, transform, indices), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, worker_init_fn=ShieldedWorkerInit())


def recalibrate_on_images(model: nn.Module, images: ImageFolderIO, resolution: int, batch_size: int,
                          num_batches: int, seed: int, device: torch.device | str = "cpu", num_workers: int = 0,
                          resize_ratio: float = 0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """Recompute ``model``'s BN statistics on center crops of a seeded sample of ``images``.

    Returns what a results or weights file records: the seed, the number of images and the resolution.
    """
    transform = eval_transform(resolution, resize_ratio, mean, std)
    loader = recalibration_loader(images, transform, batch_size, num_batches, seed, num_workers)
    recalibrate_bn(model, (x.to(device, non_blocking=True) for x, _, _ in loader))
    return {"seed": seed, "images": len(loader.dataset), "resolution": resolution}

