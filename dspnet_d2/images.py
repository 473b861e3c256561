"""Image folders read through iopath (``root/<class>/<image>``): the reader every stage shares, skipping
unreadable files, and a labelled view of a selection of its images."""
from __future__ import annotations

import logging
import os

import torch
from iopath.common.file_io import g_pathmgr
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from .errors import InvalidInputError, MissingFileError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderIO", "class_selection", "select_classes", "load_readable", "LabelledImages", "SeededLabelledImages",
           "eval_transform"]


class ImageFolderIO(Dataset):
    """``root/<class>/<image>`` read through iopath; ``__getitem__`` returns (PIL image or None, label).

    An unreadable, corrupt or truncated file gives ``None`` instead of raising, so callers can skip it.
    """

    def __init__(self, root: str, classes: "str | list[str]" = ""):
        if not g_pathmgr.isdir(root):
            raise MissingFileError(f"image folder {root!r} does not exist")
        self.root = root
        self.classes = sorted(d for d in g_pathmgr.ls(root) if g_pathmgr.isdir(os.path.join(root, d)))
        if not self.classes:
            raise MissingFileError(f"image folder {root!r} has no class sub-folders")
        self.classes = select_classes(self.classes, classes, root)
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


def class_selection(count: int, list_file: str) -> str:
    """``DATA.CLASS_COUNT`` / ``DATA.CLASS_LIST`` as ``select_classes``' spec; both set is an input error."""
    if count and list_file:
        raise InvalidInputError("set DATA.CLASS_COUNT or DATA.CLASS_LIST, not both")
    if count < 0:
        raise InvalidInputError(f"DATA.CLASS_COUNT must be >= 0, got {count}")
    return str(count) if count else list_file


def select_classes(found: list[str], spec: "str | list[str]", root: str) -> list[str]:
    """The class folders a run uses (``class_selection``): all of them (``""``), ``N`` of them spread evenly over the
    sorted names (``"100"``: a subset that is the same on every machine), or those a file lists, one folder name
    per line (e.g. the ImageNet-100 list of CMC and solo-learn), or a list of names. Labels follow the sorted
    names kept."""
    if isinstance(spec, (list, tuple)):
        missing = sorted(set(spec) - set(found))
        if missing:
            raise InvalidInputError(f"{root!r} lacks the class folders {missing[:3]} ({len(missing)} in all)")
        return sorted(spec)
    spec = str(spec).strip()
    if not spec:
        return found
    if spec.isdigit():
        count = int(spec)
        if not 0 < count <= len(found):
            raise InvalidInputError(f"DATA.CLASS_COUNT {count}: {root!r} has {len(found)} class folders")
        return [found[i * len(found) // count] for i in range(count)]
    if not g_pathmgr.isfile(spec):
        raise MissingFileError(f"DATA.CLASS_LIST {spec!r} does not exist")
    with g_pathmgr.open(spec) as f:
        wanted = sorted({line.strip() for line in f if line.strip() and not line.startswith("#")})
    missing = sorted(set(wanted) - set(found))
    if missing or not wanted:
        raise InvalidInputError(f"DATA.CLASS_LIST {spec!r}: {len(missing)} of its {len(wanted)} classes are not folders "
                                f"of {root!r} (e.g. {missing[:3]})")
    return wanted


def _decode_rgb(image_file: Image.Image) -> Image.Image:
    image_file.load()  # decode now: truncated files raise here
    return image_file.convert("RGB")


def load_readable(images: ImageFolderIO, index: int, decode=_decode_rgb) -> tuple[object, int, int]:
    """``decode`` of the image at ``index``, or of the next readable one (see ``ImageFolderIO.load_with``):
    ``(what decode returned, its index, images skipped)``."""
    for skipped in range(len(images)):
        position = (index + skipped) % len(images)
        image = images.load_with(position, decode)
        if image is not None:
            return image, position, skipped
    raise RuntimeError(f"no readable image in {images.root}")


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
        image, index, _ = _load_selected(self.images, self.indices, position)
        return self.transform(image), self.images.samples[index][1], position


def _load_selected(images: ImageFolderIO, indices: list[int], position: int):
    """The image at ``indices[position]``, or the next readable one of ``indices`` (never one outside them):
    ``(image, its index, images skipped)``."""
    for offset in range(len(indices)):
        index = indices[(position + offset) % len(indices)]
        image = images.load(index)
        if image is not None:
            return image, index, offset
    raise RuntimeError(f"no readable image among the {len(indices)} selected in {images.root}")


class SeededLabelledImages(Dataset):
    """``(augmented image, label, images skipped)`` for the ``(position, seed)`` items of ``ResumableSampler``
    (``position`` in ``indices``, all images by default): each image's augmentation is seeded, so a resumed run
    sees exactly the batches of an uninterrupted one. An unreadable image is replaced by the next readable one of
    ``indices``, so a 1% or 10% protocol never trains on an image outside its subset."""

    def __init__(self, images: ImageFolderIO, transform, indices: list[int] | None = None):
        self.images, self.transform = images, transform
        self.indices = list(range(len(images))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: tuple[int, int]):
        position, seed = item
        image, index, skipped = _load_selected(self.images, self.indices, position)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # the CPU's alone: the GPUs' are not this image's
            return self.transform(image), self.images.samples[index][1], skipped


def eval_transform(resolution: int, resize_ratio: float, mean, std) -> T.Compose:
    """The evaluation's center crop: resize the short side to ``resolution / resize_ratio``, crop, normalise."""
    return T.Compose([T.Resize(int(round(resolution / resize_ratio)), interpolation=T.InterpolationMode.BICUBIC),
                      T.CenterCrop(resolution), T.ToTensor(), T.Normalize(mean, std)])
