#!/usr/bin/env python
"""Generate the embedded synthetic "shapes" demo data (deterministic, nothing is downloaded).

    python tools/make_demo_data.py                                  # datasets/demo, default sizes
    python tools/make_demo_data.py --root /tmp/demo --train-per-class 8 --val-per-class 4
"""
import argparse
import sys

from dspnet_d2.demo_data import make_and_describe_demo_data
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
    return make_and_describe_demo_data(a.root, a.image_size, a.train_per_class, a.val_per_class, a.coco_train_images,
                                       a.coco_val_images, a.seed)


if __name__ == "__main__":
    sys.exit(cli_main(main))
