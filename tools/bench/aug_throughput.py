#!/usr/bin/env python
"""Two-view BYOL augmentation throughput per CPU core on ImageNet-like JPEGs, lever by lever, and the
CPU cores one GPU's share of the paper's batch needs.

    python tools/bench/aug_throughput.py [--images 64] [--repeats 3] [--resolution 224] [--gpu-step-s S]

Writes 500x375 JPEGs (quality 90) to a temporary folder, then on one thread (one data-loader worker
per core) reads each from disk and makes both views of BYOL's recipe. Pipelines run interleaved, round
by round, on the same images and seeds; the best round of each counts:

1. torchvision's exact ``T.GaussianBlur`` (23 px at 224): the pipeline before the blur fix;
2. ``byol_transforms`` (PIL blur, float output): after the blur fix, the baseline of the goals;
3. a reference: plain torchvision transforms with PIL's blur, composed as solo-learn composes BYOL's;
4. ``BYOLViews(backend="torchvision")``: the same pixels as 2 as uint8, normalised later on the device;
5. ``BYOLViews(backend="opencv", draft=False)``: + OpenCV's colour jitter, greyscale, blur and solarize;
6. ``BYOLViews(backend="opencv")``: + JPEG draft decoding (the default of ``DATA.AUGMENT_BACKEND``).

Goals: 6 >= 1.5 x 2 and 6 >= 3. Also printed: the decode cost with PIL, PIL's draft and
``torchvision.io.decode_jpeg``, the per-image cost of ``normalize_views`` on this CPU (what 4-6 move to the
device), and the cores per GPU at a GPU step time of ``--gpu-step-s`` seconds per ``--gpu-batch`` images
(paper: 4096 images on 16 GPUs = 256; measure the step with ``step_cost.py --batch 256`` on the GPU).
"""
from __future__ import annotations

import argparse
import io
import os
import random
import tempfile
import time

import torch
import torchvision
from PIL import Image, ImageFilter
from torchvision import transforms as T

from dspnet_d2.demo.fixtures import write_photo_like_jpegs
from dspnet_d2.images import ImageFolderIO
from pretrain.data.augment import BYOLViews, normalize_views
from pretrain.data.transforms import GaussianBlurPIL, byol_transforms

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BASELINE, REFERENCE, DEFAULT = "2 after the blur fix (PIL blur)", "3 solo-learn-style reference", "6 + JPEG draft (default)"


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


def compose_pipeline(views):
    """A pair of torchvision Composes as a ``decode -> both views`` function (decoding first, fully)."""
    def run(image_file):
        image_file.load()
        image = image_file.convert("RGB")
        return views[0](image), views[1](image)
    return run


def run_once(images: ImageFolderIO, pipeline, count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        # same seeds for every pipeline: they draw the same crops, jitters and sigmas
        torch.default_generator.manual_seed(index)  # the CPU generator alone, as TwoViewDataset seeds
        random.seed(index)
        assert images.load_with(index, pipeline) is not None
    return time.perf_counter() - start


def decode_costs(paths: list[str], resolution: int) -> dict[str, float]:
    """Milliseconds per image: full decode with PIL, PIL's draft at half size, torchvision.io.decode_jpeg."""
    data = [open(p, "rb").read() for p in paths]

    def pil(blob, draft):
        image = Image.open(io.BytesIO(blob))
        if draft:
            image.draft("RGB", (image.size[0] // 2, image.size[1] // 2))
        image.load()

    costs = {}
    for name, fn in (("PIL", lambda b: pil(b, False)), ("PIL draft 1/2", lambda b: pil(b, True)),
                     ("torchvision.io.decode_jpeg", lambda b: torchvision.io.decode_jpeg(
                         torch.frombuffer(bytearray(b), dtype=torch.uint8)))):
        start = time.perf_counter()
        for blob in data:
            fn(blob)
        costs[name] = (time.perf_counter() - start) / len(data) * 1e3
    return costs


def normalize_cost(resolution: int, batch: int = 64) -> float:
    """Milliseconds per image (two views) of ``normalize_views`` on this CPU, batched as the trainer does."""
    views = torch.randint(0, 256, (batch, 3, resolution, resolution), dtype=torch.uint8)
    normalize_views(views, MEAN, STD)
    start = time.perf_counter()
    for _ in range(2):
        normalize_views(views, MEAN, STD)
    return (time.perf_counter() - start) / batch * 1e3


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--gpu-step-s", type=float, default=None,
                        help="a GPU step's seconds for --gpu-batch images (default: a table of step times)")
    parser.add_argument("--gpu-batch", type=int, default=256, help="images per GPU per step (paper: 4096 / 16)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # per core: data loaders scale by running one worker process per core
    res = args.resolution
    pipelines = {"1 torchvision blur (before the fix)": compose_pipeline(torchvision_blur(res)),
                 BASELINE: compose_pipeline(byol_transforms(res)),
                 REFERENCE: compose_pipeline(solo_learn_style(res)),
                 "4 uint8 out, normalised on the device": BYOLViews(res, backend="torchvision"),
                 "5 + OpenCV colour, grey, blur, solarize": BYOLViews(res, backend="opencv", draft=False),
                 DEFAULT: BYOLViews(res, backend="opencv", draft=True)}
    times = {name: [] for name in pipelines}
    with tempfile.TemporaryDirectory() as root:
        paths = write_photo_like_jpegs(os.path.join(root, "photos"), args.images)
        images = ImageFolderIO(root)
        for pipeline in pipelines.values():
            run_once(images, pipeline, min(4, args.images))  # warm-up
        for _ in range(args.repeats):
            for name, pipeline in pipelines.items():
                times[name].append(run_once(images, pipeline, args.images))
        decode = decode_costs([str(p) for p in paths], res)
    rate = {name: args.images / min(t) for name, t in times.items()}
    base, best = rate[BASELINE], rate[DEFAULT]
    print(f"threads={torch.get_num_threads()} images={args.images} (500x375 JPEG q90) resolution={res} "
          f"repeats={args.repeats} (best round)")
    print("| pipeline | two-view images/s per core | ms per image | vs 2 |")
    print("|---|---:|---:|---:|")
    for name, r in rate.items():
        print(f"| {name} | {r:.1f} | {1e3 / r:.1f} | {r / base:.2f}x |")
    print(f"goals: default >= 1.5x the blur-fixed pipeline (measured {best / base:.2f}x), "
          f">= the reference (measured {best / rate[REFERENCE]:.2f}x)")
    print("decode ms per image: " + ", ".join(f"{k} {v:.2f}" for k, v in decode.items()))
    print(f"normalize_views on this CPU: {normalize_cost(res):.2f} ms per image (two views), batched; on a GPU "
          f"it is part of the step")
    steps = [args.gpu_step_s] if args.gpu_step_s else [0.25, 0.5, 1.0, 2.0]
    for step in steps:
        need = args.gpu_batch / step
        print(f"a GPU step of {step:.2f} s for {args.gpu_batch} images needs {need:.0f} images/s: "
              f"{need / best:.1f} cores with the default, {need / base:.1f} with pipeline 2")


if __name__ == "__main__":
    main()
