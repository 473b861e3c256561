#!/usr/bin/env python
"""Mask R-CNN training-iteration time: DSPNet resnet18 backbone vs detectron2's own ResNet-18, and mbv3_w1.0.

    python tools/bench/d2_iter.py [--size 512] [--batch 2] [--iters 5] [--device cpu|cuda]

All three models (same Mask R-CNN FPN config, same norm) step on the same synthetic batch, interleaved
round-robin; prints median times and the ratio DSPNet-resnet18 / detectron2-R18 (goal <= 1.05).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

from dspnet_d2 import add_dspnet_config


def make_cfg(kind: str, device: str):
    cfg = get_cfg()
    add_dspnet_config(cfg)
    cfg.merge_from_file("configs/detection/Base-DSPNet-MaskRCNN-FPN.yaml")
    norm = "BN"  # the same norm everywhere; SyncBN needs a process group
    cfg.merge_from_list(["MODEL.DEVICE", device, "MODEL.DSPNET.NORM", norm, "MODEL.FPN.NORM", norm])
    if kind == "d2_R18":
        cfg.merge_from_list(["MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone", "MODEL.RESNETS.DEPTH", "18",
                             "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NORM", norm,
                             "MODEL.BACKBONE.FREEZE_AT", "0", "MODEL.RESNETS.OUT_FEATURES",
                             "['res2', 'res3', 'res4', 'res5']"])
    else:
        cfg.merge_from_list(["MODEL.DSPNET.DN", kind])
    return cfg


def synthetic_batch(size: int, batch: int) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for _ in range(batch):
        boxes = torch.tensor([[32.0, 48.0, 200.0, 220.0], [240.0, 100.0, 400.0, 300.0]])
        masks = torch.zeros(2, size, size, dtype=torch.bool)
        for m, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
            m[y0:y1, x0:x1] = True
        inst = Instances((size, size), gt_boxes=Boxes(boxes), gt_classes=torch.tensor([1, 2]), gt_masks=BitMasks(masks))
        items.append({"image": torch.randint(0, 255, (3, size, size), generator=gen).float(), "instances": inst,
                      "height": size, "width": size})
    return items


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    kinds = ["resnet18", "d2_R18", "mbv3_w1.0"]
    models = {}
    for kind in kinds:
        torch.manual_seed(0)
        model = build_model(make_cfg(kind, args.device)).train()
        models[kind] = (model, torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9))
    batch = synthetic_batch(args.size, args.batch)
    times = {k: [] for k in kinds}

    def step(kind):
        model, opt = models[kind]
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with EventStorage(0):
            loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for kind in kinds:
        step(kind)  # warm-up
    for _ in range(args.iters):
        for kind in kinds:
            times[kind].append(step(kind))
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"device={args.device} images={args.batch}x{args.size}px iters={args.iters}")
    for kind in kinds:
        print(f"{kind:>10}: {median[kind] * 1e3:8.1f} ms / iteration")
    print(f"DSPNet resnet18 / detectron2 R18: {median['resnet18'] / median['d2_R18']:.3f} (goal <= 1.05)")
    print(f"DSPNet mbv3_w1.0 / detectron2 R18: {median['mbv3_w1.0'] / median['d2_R18']:.3f}")


if __name__ == "__main__":
    main()
