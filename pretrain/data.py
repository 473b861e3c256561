"""Pretraining data: ImageFolder through iopath, BYOL's two asymmetric views, a resumable sampler.

Augmentations are seeded per (epoch, image), so a resumed run sees exactly the views an
uninterrupted one would, whatever the number of workers or ranks.
"""
from __future__ import annotations

import logging
import os

import torch
from iopath.common.file_io import g_pathmgr
from PIL import Image, ImageFilter
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T

from dspnet_d2.errors import InvalidInputError, MissingFileError

from .augment import BYOLViews

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

__all__ = ["ImageFolderIO", "load_readable", "TwoViewDataset", "ResumableSampler", "GaussianBlurPIL", "byol_transforms", "collate_views",
           "eval_transform", "LabelledImages"]


class ImageFolderIO(Dataset):
    """``root/<class>/<image>`` read through iopath; ``__getitem__`` returns (PIL image or None, label).

    An unreadable, corrupt or truncated file gives ``None`` instead of raising, so callers can skip it.
    """

    def __init__(self, root: str):
        if not g_pathmgr.isdir(root):
            raise MissingFileError(f"image folder {root!r} does not exist")
        self.root = root
        self.classes = sorted(d for d in g_pathmgr.ls(root) if g_pathmgr.isdir(os.path.join(root, d)))
        if not self.classes:
            raise MissingFileError(f"image folder {root!r} has no class sub-folders")
        self.samples: list[tuple[str, int]] = []
        for label, name in enumerate(self.classes):
            folder = os.path.join(root, name)
            files = sorted(f for f in g_pathmgr.ls(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not files:
                raise MissingFileError(f"class folder {folder!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            self.samples += [(os.path.join(folder, f), label) for f in files]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> Image.Image | None:
        return self.load_with(index, _decode_rgb)

    def load_with(self, index: int, decode):
        """``decode(image_file)`` of the opened, not yet decoded image (it may pick a JPEG draft size
        first), or ``None`` if the file is unreadable, corrupt or truncated.

        ``decode`` must only decode (and may draw what needs the image size): whatever it raises counts
        as an unreadable file, so an augmentation belongs after it, where its bugs surface."""
        path = self.samples[index][0]
        try:
            with g_pathmgr.open(path, "rb") as f:
                return decode(Image.open(f))
        except (OSError, ValueError, SyntaxError) as err:  # what PIL raises for unreadable image data
            logger.warning("skipping unreadable image %s: %s", path, err)
            return None

    def __getitem__(self, index: int):
        return self.load(index), self.samples[index][1]


def _decode_rgb(image_file: Image.Image) -> Image.Image:
    image_file.load()  # decode now: truncated files raise here
    return image_file.convert("RGB")


class GaussianBlurPIL:
    """Gaussian blur of a PIL image, sigma drawn uniformly from ``sigma`` per call, as MoCo v2 and solo-learn blur.

    Sigma comes from torch's global RNG, so seeding it per image (``TwoViewDataset``) makes the views
    reproducible. PIL approximates the Gaussian with repeated (extended) box blurs of the same variance
    and does not truncate it; torchvision's ``T.GaussianBlur`` convolves with the exact Gaussian truncated
    to a fixed kernel: several times slower on PIL images at 224 px with BYOL's 23 px kernel, and at small
    resolutions (a 3 px kernel at 32 px) a much weaker blur than its sigma says.
    """

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = tuple(sigma)

    def __call__(self, image: Image.Image) -> Image.Image:
        sigma = torch.empty(1).uniform_(*self.sigma).item()
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def byol_transforms(resolution: int, crop_scale=(0.08, 1.0), mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225), blur_prob=(1.0, 0.1),
                    solarize_prob=(0.0, 0.2), color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob: float = 0.8,
                    grayscale_prob: float = 0.2, blur_sigma=(0.1, 2.0)) -> tuple[T.Compose, T.Compose]:
    """BYOL's asymmetric augmentations: blur p = 1.0 / 0.1, solarize p = 0.0 / 0.2 by default.

    ``color_jitter`` = (brightness, contrast, saturation, hue) strengths as ``T.ColorJitter`` takes them."""

    def view(blur_p: float, solarize_p: float) -> T.Compose:
        return T.Compose([
            T.RandomResizedCrop(resolution, scale=tuple(crop_scale), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(*color_jitter)], p=color_jitter_prob),
            T.RandomGrayscale(p=grayscale_prob),
            T.RandomApply([GaussianBlurPIL(blur_sigma)], p=blur_p),
            T.RandomSolarize(threshold=128, p=solarize_p),
            T.ToTensor(),
            T.Normalize(mean, std),
        ])

    return view(blur_prob[0], solarize_prob[0]), view(blur_prob[1], solarize_prob[1])


def load_readable(images: ImageFolderIO, index: int, decode=_decode_rgb) -> tuple[object, int, int]:
    """``decode`` of the image at ``index``, or of the next readable one (see ``ImageFolderIO.load_with``):
    ``(what decode returned, its index, images skipped)``."""
    for skipped in range(len(images)):
        position = (index + skipped) % len(images)
        image = images.load_with(position, decode)
        if image is not None:
            return image, position, skipped
    raise RuntimeError(f"no readable image in {images.root}")


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
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=gen)[:self.steps_per_epoch * self.global_batch].tolist()
        mine = order[self.rank::self.world_size]  # global batch k = order[k*B:(k+1)*B] on any world size
        for index in mine[self.start_batch * self.batch:]:
            yield index, (self.seed * 1_000_003 + self.epoch) * 100_000_007 + index


def eval_transform(resolution: int, resize_ratio: float, mean, std) -> T.Compose:
    return T.Compose([T.Resize(int(round(resolution / resize_ratio)), interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(resolution), T.ToTensor(), T.Normalize(mean, std)])


class LabelledImages(Dataset):
    """``(image tensor, label, index)`` for the chosen ``indices`` of an image folder.

    An unreadable image is replaced by the next readable one of the selection (and logged by the folder).
    """

    def __init__(self, images: ImageFolderIO, transform, indices: list[int] | None = None):
        self.images, self.transform = images, transform
        self.indices = list(range(len(images))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        for offset in range(len(self.indices)):
            index = self.indices[(position + offset) % len(self.indices)]
            image = self.images.load(index)
            if image is not None:
                return self.transform(image), self.images.samples[index][1], position
        raise RuntimeError(f"no readable image in {self.images.root}")
