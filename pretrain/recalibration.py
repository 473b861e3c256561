"""BN recalibration on training images: the one sampler that evaluation, export and conversion share."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from dspnet_d2.recalibration import recalibrate_bn, seeded_subset

from .data import ImageFolderIO, LabelledImages, eval_transform

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def recalibration_loader(images: ImageFolderIO, transform, batch_size: int, num_batches: int, seed: int,
                         num_workers: int = 0) -> DataLoader:
    """Batches of a seeded random sample (without replacement) of ``num_batches x batch_size`` images."""
    indices = seeded_subset(len(images), num_batches * batch_size, seed)
    return DataLoader(LabelledImages(images, transform, indices), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers)


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


def add_recalibration_args(parser) -> None:
    """The command-line options of a per-DN BN recalibration (tools/convert_to_d2.py, tools/export_dn.py)."""
    group = parser.add_argument_group("BN recalibration of one DN")
    group.add_argument("--data-root", help="ImageFolder root holding <split>/<class>/<image>")
    group.add_argument("--split", default="train", help="the training images' sub-folder (default: train)")
    group.add_argument("--no-bn-recalibration", action="store_true",
                       help="keep a supernet checkpoint's shared BN statistics")
    group.add_argument("--batches", type=int, default=100, help="batches of center crops (default: 100)")
    group.add_argument("--batch-size", type=int, default=256)
    group.add_argument("--resolution", type=int, default=None,
                       help="crop size (default: the family's evaluation resolution, 224)")
    group.add_argument("--resize-ratio", type=float, default=0.875)
    group.add_argument("--seed", type=int, default=0, help="seed of the image sample (default: 0)")


def check_recalibration_args(parser, args, shares_bn: bool) -> None:
    """A DN of a supernet checkpoint (``shares_bn``: every DN shares its BN buffers) needs ``--data-root``
    or an explicit ``--no-bn-recalibration``."""
    if shares_bn and not (args.data_root or args.no_bn_recalibration):
        parser.error("a DN of a supernet checkpoint needs --data-root to recalibrate its BN statistics (all DNs "
                     "share them in the supernet), or --no-bn-recalibration to keep them")


def recalibrate_from_args(model: nn.Module, dn, args) -> dict | None:
    """Recalibrate ``model`` (DN ``dn``) as the options say; returns the record, or None when not asked."""
    if not args.data_root or args.no_bn_recalibration:
        return None
    import os

    return recalibrate_on_images(model, ImageFolderIO(os.path.join(args.data_root, args.split)),
                                 args.resolution or dn.info.eval_resolution, args.batch_size, args.batches, args.seed,
                                 resize_ratio=args.resize_ratio)


def check_images_from_args(dn, args, resolution: int, count: int = 8) -> torch.Tensor | None:
    """Center crops of ``count`` images of the seeded sample of ``--data-root`` (None without it): the real
    images an exported file's parity check runs on."""
    if not args.data_root:
        return None
    import os

    images = ImageFolderIO(os.path.join(args.data_root, args.split))
    transform = eval_transform(resolution, args.resize_ratio, IMAGENET_MEAN, IMAGENET_STD)
    return next(iter(recalibration_loader(images, transform, min(count, len(images)), 1, args.seed)))[0]
