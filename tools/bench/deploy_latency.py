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
import statistics
import tempfile

import torch
from torchvision.models import mobilenet_v3_large, resnet18, resnet34

from dspnet_d2 import DN_SETS, build_supernet, parse_dn, slice_dn
from dspnet_d2.deploy.selection import Settings, time_interleaved
from dspnet_d2.deploy.selection.runners import deploy

TORCHVISION_TWINS = {"resnet_w1.0_d2222": resnet18, "resnet_w1.0_d3463": resnet34}


def torchvision_twin(dn):
    if dn.family == "mbv3":
        return mobilenet_v3_large(width_mult=dn.width)
    builder = TORCHVISION_TWINS.get(str(dn))
    return builder() if builder else None


@torch.no_grad()
def measure(dn: str, batches, iters: int, threads: int, folder: str) -> list[dict]:
    spec = parse_dn(dn)
    torch.manual_seed(0)
    model = slice_dn(build_supernet(DN_SETS[spec.family], num_classes=1000), spec).eval()
    resolution = spec.info.eval_resolution
    # the runtimes as tools/select_dn.py runs them (ONNX Runtime: any batch, its threads not spinning)
    runners = {runtime: deploy(model, Settings(runtime, threads=threads), folder, str(spec), resolution).run
               for runtime in ("eager", "torchscript", "onnxruntime")}
    twin = torchvision_twin(spec)
    if twin is not None:
        runners["torchvision"] = twin.eval()
    rows = []
    for batch in batches:
        x = torch.randn(batch, 3, resolution, resolution)
        times = time_interleaved(runners, x, warmup=3, repeats=iters)
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
