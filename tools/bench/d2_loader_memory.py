#!/usr/bin/env python
"""detectron2 training loader memory per worker at COCO's size: this package's resumable loader vs detectron2's
own, and the plain list of dicts the resumable loader held before.

    python tools/bench/d2_loader_memory.py [--images 118287] [--workers 2] [--batches 400] [--start-method fork]

COCO train2017-sized dataset dicts (118,287 images, 7 instances each with a 16-point polygon) are generated in
memory and registered. Each loader runs with the same cheap mapper (no image is read), so what grows in a worker
is what the worker does to the dataset dicts (a Python list's pages are copied into a forked worker as reference
counts and the garbage collector touch its objects); after ``--batches`` batches each worker's private memory (USS, from
/proc/PID/smaps_rollup) is read. Prints the mean per worker and the ratio to detectron2's loader (goal <= 1.10).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time

import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, build_detection_train_loader

from dspnet_d2 import add_dspnet_config
from dspnet_d2.d2.data import build_resumable_train_loader
from pretrain.engine.preemption import children

DATASET = "bench_coco_sized"


def coco_sized_dicts(images: int, instances: int = 7, points: int = 16) -> list[dict]:
    rng = random.Random(0)
    dicts = []
    for i in range(images):
        annotations = [{"bbox": [rng.uniform(0, 500) for _ in range(4)], "bbox_mode": 1, "category_id": rng.randrange(80),
                        "iscrowd": 0, "segmentation": [[rng.uniform(0, 600) for _ in range(2 * points)]]}
                       for _ in range(instances)]
        dicts.append({"file_name": f"/coco/train2017/{i:012d}.jpg", "image_id": i, "height": 480,
                      "width": 640 if i % 3 else 427, "annotations": annotations})
    return dicts


def touch(d: dict) -> dict:
    """A mapper that reads every annotation, as detectron2's DatasetMapper does, without reading an image."""
    return {"width": d["width"], "height": d["height"],  # what detectron2's aspect-ratio grouping reads
            "points": sum(len(a["segmentation"][0]) for a in d["annotations"])}


def uss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty")) / 1024


def worker_memory(loader, batches: int) -> list[float]:
    before = set(children(os.getpid()))
    gc.collect()  # what the main process frees later would stay in the workers' private pages, for either loader
    iterator = iter(loader)
    for _ in range(batches):
        next(iterator)
    found = [uss_mib(pid) for pid in set(children(os.getpid())) - before]
    del iterator, loader
    gc.collect()
    while set(children(os.getpid())) - before:  # the workers end before the next loader's start
        time.sleep(0.1)
    return found


class PlainList(torch.utils.data.Dataset):
    """The dicts as a Python list, what the resumable loader held before."""

    def __init__(self, dicts):
        self.dicts = dicts

    def __len__(self):
        return len(self.dicts)

    def __getitem__(self, i):
        return touch(copy.deepcopy(self.dicts[i]))


LOADERS = {
    "detectron2": "detectron2 build_detection_train_loader",
    "dspnet": "dspnet build_resumable_train_loader",
    "plain": "plain list of dicts (before)",
}


def measure(loader: str, images: int, workers: int, batches: int) -> list[float]:
    """One loader's worker USS, in this process (a fresh one per loader: the heap it forks is the loader's own)."""
    # a fresh list per call, as detectron2's COCO loader returns: the main process keeps no copy of its own
    DatasetCatalog.register(DATASET, lambda: coco_sized_dicts(images))
    cfg = get_cfg()
    add_dspnet_config(cfg)
    cfg.merge_from_list(["DATASETS.TRAIN", (DATASET,), "DATALOADER.NUM_WORKERS", workers,
                         "SOLVER.IMS_PER_BATCH", 16, "DATALOADER.FILTER_EMPTY_ANNOTATIONS", False])
    if loader == "detectron2":
        return worker_memory(build_detection_train_loader(cfg, mapper=touch), batches)
    if loader == "dspnet":
        return worker_memory(build_resumable_train_loader(cfg, mapper=touch), batches)
    return worker_memory(torch.utils.data.DataLoader(PlainList(coco_sized_dicts(images)), batch_size=16, shuffle=True,
                                                     num_workers=workers, collate_fn=lambda b: b), batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--start-method", default="fork")
    parser.add_argument("--loader", choices=sorted(LOADERS), help="measure this one loader and print its USS")
    args = parser.parse_args()
    torch.multiprocessing.set_start_method(args.start_method, force=True)
    if args.loader:
        print(json.dumps(measure(args.loader, args.images, args.workers, args.batches)))
        return
    results = {}
    for name in LOADERS:
        command = [sys.executable, __file__, "--loader", name, *sys.argv[1:]]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[LOADERS[name]] = json.loads(out.strip().splitlines()[-1])
    reference = statistics.fmean(results[LOADERS["detectron2"]])
    print(f"{args.images} images, {args.workers} workers ({args.start_method}), {args.batches} batches of 16, "
          f"each loader in a fresh process")
    print("| loader | USS per worker (MiB) | ratio to detectron2's |")
    print("|---|---|---|")
    for name, values in results.items():
        mean = statistics.fmean(values)
        print(f"| {name} | {mean:.0f} | {mean / reference:.2f} |")


if __name__ == "__main__":
    main()
