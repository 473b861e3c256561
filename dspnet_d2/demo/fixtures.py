"""Test and benchmark fixtures, not for learning: photo-like JPEGs (what decoding and augmenting cost) and a
COCO-shaped instance set (COCO's image sizes, polygon masks, crowd regions), drawn with the demo data's shapes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .make_demo_data import CLASSES, _polygon_area, _regular

__all__ = ["write_photo_like_jpegs", "COCO_LIKE_SIZES", "write_coco_like"]


def write_photo_like_jpegs(folder, count: int, size=(500, 375), quality: int = 90, seed: int = 0) -> list[Path]:
    """``count`` JPEGs of ImageNet's typical shape (500x375, quality 90) in ``folder``: gradients, overlapping
    shapes and sensor noise, so decoding and augmenting them cost about what photographs cost. For benches
    and size-dependent tests, not for learning."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(size)
    paths = []
    for i in range(count):
        tint = rng.uniform(0.2, 1.0, 3)
        image = Image.fromarray((np.stack([x, y, 1 - x * y], -1) * tint * 200 + 30).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(5, 15)):
            (x0, y0), (dx, dy) = rng.integers(0, size), rng.integers(8, max(size) // 3, 2)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([int(x0), int(y0), int(x0 + dx), int(y0 + dy)], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(2, 10), (h, w, 3))
        paths.append(folder / f"{i:05d}.jpg")
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(paths[-1], quality=quality)
    return paths


COCO_LIKE_SIZES = ((640, 480), (480, 640), (640, 427), (500, 375), (427, 640), (640, 360))  # (width, height)


def write_coco_like(root, split: str = "val", sizes=COCO_LIKE_SIZES, empty_sizes=((640, 480),), seed: int = 0) -> Path:
    """A COCO-shaped instance set for tests and benches, not for learning: JPEGs of COCO's typical sizes and
    aspect ratios (one per entry of ``sizes``), 2-5 polygon instances per image (``segmentation`` as
    polygon lists, as most of COCO's), and one crowd region per image (``iscrowd`` 1, an RLE mask), then one
    image without any annotation per entry of ``empty_sizes`` (COCO has about a thousand), in
    ``root/<split>/`` with ``root/annotations/instances_<split>.json``. Returns that JSON's path."""
    from pycocotools import mask as mask_util

    root, rng = Path(root), np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (w, h) in enumerate(list(sizes) + list(empty_sizes)):
        image = Image.fromarray(rng.integers(20, 90, (h, w, 3), dtype=np.uint8))
        name = f"{i:012d}.jpg"
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        if i >= len(sizes):
            image.save(root / split / name, quality=90)
            continue
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            n, radius = int(rng.integers(3, 9)), rng.uniform(0.06, 0.2) * min(w, h)
            cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
            poly = _regular(n, radius, rng.uniform(0, 2 * np.pi)) + (cx, cy)
            draw.polygon([tuple(p) for p in poly], fill=tuple(int(c) for c in rng.integers(140, 256, 3)))
            xs, ys = poly[:, 0], poly[:, 1]
            category = int(rng.integers(len(CLASSES))) + 1
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category,
                                "segmentation": [[float(v) for v in poly.ravel()]], "area": _polygon_area(poly),
                                "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs)), float(np.ptp(ys))],
                                "iscrowd": 0})
        crowd = np.zeros((h, w), np.uint8)
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        crowd[y0:y0 + h // 4, x0:x0 + w // 3] = 1
        rle = mask_util.encode(np.asfortranarray(crowd))
        annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 1,
                            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                            "area": float(crowd.sum()), "bbox": [float(v) for v in mask_util.toBbox(rle)]})
        image.save(root / split / name, quality=90)
    coco = {"info": {"description": "dspnet COCO-shaped test data"}, "images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": c, "supercategory": "shape"} for k, c in enumerate(CLASSES)]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(coco))
    return path
