#!/usr/bin/env python
"""Forward latency of a slimmed supernet vs its exported DN vs torchvision's model, side by side.

    python tools/bench/slim_overhead.py [--batch 8] [--iters 20] [--device cpu|cuda]

Prints, per DN, the median latency of (a) the supernet slimmed to the DN, (b) the exported DN and
(c) the torchvision model of the same width, and the ratios b/c (goal <= 1.02) and a/c (goal <= 1.10).
The three are timed interleaved, round-robin, so machine noise hits them alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models import mobilenet_v3_large, resnet18

from dspnet_d2 import DN_SETS, build_supernet, parse_dn, slice_dn

CASES = {
    "mbv3_w0.5": lambda: mobilenet_v3_large(width_mult=0.5),
    "mbv3_w1.0": lambda: mobilenet_v3_large(width_mult=1.0),
    "resnet18": resnet18,
}


def _time_once(model, x, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def compare(dn: str, batch: int, iters: int, device: torch.device) -> dict:
    spec = parse_dn(dn)
    supernet = build_supernet(DN_SETS[spec.family]).eval()
    supernet.set_active(spec)
    exported = slice_dn(supernet, spec).eval()
    reference = CASES[dn]().eval()
    # torchvision's models carry a classifier; time the feature extractor of each alike
    if spec.family == "mbv3":
        reference.classifier = torch.nn.Identity()
    else:
        reference.fc = torch.nn.Identity()
    models = {"supernet": supernet.to(device), "exported": exported.to(device), "torchvision": reference.to(device)}
    x = torch.randn(batch, 3, spec.info.resolution, spec.info.resolution, device=device)
    times = {name: [] for name in models}
    for _ in range(3):  # warm-up
        for model in models.values():
            model(x)
    for _ in range(iters):
        for name, model in models.items():
            times[name].append(_time_once(model, x, device))
    median = {name: statistics.median(t) for name, t in times.items()}
    return {"dn": dn, **{f"{k}_ms": v * 1e3 for k, v in median.items()},
            "exported/torchvision": median["exported"] / median["torchvision"],
            "supernet/torchvision": median["supernet"] / median["torchvision"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dns", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(f"device={device} batch={args.batch} iters={args.iters} threads={torch.get_num_threads()}")
    print("| DN | supernet ms | exported ms | torchvision ms | b/c (<=1.02) | a/c (<=1.10) |")
    print("|---|---:|---:|---:|---:|---:|")
    for dn in args.dns:
        r = compare(dn, args.batch, args.iters, device)
        print(f"| {dn} | {r['supernet_ms']:.2f} | {r['exported_ms']:.2f} | {r['torchvision_ms']:.2f} "
              f"| {r['exported/torchvision']:.3f} | {r['supernet/torchvision']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
