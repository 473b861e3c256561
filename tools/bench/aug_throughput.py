#!/usr/bin/env python
"""Two-view BYOL augmentation throughput per CPU core: torchvision's blur vs dspnet's PIL blur vs solo-learn's recipe.

    python tools/bench/aug_throughput.py [--images 64] [--repeats 3] [--resolution 224]

Writes ImageNet-like JPEGs (500x375, quality 90) to a temporary folder, then on one thread reads each
from disk with ``ImageFolderIO`` and makes both views of BYOL's recipe (the defaults of
``byol_transforms``) with (i) torchvision's exact ``T.GaussianBlur`` (kernel ~10% of the image, as
before), (ii) ``byol_transforms`` as it is (PIL blur), (iii) plain torchvision transforms composed as
solo-learn composes BYOL's. Pipelines run interleaved, round by round, on the same images and seeds;
the best round of each counts. Prints a markdown table of two-view images/s per core and the ratios
to (i) (goal: dspnet >= 5x before).
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torchvision import transforms as T

from pretrain.data import GaussianBlurPIL, ImageFolderIO, byol_transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_jpegs(root: str, count: int, size=(500, 375), seed: int = 0) -> None:
    """Gradients, overlapping shapes and sensor noise, so that decoding costs about what it costs on photos."""
    rng = np.random.default_rng(seed)
    w, h = size
    folder = os.path.join(root, "shapes")
    os.makedirs(folder)
    y, x = np.mgrid[0:h, 0:w] / max(size)
    for i in range(count):
        tint = rng.uniform(0.2, 1.0, 3)
        image = Image.fromarray((np.stack([x, y, 1 - x * y], -1) * tint * 200 + 30).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(5, 15)):
            (x0, y0), (dx, dy) = rng.integers(0, size), rng.integers(8, max(size) // 3, 2)
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape([int(x0), int(y0), int(x0 + dx), int(y0 + dy)], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        noisy = np.asarray(image, np.float32) + rng.normal(0, rng.uniform(2, 10), (h, w, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:05d}.jpg"), quality=90)


def torchvision_blur(resolution: int):
    """``byol_transforms`` with its blur swapped for torchvision's exact one, as the pipeline had it before."""
    kernel = max(3, int(0.1 * resolution) // 2 * 2 + 1)  # ~10% of the image, odd (23 at 224 px)
    views = byol_transforms(resolution)
    for view in views:
        blurs = [t for t in view.transforms
                 if isinstance(t, T.RandomApply) and isinstance(t.transforms[0], GaussianBlurPIL)]
        assert len(blurs) == 1, f"expected one PIL blur in {view}"
        blurs[0].transforms[0] = T.GaussianBlur(kernel, sigma=blurs[0].transforms[0].sigma)
    return views


def solo_learn_style(resolution: int):
    def view(blur_p: float, solarize_p: float) -> T.Compose:
        # solo-learn draws the blur's sigma with Python's random and blurs with PIL
        blur = T.Lambda(lambda image: image.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0))))
        return T.Compose([
            T.RandomResizedCrop(resolution, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([blur], p=blur_p),
            T.RandomSolarize(threshold=128, p=solarize_p),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ])

    return view(1.0, 0.0), view(0.1, 0.2)


def run_once(images: ImageFolderIO, views, count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        # same seeds for every pipeline: they draw the same crops, jitters and sigmas
        torch.manual_seed(index)
        random.seed(index)
        image = images.load(index)
        views[0](image), views[1](image)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # per core: data loaders scale by running one worker process per core
    pipelines = {"torchvision blur (before)": torchvision_blur(args.resolution),
                 "dspnet (PIL blur)": byol_transforms(args.resolution),
                 "solo-learn-style reference": solo_learn_style(args.resolution)}
    times = {name: [] for name in pipelines}
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(root, args.images)
        images = ImageFolderIO(root)
        for views in pipelines.values():
            run_once(images, views, min(4, args.images))  # warm-up
        for _ in range(args.repeats):
            for name, views in pipelines.items():
                times[name].append(run_once(images, views, args.images))
    rate = {name: args.images / min(t) for name, t in times.items()}
    before = rate["torchvision blur (before)"]
    print(f"threads={torch.get_num_threads()} images={args.images} (500x375 JPEG q90) resolution={args.resolution} "
          f"repeats={args.repeats} (best round)")
    print("| pipeline | two-view images/s per core | vs before |")
    print("|---|---:|---:|")
    for name, r in rate.items():
        print(f"| {name} | {r:.1f} | {r / before:.2f}x |")
    print(f"goal: dspnet >= 5x before (measured {rate['dspnet (PIL blur)'] / before:.2f}x)")


if __name__ == "__main__":
    main()
