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
    from dspnet_d2.families import build_static_dn

    cache = {}

    def encoder_flops(dn):
        if dn not in cache:
            model = build_static_dn(dn).eval()
            with torch.no_grad():
                dim = model(torch.zeros(1, 3, 32, 32)).shape[1]
            head = dim * proj_hidden + proj_hidden * proj_dim  # projector matmuls per image
            cache[dn] = count_flops(model, resolution) + head
        return cache[dn]

    predictor = proj_dim * proj_hidden + proj_hidden * proj_dim
    per_step = [2 * encoder_flops(full) + sum(2 * 3 * (encoder_flops(dn) + predictor) for dn in picked)
                for picked in dns_sampled]
    return statistics.mean(per_step)


def build_trainer(dns: str, n: int, batch: int, resolution: int, device: str, out: str):
    from pretrain.config import load_cfg
    from dspnet_d2.demo_data import make_demo_dataset
    from pretrain.engine import Trainer

    data = make_demo_dataset(os.path.join(tempfile.gettempdir(), "dspnet_bench_data"), train_per_class=8,
                             val_per_class=1, coco_train_images=1, coco_val_images=1)
    cfg = load_cfg("configs/pretrain/dspnet_mbv3_imagenet.yaml", [
        "MODEL.DNS", dns, "MODEL.NUM_SUBNETS", str(n), "MODEL.FULL_ONLY_EPOCHS", "0", "DATA.ROOT", str(data),
        "DATA.RESOLUTION", str(resolution), "DATA.NUM_WORKERS", "0", "SOLVER.BATCH_SIZE", str(batch),
        "SOLVER.EPOCHS", "1000", "OUTPUT_DIR", out, "DEVICE", device, "AMP.ENABLED", str(device == "cuda")])
    trainer = Trainer(cfg)
    trainer.step = trainer.steps_per_epoch * 20  # past warm-up: the sandwich rule is on
    return trainer


def _timed_step(trainer, views) -> tuple[float, list[str]]:
    import torch
    start = time.perf_counter()
    record = trainer.train_step(*views)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, [k[5:] for k in record if k.startswith("loss/")]


def run_variant(dns: str, n: int, batch: int, resolution: int, steps: int, device: str) -> dict:
    """Runs in its own process, so the peak memory is this variant's alone; also counts step FLOPs."""
    import torch

    rss_base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after imports, before the model
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(dns, n, batch, resolution, device, out)
        views = [torch.randn(batch, 3, resolution, resolution, device=trainer.device) for _ in range(2)]
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sampled = [_timed_step(trainer, views)[1] for _ in range(steps + 1)]
        if trainer.device.type == "cuda":
            memory = torch.cuda.max_memory_allocated()
        else:
            memory = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_base) * 1024  # peak RSS growth
        flops = step_flops(sampled, str(trainer.method.full_dn), resolution, trainer.cfg.MODEL.PROJ_HIDDEN,
                           trainer.cfg.MODEL.PROJ_DIM)
    return {"dns": dns, "n": n, "memory": memory, "flops": flops}


def time_side_by_side(variants: list[tuple[str, int]], args) -> dict[str, float]:
    """Median step time of each variant, steps interleaved round-robin in one process."""
    import torch

    times = {dns: [] for dns, _ in variants}
    with tempfile.TemporaryDirectory() as out:
        trainers = {dns: build_trainer(dns, n, args.batch, args.resolution, args.device, os.path.join(out, dns))
                    for dns, n in variants}
        views = [torch.randn(args.batch, 3, args.resolution, args.resolution, device=args.device) for _ in range(2)]
        for trainer in trainers.values():
            _timed_step(trainer, views)  # warm-up
        for _ in range(args.steps):
            for dns, trainer in trainers.items():
                times[dns].append(_timed_step(trainer, views)[0])
    return {dns: statistics.median(t) for dns, t in times.items()}


def measure(args, dns: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--variant", dns, "--n", str(n), "--batch", str(args.batch),
           "--resolution", str(args.resolution), "--steps", str(args.steps), "--device", args.device]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"variant {dns} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    byol, dspnet = measure(args, "mbv3_w1.0", 1), measure(args, "mbv3_s5", 4)
    individual = [] if args.skip_individual else [(dn, 1) for dn in DSPNET_DNS if dn != "mbv3_w1.0"]
    times = time_side_by_side([("mbv3_w1.0", 1), ("mbv3_s5", 4)] + individual, args)
    t, f = times["mbv3_s5"] / times["mbv3_w1.0"], dspnet["flops"] / byol["flops"]
    m = dspnet["memory"] / byol["memory"]
    for name, r in (("BYOL mbv3_w1.0", byol), ("DSPNet n=4 mbv3_s5", dspnet)):
        print(f"{name} step: {times[r['dns']] * 1e3:.0f} ms, {r['flops'] / 1e9:.2f} GFLOPs/image, "
              f"{r['memory'] / 2**20:.0f} MiB peak")
    print(f"time ratio {t:.3f} | FLOP ratio {f:.3f} | time/FLOP ratio {t / f:.3f} (goal <= 1.05) | "
          f"paper 2.11 | memory ratio {m:.3f} (goal <= 1.15)", flush=True)
    if individual:
        total = sum(times[dn] for dn in DSPNET_DNS) / times["mbv3_w1.0"]
        print("BYOL steps of each DN / BYOL-1.0: " + ", ".join(f"{dn} {times[dn] / times['mbv3_w1.0']:.2f}x"
                                                           for dn in DSPNET_DNS))
        print(f"5 DNs one by one: {total:.2f}x a BYOL-1.0 step (paper 4.42x) vs DSPNet {t:.2f}x (paper 2.11x)")


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
