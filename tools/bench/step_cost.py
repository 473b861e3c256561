#!/usr/bin/env python
"""Cost of one DSPNet step (n = 4, MobileNetV3 5 DNs) vs one BYOL step of MobileNetV3-1.0, same batch.

    python tools/bench/step_cost.py [--batch 16] [--resolution 224] [--steps 3] [--device cpu|cuda]

Each variant runs the real ``Trainer.train_step`` in a fresh process (so peak memory is its own):
time per step (median), peak memory (CUDA: max allocated; CPU: peak RSS growth over the process
after imports: weights, optimizer state and activations) and the
analytic FLOPs of the step (fvcore forward FLOPs, backward = 2 x forward). Prints the DSPNet/BYOL
ratios of time, FLOPs and memory (goals: time <= 1.05 x FLOP ratio and < 2.11, memory <= 1.15) and
the cost of pretraining the 5 DNs one by one with BYOL vs DSPNet once (paper: 4.42x vs 2.11x).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

DSPNET_DNS = ["mbv3_w0.5", "mbv3_w0.625", "mbv3_w0.75", "mbv3_w0.875", "mbv3_w1.0"]


def step_flops(dns_sampled: list[list[str]], full: str, resolution: int, proj_hidden: int, proj_dim: int) -> float:
    """Mean FLOPs of a step: target fwd of both views + each sub-network's fwd+bwd (3x fwd) of both views."""
    import torch
    from dspnet_d2.complexity import count_flops
    from dspnet_d2.models import build_static_dn

    cache = {}

    def encoder_flops(dn):
        if dn not in cache:
            model = build_static_dn(dn)
            dim = model(torch.zeros(1, 3, 32, 32)).shape[1]
            head = dim * proj_hidden + proj_hidden * proj_dim  # projector matmuls per image
            cache[dn] = count_flops(model, resolution) + head
        return cache[dn]

    predictor = proj_dim * proj_hidden + proj_hidden * proj_dim
    per_step = [2 * encoder_flops(full) + sum(2 * 3 * (encoder_flops(dn) + predictor) for dn in picked)
                for picked in dns_sampled]
    return statistics.mean(per_step)


def run_variant(dns: str, n: int, batch: int, resolution: int, steps: int, device: str) -> dict:
    """Runs in its own process: a few real training steps on random images."""
    import torch
    from pretrain.config import load_cfg
    from pretrain.demo_data import make_demo_dataset
    from pretrain.engine import Trainer

    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after imports, before the model
    data = make_demo_dataset(os.path.join(tempfile.gettempdir(), "dspnet_bench_data"), train_per_class=8,
                             val_per_class=1, coco_train_images=1, coco_val_images=1)
    with tempfile.TemporaryDirectory() as out:
        cfg = load_cfg("configs/pretrain/dspnet_mbv3_imagenet.yaml", [
            "MODEL.DNS", dns, "MODEL.NUM_SUBNETS", str(n), "MODEL.FULL_ONLY_EPOCHS", "0", "DATA.ROOT", str(data),
            "DATA.RESOLUTION", str(resolution), "DATA.NUM_WORKERS", "0", "SOLVER.BATCH_SIZE", str(batch),
            "SOLVER.EPOCHS", "1000", "OUTPUT_DIR", out, "DEVICE", device, "AMP.ENABLED", str(device == "cuda")])
        trainer = Trainer(cfg)
        trainer.step = trainer.steps_per_epoch * 20  # past warm-up: the sandwich rule is on
        views = [torch.randn(batch, 3, resolution, resolution, device=trainer.device) for _ in range(2)]
        trainer.train_step(*views)  # warm-up step (allocations, kernels)
        sampled, times = [], []
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            start = time.perf_counter()
            record = trainer.train_step(*views)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            sampled.append([k[5:] for k in record if k.startswith("loss/")])
        if trainer.device.type == "cuda":
            memory = torch.cuda.max_memory_allocated()
        else:
            memory = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_base) * 1024  # peak RSS growth
        full = str(trainer.method.full_dn)
        flops = step_flops(sampled, full, resolution, cfg.MODEL.PROJ_HIDDEN, cfg.MODEL.PROJ_DIM)
    return {"dns": dns, "n": n, "time": statistics.median(times), "memory": memory, "flops": flops}


def measure(args, dns: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--variant", dns, "--n", str(n), "--batch", str(args.batch),
           "--resolution", str(args.resolution), "--steps", str(args.steps), "--device", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--skip-individual", action="store_true", help="skip the 5 one-by-one BYOL runs")
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.n, args.batch, args.resolution, args.steps, args.device)))
        return
    print(f"device={args.device} batch={args.batch} resolution={args.resolution} steps={args.steps}", flush=True)
    byol = measure(args, "mbv3_w1.0", 1)
    dspnet = measure(args, "mbv3_s5", 4)
    t, f, m = dspnet["time"] / byol["time"], dspnet["flops"] / byol["flops"], dspnet["memory"] / byol["memory"]
    print(f"BYOL mbv3_w1.0 step: {byol['time'] * 1e3:.0f} ms, {byol['flops'] / 1e9:.2f} GFLOPs, "
          f"{byol['memory'] / 2**20:.0f} MiB")
    print(f"DSPNet n=4 step:     {dspnet['time'] * 1e3:.0f} ms, {dspnet['flops'] / 1e9:.2f} GFLOPs, "
          f"{dspnet['memory'] / 2**20:.0f} MiB")
    print(f"time ratio {t:.3f} | FLOP ratio {f:.3f} | time/FLOP ratio {t / f:.3f} (goal <= 1.05) | "
          f"paper 2.11 | memory ratio {m:.3f} (goal <= 1.15)", flush=True)
    if not args.skip_individual:
        each = [measure(args, dn, 1) for dn in DSPNET_DNS]
        total = sum(r["time"] for r in each) / byol["time"]
        print("BYOL one by one: " + ", ".join(f"{r['dns']} {r['time'] / byol['time']:.2f}x" for r in each))
        print(f"5 DNs one by one: {total:.2f}x a BYOL-1.0 step (paper 4.42x) vs DSPNet {t:.2f}x (paper 2.11x)")


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
