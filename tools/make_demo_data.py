#!/usr/bin/env python
"""Generate the embedded synthetic "shapes" demo data (deterministic, nothing is downloaded).

    python tools/make_demo_data.py                                  # datasets/demo, default sizes
    python tools/make_demo_data.py --root /tmp/demo --train-per-class 8 --val-per-class 4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dspnet_d2.demo_data import CLASSES, make_demo_dataset
from dspnet_d2.errors import cli_main


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="datasets/demo")
    p.add_argument("--image-size", type=int, default=32, help="side of the classification images (px)")
    p.add_argument("--train-per-class", type=int, default=120)
    p.add_argument("--val-per-class", type=int, default=100)
    p.add_argument("--coco-train-images", type=int, default=64)
    p.add_argument("--coco-val-images", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    marker = Path(a.root) / "DEMO_DATA.json"
    before = marker.stat().st_mtime_ns if marker.exists() else None
    start = time.perf_counter()
    root = make_demo_dataset(a.root, image_size=a.image_size, train_per_class=a.train_per_class,
                             val_per_class=a.val_per_class, coco_train_images=a.coco_train_images,
                             coco_val_images=a.coco_val_images, seed=a.seed)
    fresh = before != marker.stat().st_mtime_ns
    print(f"{'wrote' if fresh else 'kept (already generated with these arguments)'} demo data in {root}"
          + (f" in {time.perf_counter() - start:.1f} s" if fresh else ""))
    for split in ("train", "val"):
        counts = {c: len(list((root / split / c).glob("*.png"))) for c in CLASSES}
        print(f"  {split}/: {sum(counts.values())} images, {len(CLASSES)} classes x "
              f"{'/'.join(map(str, sorted(set(counts.values()))))} ({a.image_size} px)")
    for split in ("train", "val"):
        coco = json.loads((root / "coco" / "annotations" / f"instances_{split}.json").read_text())
        print(f"  coco/{split}/: {len(coco['images'])} images, {len(coco['annotations'])} instance masks "
              f"(coco/annotations/instances_{split}.json)")


if __name__ == "__main__":
    sys.exit(cli_main(main))
