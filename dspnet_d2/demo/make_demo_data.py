"""Deterministic synthetic "shapes" images: the project's embedded demo data (nothing is downloaded).

    from dspnet_d2.demo.make_demo_data import make_demo_dataset
    root = make_demo_dataset("datasets/demo")   # ImageFolder train/val + COCO instance masks

The data exists to check that BYOL pretraining learns *shape* (kNN accuracy of frozen features vs a
random-init network), so every nuisance factor is either useless as a shortcut or destroyed by the
demo recipe's augmentations (configs/pretrain/demo.yaml), leaving the shape as the only thing two
views of one image share:

* Paired design: the random generator of a classification image is seeded by (seed, split, index)
  only, never by the class, so image ``i`` of every class has exactly the same colours, texture,
  noise, size and position; the classes differ only in the shape's geometry.
* Every shape is scaled to the same area (that of a disc of the sampled diameter), so the fraction
  of object pixels, and hence the mean image colour, does not depend on the class.
* Colours: hue and saturation random, a light object (luminance 0.65-0.95) on a dark background
  (0.05-0.35), so the shape survives colour jitter and greyscale. The demo recipe's full-range hue
  jitter and strong brightness/contrast/saturation jitter make the colours differ between two views.
* Sensor noise of a random level (std 0-0.08) per image: it weakens what a random-init network sees,
  while BYOL's blur (always on in view 1) makes it differ between two views, so pretraining has to
  learn to ignore it. Much stronger noise (0-0.125 at 32 px) drowns the shapes for a short run.
* Geometry: one large upright object (equivalent diameter 44-48% of the side) near the centre, so
  crops with scale >= 0.4 keep most of it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import ExistingFileError, cli_main

VERSION = 3
CLASSES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon")
COCO_IMAGE_SIZE = 128
CLS_DIAMETER = (0.44, 0.48)   # equivalent-disc diameter of the one object, fraction of image side
CLS_SHIFT = 0.03              # largest offset of its centre from the image centre, fraction of the side
CLS_NOISE = (0.0, 0.08)       # range of the per-image sensor-noise std (intensities in [0, 1], per pixel)
COCO_DIAMETER = (0.18, 0.30)  # same for the 1-4 smaller objects of a COCO image
_SPLIT_CODES = {"train": 0, "val": 1, "coco_train": 2, "coco_val": 3}
_SS = 4                                  # supersampling factor: anti-aliased edges, exact masks
_LUMA = np.array([0.299, 0.587, 0.114])  # torchvision's rgb_to_grayscale weights
_DARK, _LIGHT = (0.05, 0.35), (0.65, 0.95)


def _regular(n: int, radius: float = 1.0, phase: float = np.pi / 2) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(a), np.sin(a)], 1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    # fatter than a pentagram (0.38) so the points survive 32 px rendering
    a = np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _cross(half_width: float = 0.32) -> np.ndarray:
    a, w = 1.0, half_width
    return np.array([(a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w),
                     (-a, -w), (-w, -w), (-w, -a), (w, -a), (w, -w), (a, -w)])


# Each shape: polygons drawn in order into its own mask, fill 0 cutting a hole. Filled vs outline is
# fixed per class (ring = the only outline). The diamond is an elongated rhombus (axes 1 : 0.55) so
# that it cannot be confused with a rotated or mildly stretched square.
_SHAPES = {
    "circle": [(_regular(96), 1)],
    "square": [(_regular(4, phase=np.pi / 4), 1)],
    "triangle": [(_regular(3), 1)],
    "star": [(_star(), 1)],
    "cross": [(_cross(), 1)],
    "ring": [(_regular(96), 1), (_regular(96, 0.55), 0)],
    "diamond": [(np.array([(0.0, 1.0), (0.55, 0.0), (0.0, -1.0), (-0.55, 0.0)]), 1)],
    "hexagon": [(_regular(6), 1)],
}


def _polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


# Scale so every shape has the area of the unit disc: equal object-pixel fraction for every class.
_NORM = {c: np.sqrt(np.pi / sum(_polygon_area(p) * (1 if f else -1) for p, f in polys))
         for c, polys in _SHAPES.items()}
# Circumradius (in units of the equivalent radius) of the longest shape: used as a class-independent
# margin so positions have the same distribution for all classes and no shape leaves the image.
_MAX_EXTENT = max(_NORM[c] * max(np.hypot(*p.T).max() for p, _ in _SHAPES[c]) for c in CLASSES)


def _colour(rng: np.random.Generator, lum_range: tuple[float, float]) -> np.ndarray:
    """A random RGB colour whose luminance lies in lum_range (hue and saturation random)."""
    lum = rng.uniform(*lum_range)
    d = rng.random(3)
    d = d - d @ _LUMA  # zero-luminance chroma direction: lum + t*d keeps the luminance exact
    with np.errstate(divide="ignore"):
        t_max = np.min(np.where(d > 0, (1 - lum) / d, np.where(d < 0, -lum / d, np.inf)))
    return lum + rng.random() * min(t_max, 1e6) * d


def _coverage(cls: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Fraction of each pixel covered by the shape (supersampled rasterisation, float32 in [0, 1])."""
    big = Image.new("L", (size * _SS, size * _SS), 0)
    draw = ImageDraw.Draw(big)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    for poly, fill in _SHAPES[cls]:
        p = (poly * _NORM[cls] * radius) @ rot.T + (cx, cy)
        draw.polygon([tuple(q) for q in (p * _SS - 0.5).tolist()], fill=255 * fill)
    return np.asarray(big, np.float32).reshape(size, _SS, size, _SS).mean((1, 3)) / 255


def _compose(rng: np.random.Generator, size: int, bg: np.ndarray, covs: list, colours: list):
    """Paint textured background then objects in order; return uint8 image and visible masks."""
    texture = rng.standard_normal((5, 5)).astype(np.float32)  # smooth, class-independent blotches
    texture = np.asarray(Image.fromarray(texture, "F").resize((size, size), Image.BICUBIC))
    texture = texture / (np.abs(texture).max() + 1e-6) * rng.uniform(0.02, 0.07)
    img = bg + texture[..., None]
    for a, col in zip(covs, colours):
        img = img * (1 - a[..., None]) + col * a[..., None]
    img = img + rng.normal(0.0, 0.015, img.shape)  # mild sensor-like noise over everything
    img = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    return img, _visible_masks(covs)


def _visible_masks(covs: list) -> list:
    """Per object: pixels at least half covered by it and not by any object drawn later."""
    masks, occluded = [], np.zeros(covs[0].shape, bool)
    for a in reversed(covs):
        m = a >= 0.5
        masks.append(m & ~occluded)
        occluded |= m
    return masks[::-1]


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


def _polarity(rng: np.random.Generator):
    """Background and object luminance ranges: light-on-dark or dark-on-light with equal odds."""
    return (_DARK, _LIGHT) if rng.random() < 0.5 else (_LIGHT, _DARK)


def classification_sample(cls: str, index: int, split: str = "train", image_size: int = 32, seed: int = 0):
    """One ImageFolder image of class ``cls``: (uint8 HxWx3 image, bool object mask).

    The generator ignores ``cls``: nuisances are identical across classes for a given index."""
    rng = _rng(seed, split, index)
    bg, col = _colour(rng, _DARK), _colour(rng, _LIGHT)
    radius = rng.uniform(*CLS_DIAMETER) * image_size / 2
    cx, cy = image_size / 2 + rng.uniform(-CLS_SHIFT, CLS_SHIFT, 2) * image_size
    cov = _coverage(cls, image_size, cx, cy, radius, 0.0)
    img, (mask,) = _compose(rng, image_size, bg, [cov], [col])
    noise = rng.normal(0.0, rng.uniform(*CLS_NOISE) * 255, img.shape)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8), mask


def coco_sample(index: int, split: str = "train", image_size: int = COCO_IMAGE_SIZE, seed: int = 0):
    """One COCO image: (uint8 image, [(category index into CLASSES, visible bool mask), ...])."""
    rng = _rng(seed, "coco_" + split, index)
    bg_range, obj_range = _polarity(rng)
    bg = _colour(rng, bg_range)
    objs = []  # (cls, cx, cy, radius, angle, colour, circumradius)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(len(CLASSES)))
        radius = rng.uniform(*COCO_DIAMETER) * image_size / 2
        angle, col = rng.uniform(0, 2 * np.pi), _colour(rng, obj_range)
        circ = radius * _NORM[CLASSES[cls]] * max(np.hypot(*p.T).max() for p, _ in _SHAPES[CLASSES[cls]])
        margin = radius * _MAX_EXTENT
        for _try in range(30):  # rejection sampling: overlaps stay slight
            cx, cy = margin + rng.random(2) * (image_size - 2 * margin)
            if all(np.hypot(cx - o[1], cy - o[2]) >= 0.8 * (circ + o[6]) for o in objs):
                objs.append((cls, cx, cy, radius, angle, col, circ))
                break
    covs = [_coverage(CLASSES[o[0]], image_size, *o[1:5]) for o in objs]
    while True:  # drop objects left with less than half of their mask visible (the top one never is)
        vis = _visible_masks(covs)
        bad = [i for i, (a, m) in enumerate(zip(covs, vis)) if m.sum() < 0.5 * (a >= 0.5).sum()]
        if not bad:
            break
        del objs[bad[0]], covs[bad[0]]
    img, masks = _compose(rng, image_size, bg, covs, [o[5] for o in objs])
    return img, [(o[0], m) for o, m in zip(objs, masks)]


def _save_png(img: np.ndarray, path: Path) -> None:
    # no metadata (timestamps etc.) is written, so files are byte-identical across runs
    Image.fromarray(img, "RGB").save(path, format="PNG")


def _write_coco(root: Path, split: str, num_images: int, seed: int) -> None:
    from pycocotools import mask as mask_util

    img_dir = root / "coco" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img, objects = coco_sample(i, split, COCO_IMAGE_SIZE, seed)
        name = f"{i:06d}.png"
        _save_png(img, img_dir / name)
        images.append({"id": i + 1, "file_name": name, "width": COCO_IMAGE_SIZE, "height": COCO_IMAGE_SIZE})
        for cls, mask in objects:
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                "bbox": [float(v) for v in mask_util.toBbox(rle)], "area": float(mask.sum()),
                "iscrowd": 0, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            })
    coco = {"info": {"description": "dspnet synthetic shapes demo data", "version": str(VERSION)},
            "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(CLASSES)]}
    ann_dir = root / "coco" / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    (ann_dir / f"instances_{split}.json").write_text(json.dumps(coco))


def make_demo_dataset(root, image_size: int = 32, train_per_class: int = 120, val_per_class: int = 100,
                      coco_train_images: int = 64, coco_val_images: int = 16, seed: int = 0) -> Path:
    """Write the demo data under ``root`` (see module docstring) and return ``root`` as a Path.

    Layout: ``train/<class>/<class>_<i>.png``, ``val/<class>/...`` (ImageFolder), ``coco/{train,val}/*.png``
    with ``coco/annotations/instances_{train,val}.json`` (RLE masks of the visible parts), and the
    marker ``DEMO_DATA.json``. Same arguments -> byte-identical files; if the marker already records
    these arguments nothing is rewritten."""
    root = Path(root)
    marker = root / "DEMO_DATA.json"
    args = dict(image_size=image_size, train_per_class=train_per_class, val_per_class=val_per_class,
                coco_train_images=coco_train_images, coco_val_images=coco_val_images, seed=seed)
    expected = {"version": VERSION, "complete": True, "args": args}
    owned = ("train", "val", "coco")
    if marker.exists():
        if json.loads(marker.read_text()) == expected:
            return root
        for d in owned:  # ours (marker present): clear stale files of other arguments / partial runs
            shutil.rmtree(root / d, ignore_errors=True)
    elif any((root / d).exists() and any((root / d).iterdir()) for d in owned):
        raise ExistingFileError(f"{root} holds train/val/coco data without {marker.name}; refusing to overwrite")
    root.mkdir(parents=True, exist_ok=True)
    # an incomplete marker first, so an interrupted run is recognised as ours and regenerated
    marker.write_text(json.dumps({**expected, "complete": False}, indent=2) + "\n")
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for cls in CLASSES:
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _save_png(classification_sample(cls, i, split, image_size, seed)[0], d / f"{cls}_{i}.png")
    _write_coco(root, "train", coco_train_images, seed)
    _write_coco(root, "val", coco_val_images, seed)
    marker.write_text(json.dumps(expected, indent=2) + "\n")
    return root


def make_and_describe_demo_data(root, image_size: int = 32, train_per_class: int = 120, val_per_class: int = 100,
                                coco_train_images: int = 64, coco_val_images: int = 16, seed: int = 0) -> None:
    """``make_demo_dataset`` and a printed summary: written or kept, and what each split holds
    (tools/make_demo_data.py)."""
    marker = Path(root) / "DEMO_DATA.json"
    before = marker.stat().st_mtime_ns if marker.exists() else None
    start = time.perf_counter()
    root = make_demo_dataset(root, image_size=image_size, train_per_class=train_per_class,
                             val_per_class=val_per_class, coco_train_images=coco_train_images,
                             coco_val_images=coco_val_images, seed=seed)
    fresh = before != marker.stat().st_mtime_ns
    print(f"{'wrote' if fresh else 'kept (already generated with these arguments)'} demo data in {root}"
          + (f" in {time.perf_counter() - start:.1f} s" if fresh else ""))
    for split in ("train", "val"):
        counts = {c: len(list((root / split / c).glob("*.png"))) for c in CLASSES}
        print(f"  {split}/: {sum(counts.values())} images, {len(CLASSES)} classes x "
              f"{'/'.join(map(str, sorted(set(counts.values()))))} ({image_size} px)")
    for split in ("train", "val"):
        coco = json.loads((root / "coco" / "annotations" / f"instances_{split}.json").read_text())
        print(f"  coco/{split}/: {len(coco['images'])} images, {len(coco['annotations'])} instance masks "
              f"(coco/annotations/instances_{split}.json)")


COMMAND_HELP = """Generate the embedded synthetic "shapes" demo data (deterministic, nothing is downloaded).

    python tools/make_demo_data.py                                  # datasets/demo, default sizes
    python tools/make_demo_data.py --root /tmp/demo --train-per-class 8 --val-per-class 4
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m dspnet_d2.demo.make_demo_data", description=COMMAND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="datasets/demo")
    p.add_argument("--image-size", type=int, default=32, help="side of the classification images (px)")
    p.add_argument("--train-per-class", type=int, default=120)
    p.add_argument("--val-per-class", type=int, default=100)
    p.add_argument("--coco-train-images", type=int, default=64)
    p.add_argument("--coco-val-images", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    return make_and_describe_demo_data(a.root, a.image_size, a.train_per_class, a.val_per_class, a.coco_train_images,
                                       a.coco_val_images, a.seed)


if __name__ == "__main__":
    sys.exit(cli_main(main))
