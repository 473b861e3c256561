#!/usr/bin/env python
"""Latency of a deployed DN: PyTorch eager vs TorchScript vs ONNX Runtime vs torchvision's own model of the
same width, at batch 1 and 8, side by side on CPU.

    python tools/bench/deploy_latency.py [--dns mbv3_w0.5,mbv3_w1.0,resnet18,resnet34] [--threads 2] [--iters 20]

Every DN is exported with its 1000-class classifier; the four runtimes are timed interleaved, round-robin,
so machine noise hits them alike; the table gives median milliseconds and the ratios to torchvision's
eager model (DNs without a torchvision twin, e.g. ResNet widths 1.25/1.5, to the DN's own eager model).
torch and ONNX Runtime both use --threads intra-op threads (ONNX Runtime inter-op 1, sequential, no spinning
between runs, which would slow whatever runs next).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from torchvision.models import mobilenet_v3_large, resnet18, resnet34

from dspnet_d2 import build_supernet, export_dn, parse_dn
from dspnet_d2.deploy import export_onnx, export_torchscript, onnx_session

TORCHVISION_TWINS = {"resnet_w1.0_d2222": resnet18, "resnet_w1.0_d3463": resnet34}


def torchvision_twin(dn):
    if dn.family == "mbv3":
        return mobilenet_v3_large(width_mult=dn.width)
    builder = TORCHVISION_TWINS.get(str(dn))
    return builder() if builder else None


def onnx_runner(path: str, threads: int):
    # no spinning: ORT's threads spin after a run by default and would steal the cores from the runtime timed next
    session = onnx_session(path, threads, spinning=False)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.numpy()})


@torch.no_grad()
def measure(dn: str, batches, iters: int, threads: int, folder: str) -> list[dict]:
    spec = parse_dn(dn)
    torch.manual_seed(0)
    model = export_dn(build_supernet(spec.family, num_classes=1000), spec).eval()
    resolution = spec.info.eval_resolution
    onnx_path = export_onnx(model, os.path.join(folder, f"{spec}.onnx"), resolution, dynamic_batch=True)
    runners = {"eager": model, "torchscript": torch.jit.load(export_torchscript(model, os.path.join(folder, f"{spec}.pt"),
                                                                                resolution)),
               "onnxruntime": onnx_runner(onnx_path, threads)}
    twin = torchvision_twin(spec)
    if twin is not None:
        runners["torchvision"] = twin.eval()
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, resolution, resolution)
        times = {name: [] for name in runners}
        for _ in range(3):  # warm-up (TorchScript's profiling runs, oneDNN and ORT caches)
            for run in runners.values():
                run(x)
        for _ in range(iters):
            for name, run in runners.items():
                start = time.perf_counter()
                run(x)
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        reference = "torchvision" if "torchvision" in median else "eager"
        rows.append({"dn": str(spec), "batch": batch, "ms": median, "reference": reference})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dns", default="mbv3_w0.5,mbv3_w1.0,resnet18,resnet34")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"CPU, {args.threads} threads (torch intra-op = ONNX Runtime intra-op), torch {torch.__version__}, "
          f"median of {args.iters} interleaved runs")
    print("| DN | batch | eager ms | TorchScript ms | ONNX Runtime ms | torchvision ms | TS / ref | ORT / ref | eager / ref |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for dn in args.dns.split(","):
            for row in measure(dn, [int(b) for b in args.batches.split(",")], args.iters, args.threads, folder):
                ms, ref = row["ms"], row["ms"][row["reference"]]
                tv = f"{ms['torchvision']:.1f}" if "torchvision" in ms else "n/a (ref: eager)"
                print(f"| {row['dn']} | {row['batch']} | {ms['eager']:.1f} | {ms['torchscript']:.1f} | "
                      f"{ms['onnxruntime']:.1f} | {tv} | {ms['torchscript'] / ref:.2f} | {ms['onnxruntime'] / ref:.2f} | "
                      f"{ms['eager'] / ref:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
