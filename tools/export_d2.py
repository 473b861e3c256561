#!/usr/bin/env python
"""Export Mask R-CNN with a DN backbone for deployment, along detectron2's own path (TracingAdapter), and
check the file against the eager model on real images.

    python tools/export_d2.py --config-file configs/detection/mask_rcnn_demo.yaml --format torchscript \\
        -o output/deploy/demo MODEL.WEIGHTS output/detection/demo/model_final.pth

Writes OUTPUT/model.ts or OUTPUT/model.onnx, traced on the first image of the config's first test dataset;
both take an image of any height and width. Then, for --num-images images of that dataset (each at its own
size after the test resize) and the first one at two more sizes of other aspect ratios, the exported
model's boxes, scores, classes and masks (R-CNN outputs before the resize to the original image size) must
equal the eager model's within --atol/--rtol, else the command fails. Needs detectron2 (and onnxruntime for
--format onnx).
"""
from __future__ import annotations

import argparse
import os
import sys

from dspnet_d2.errors import MissingFileError, cli_main
from dspnet_d2.deploy import require_deploy_extra

try:
    from dspnet_d2.d2.deploy import (compare_fields, eager_fields, export_model, exported_fields, load_eval_model,
                                     load_exported, model_input, size_variants)
    from dspnet_d2.d2.train import load_config, register_demo
except ImportError as err:  # reported as the other commands report a user's mistake
    print(f"error: tools/export_d2.py: {err}", file=sys.stderr)
    sys.exit(2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the detection config the model was trained with")
    parser.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--num-images", type=int, default=4, help="test images the parity check runs on")
    parser.add_argument("--atol", type=float, default=1e-3)
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--demo-root", default="datasets/demo", help="the demo data (for the dspnet_demo datasets)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. MODEL.WEIGHTS model_final.pth")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config_file):
        raise MissingFileError(f"config file {args.config_file!r} does not exist")
    cfg = load_config(args.config_file, args.opts + ["MODEL.DEVICE", "cpu"])
    if not cfg.MODEL.WEIGHTS or not os.path.isfile(cfg.MODEL.WEIGHTS):
        raise MissingFileError(f"MODEL.WEIGHTS {cfg.MODEL.WEIGHTS!r}: give the trained model_final.pth")
    if args.format == "onnx":
        require_deploy_extra()
    if cfg.DATASETS.TEST[0].startswith("dspnet_demo_"):
        register_demo(args.demo_root)
    from detectron2.data import DatasetCatalog

    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])[:max(args.num_images, 1)]
    model = load_eval_model(cfg)
    images = [model_input(cfg, r["file_name"]) for r in records]
    path, adapter = export_model(model, images[0], args.format, args.output)
    run = load_exported(path, args.format)
    names = [os.path.basename(r["file_name"]) for r in records]
    checks = list(zip(names, images)) + [(f"{names[0]} resized", v) for v in size_variants(images[0])]
    for name, image in checks:
        expected = eager_fields(model, image)
        diffs = compare_fields(expected, exported_fields(run, adapter, image), args.atol, args.rtol)
        print(f"{name} ({image.shape[1]}x{image.shape[2]}): {len(expected['scores'])} detections, max |diff| "
              + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    sizes = sorted({tuple(image.shape[1:]) for _, image in checks})
    print(f"wrote {path}: equal to the eager model on {len(images)} images of {cfg.DATASETS.TEST[0]} at "
          f"{len(sizes)} sizes ({', '.join(f'{h}x{w}' for h, w in sizes)})")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
