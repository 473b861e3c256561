"""Command-line options the tools share: a per-DN BN recalibration on an image folder (tools/convert_to_d2.py,
tools/export_dn.py) and what the commands do with them."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields
from typing import Callable, NoReturn

import torch
from torch import nn

from dspnet_d2.errors import InvalidInputError

from .folder import ImageFolderIO
from .transforms import eval_transform
from .recalibration import IMAGENET_MEAN, IMAGENET_STD, recalibrate_on_images, recalibration_loader

UsageError = Callable[[str], NoReturn]  # a command's ``parser.error``: prints the usage and the message, exits 2


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
