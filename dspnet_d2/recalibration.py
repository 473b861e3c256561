"""BN recalibration, in one place: a DN's BN statistics recomputed exactly on a seeded sample of images (every DN
of a supernet shares its BN buffers, so a DN taken out of it needs statistics of its own), the sample and its
loader, and the command-line options of the commands that recalibrate (export, conversion)."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from typing import Callable, Iterable, NoReturn

import torch
from torch import nn
from torch.utils.data import DataLoader

from .errors import InvalidInputError
from .images import ImageFolderIO, LabelledImages, eval_transform
from .runtime.workers import ShieldedLoader

__all__ = ["recalibrate_bn", "seeded_subset", "recalibration_loader", "recalibrate_on_images", "IMAGENET_MEAN",
           "IMAGENET_STD", "RecalibrationOptions", "add_recalibration_args", "check_recalibration_args",
           "report_usage_error", "images_from_args", "recalibrate_from_args", "check_images_from_args"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
UsageError = Callable[[str], NoReturn]  # a command's ``parser.error``: prints the usage and the message, exits 2


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


def recalibration_loader(images: ImageFolderIO, transform, batch_size: int, num_batches: int, seed: int,
                         num_workers: int = 0) -> DataLoader:
    """Batches of a seeded random sample (without replacement) of ``num_batches x batch_size`` images."""
    indices = seeded_subset(len(images), num_batches * batch_size, seed)
    return ShieldedLoader(LabelledImages(images, transform, indices), batch_size=batch_size, shuffle=False,
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


# -- the options of the commands that recalibrate one DN ----------------------------------------------
@dataclass(frozen=True)
class RecalibrationOptions:
    """A per-DN BN recalibration on an image folder, as ``add_recalibration_args``'s options give it."""

    data_root: str | None = None  # ImageFolder root holding <split>/<class>/<image>; None: no images
    split: str = "train"
    no_bn_recalibration: bool = False  # keep a supernet checkpoint's shared BN statistics
    batches: int = 100  # batches of center crops
    batch_size: int = 256
    resolution: int | None = None  # crop size, also the exported file's; None: the family's evaluation resolution
    resize_ratio: float = 0.875
    seed: int = 0  # of the image sample

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "RecalibrationOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def add_recalibration_args(parser: argparse.ArgumentParser) -> None:
    """The command-line options of a per-DN BN recalibration (``RecalibrationOptions.from_args`` reads them)."""
    default = RecalibrationOptions()
    group = parser.add_argument_group("BN recalibration of one DN")
    group.add_argument("--data-root", help="ImageFolder root holding <split>/<class>/<image>")
    group.add_argument("--split", default=default.split, help="the training images' sub-folder (default: train)")
    group.add_argument("--no-bn-recalibration", action="store_true",
                       help="keep a supernet checkpoint's shared BN statistics")
    group.add_argument("--batches", type=int, default=default.batches, help="batches of center crops (default: 100)")
    group.add_argument("--batch-size", type=int, default=default.batch_size)
    group.add_argument("--resolution", type=int, default=None,
                       help="crop size (default: the family's evaluation resolution, 224)")
    group.add_argument("--resize-ratio", type=float, default=default.resize_ratio)
    group.add_argument("--seed", type=int, default=default.seed, help="seed of the image sample (default: 0)")


def check_recalibration_args(args: RecalibrationOptions, shares_bn: bool,
                             usage_error: UsageError | None = None) -> None:
    """A DN of a supernet checkpoint (``shares_bn``: every DN shares its BN buffers) needs ``--data-root``
    or an explicit ``--no-bn-recalibration``. ``usage_error``: the command's ``parser.error`` (default: an
    InvalidInputError)."""
    if shares_bn and not (args.data_root or args.no_bn_recalibration):
        report_usage_error("a DN of a supernet checkpoint needs --data-root to recalibrate its BN statistics (all "
                           "DNs share them in the supernet), or --no-bn-recalibration to keep them", usage_error)


def report_usage_error(message: str, usage_error: UsageError | None = None) -> NoReturn:
    """A mistake in a command's options: the parser's usage and message when given, else an InvalidInputError."""
    if usage_error is not None:
        usage_error(message)
    raise InvalidInputError(message)


def images_from_args(args: RecalibrationOptions) -> ImageFolderIO | None:
    """The image folder of ``--data-root`` / ``--split`` (listed once: an ImageNet split holds 1.28M files),
    or None without ``--data-root``."""
    return ImageFolderIO(os.path.join(args.data_root, args.split)) if args.data_root else None


def recalibrate_from_args(model: nn.Module, dn, args: RecalibrationOptions,
                          images: ImageFolderIO | None) -> dict | None:
    """Recalibrate ``model`` (DN ``dn``) on ``images`` (``images_from_args``) as the options say; returns the
    record, or None when not asked."""
    if images is None or args.no_bn_recalibration:
        return None
    return recalibrate_on_images(model, images, args.resolution or dn.info.eval_resolution, args.batch_size,
                                 args.batches, args.seed, resize_ratio=args.resize_ratio)


def check_images_from_args(images: ImageFolderIO | None, args: RecalibrationOptions, resolution: int,
                           count: int = 8) -> torch.Tensor | None:
    """Center crops of ``count`` images of the seeded sample of ``images`` (``images_from_args``; None without
    it): the real images an exported file's parity check runs on."""
    if images is None:
        return None
    transform = eval_transform(resolution, args.resize_ratio, IMAGENET_MEAN, IMAGENET_STD)
    return next(iter(recalibration_loader(images, transform, min(count, len(images)), 1, args.seed)))[0]
