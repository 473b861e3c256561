#!/usr/bin/env python
"""Cost of one DSPNet step (n = 4, MobileNetV3 5 DNs) vs one BYOL step of MobileNetV3-1.0, same batch, and
the engine's BYOL step vs a plain eager BYOL loop of the same model.

    python tools/bench/step_cost.py [--batch 16] [--resolution 224] [--steps 3] [--device cpu|cuda]
                                    [--no-channels-last] [--compile] [--no-amp] [--skip-individual]
                                    [--skip-memory] [--dspnet-dns mbv3_s5]

Every variant but the plain loop runs the real ``Trainer.train_step`` (past warm-up, so the sandwich rule is on). Times are
medians of steps interleaved round-robin in one process, so machine noise hits all variants alike. Peak
memory is measured per variant in a fresh process (CUDA: max allocated; CPU: peak RSS growth after
imports, with glibc's mmap threshold fixed so that freed activations go back to the system and the peak
is what was alive, not what the allocator kept cached). FLOPs are fvcore's forward count, backward = 2x.

Goals printed next to the figures: DSPNet/BYOL time <= the FLOP ratio (time/FLOP <= 1.0) on CPU and
<= 2.11 (the paper's, 16 V100) on a GPU; memory ratio <= 1.15; engine BYOL / plain loop <= 1.05. Also:
each DN's own BYOL step as time and FLOP ratios to BYOL-1.0 (what per-FLOP cost small DNs have on this
device) and the cost of pretraining the 5 DNs one by one vs DSPNet once (paper: 4.42x vs 2.11x).
Levers: ``--compile`` (torch.compile of the online network, one graph per DN; of the plain loop's model
too), ``--no-channels-last``, ``--no-amp`` (GPU: bf16 autocast by default, as the recipes).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

DSPNET_DNS = ["mbv3_w0.5", "mbv3_w0.625", "mbv3_w0.75", "mbv3_w0.875", "mbv3_w1.0"]
BYOL, DSPNET, ENGINE, PLAIN = "mbv3_w1.0", "mbv3_s5", "engine BYOL, plain BN", "plain eager BYOL loop"


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


def build_trainer(dns: str, n: int, args, out: str, momentum_bn: bool = True):
    import torch

    from dspnet_d2.demo.make_demo_data import make_demo_dataset
    from pretrain.engine.config import load_cfg
    from pretrain.engine.trainer import Trainer

    data = make_demo_dataset(os.path.join(tempfile.gettempdir(), "dspnet_bench_data"), train_per_class=8,
                             val_per_class=1, coco_train_images=1, coco_val_images=1)
    cfg = load_cfg("configs/pretrain/dspnet_mbv3_imagenet.yaml", [
        "MODEL.DNS", dns, "MODEL.NUM_SUBNETS", str(n), "MODEL.FULL_ONLY_EPOCHS", "0", "DATA.ROOT", str(data),
        "DATA.RESOLUTION", str(args.resolution), "DATA.NUM_WORKERS", "0", "SOLVER.BATCH_SIZE", str(args.batch),
        "SOLVER.EPOCHS", "1000", "OUTPUT_DIR", out, "DEVICE", args.device, "AMP.ENABLED", str(args.amp),
        "CHANNELS_LAST", str(args.channels_last), "MODEL.MOMENTUM_BN", str(momentum_bn)])
    trainer = Trainer(cfg)
    trainer.step = trainer.steps_per_epoch * 20  # past warm-up: the sandwich rule is on
    if args.compile:
        trainer.network = torch.compile(trainer.network, dynamic=False)
    return trainer


class PlainBYOL:
    """BYOL written as a plain eager loop: torchvision's MobileNetV3 features, nn.Sequential heads, the same
    LARS (torch has none), EMA by one fused lerp; no slimming, no records. What the engine is measured against."""

    def __init__(self, args):
        import torch
        from torch import nn

        from dspnet_d2.dn import parse_dn
        from dspnet_d2.families import build_static_dn
        from pretrain.engine.optim import LARS, lars_param_groups

        torch.manual_seed(0)
        self.device = torch.device(args.device)

        def mlp(i):
            return nn.Sequential(nn.Linear(i, 4096), nn.BatchNorm1d(4096), nn.ReLU(inplace=True), nn.Linear(4096, 256))

        encoder = build_static_dn(parse_dn(BYOL))
        with torch.no_grad():
            dim = encoder.eval()(torch.zeros(1, 3, 32, 32)).shape[1]
        self.online = nn.ModuleDict({"encoder": encoder.train(), "projector": mlp(dim), "predictor": mlp(256)})
        self.target = copy.deepcopy(nn.ModuleDict({k: self.online[k] for k in ("encoder", "projector")}))
        self.target.requires_grad_(False)
        for module in (self.online, self.target):
            module.to(self.device, memory_format=torch.channels_last if args.channels_last else torch.preserve_format)
        self.optimizer = LARS(lars_param_groups([self.online], 1.5e-6), lr=0.1, weight_decay=1.5e-6)
        self.amp = args.amp
        self.encoder = torch.compile(self.online["encoder"], dynamic=False) if args.compile else self.online["encoder"]

    def train_step(self, view1, view2):
        import torch

        from pretrain.methods import byol_loss

        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            with torch.no_grad():
                z1, z2 = (self.target["projector"](self.target["encoder"](v)) for v in (view1, view2))
            p1, p2 = (self.online["predictor"](self.online["projector"](self.encoder(v))) for v in (view1, view2))
            loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            online = dict(self.online.named_parameters())
            pairs = [(t, online[name]) for name, t in self.target.named_parameters()]
            torch._foreach_lerp_([t for t, _ in pairs], [o for _, o in pairs], 0.004)
        return {"loss": loss.item()}


def _views(args):
    import torch
    views = [torch.randn(args.batch, 3, args.resolution, args.resolution, device=args.device) for _ in range(2)]
    return [v.contiguous(memory_format=torch.channels_last) for v in views] if args.channels_last else views


def _timed_step(trainer, views) -> float:
    import torch
    start = time.perf_counter()
    trainer.train_step(*views)
    if views[0].device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_variant(dns: str, n: int, args) -> dict:
    """Runs in its own process, so the peak memory is this variant's alone."""
    import torch

    from dspnet_d2.deploy.selection.memory import reset_peak_rss, status_bytes

    rss_base = reset_peak_rss()  # after imports, before the model
    with tempfile.TemporaryDirectory() as out:
        trainer = build_trainer(dns, n, args, out)
        views = _views(args)
        if trainer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.steps + 1):
            _timed_step(trainer, views)
        if trainer.device.type == "cuda":
            memory = torch.cuda.max_memory_allocated()
        else:
            memory = status_bytes("VmHWM") - rss_base  # peak RSS growth
    return {"dns": dns, "n": n, "memory": memory}


def time_side_by_side(variants: list[tuple[str, int]], args) -> dict[str, float]:
    """Median step time of each variant, steps interleaved round-robin in one process."""
    with tempfile.TemporaryDirectory() as out:
        return _interleaved({dns: build_trainer(dns, n, args, os.path.join(out, dns)) for dns, n in variants}, args)


def time_engine_vs_plain(args) -> dict[str, float]:
    """The engine's BYOL step (plain BN, as the loop) and the plain loop, interleaved as a pair (alike
    working sets, so neither pays for the other's)."""
    with tempfile.TemporaryDirectory() as out:
        return _interleaved({ENGINE: build_trainer(BYOL, 1, args, out, momentum_bn=False), PLAIN: PlainBYOL(args)},
                            args)


def _interleaved(runners: dict, args) -> dict[str, float]:
    views = _views(args)
    for runner in runners.values():  # warm-up (and compilation)
        _timed_step(runner, views)
    times = {name: [] for name in runners}
    for _ in range(args.steps):
        for name, runner in runners.items():
            times[name].append(_timed_step(runner, views))
    return {name: statistics.median(t) for name, t in times.items()}


def measure(args, dns: str, n: int) -> dict:
    from dspnet_d2.deploy.selection.memory import MMAP_THRESHOLD

    cmd = [sys.executable, __file__, "--variant", dns, "--n", str(n)] + _flags(args)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"variant {dns} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _flags(args) -> list[str]:
    return (["--batch", str(args.batch), "--resolution", str(args.resolution), "--steps", str(args.steps),
             "--device", args.device] + ([] if args.channels_last else ["--no-channels-last"])
            + (["--compile"] if args.compile else []) + ([] if args.amp else ["--no-amp"]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true", help="torch.compile the online network(s)")
    parser.add_argument("--no-amp", dest="amp", action="store_false", help="GPU: no bf16 autocast")
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--skip-individual", action="store_true", help="skip the 4 smaller DNs' own BYOL steps")
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--dspnet-dns", default=DSPNET, help="the DSPNet variant's DN set (mbv3_s3: 3 graphs "
                                                               "to compile instead of 5)")
    args = parser.parse_args(argv)
    args.amp = args.amp and args.device == "cuda"
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.n, args)))
        return
    print(f"device={args.device} batch={args.batch} resolution={args.resolution} steps={args.steps} "
          f"channels_last={args.channels_last} compile={args.compile} amp={args.amp}", flush=True)
    try:
        report(args)
    except KeyboardInterrupt:  # gpu_check.sh's time guard: what was printed stands
        print("stopped before the end; the lines above are complete measurements", flush=True)
        sys.exit(130)


def report(args) -> None:
    individual = [] if args.skip_individual else [(dn, 1) for dn in DSPNET_DNS if dn != BYOL]
    times = time_side_by_side([(BYOL, 1), (args.dspnet_dns, 4)] + individual, args)
    flops = {dns: step_flops(*_sampled_for_flops(dns, n), args.resolution, 4096, 256)
             for dns, n in ((BYOL, 1), (args.dspnet_dns, 4))}
    t, f = times[args.dspnet_dns] / times[BYOL], flops[args.dspnet_dns] / flops[BYOL]
    for dns in (BYOL, args.dspnet_dns):
        print(f"{'BYOL' if dns == BYOL else 'DSPNet n=4'} {dns} step: {times[dns] * 1e3:.0f} ms, "
              f"{flops[dns] / 1e9:.2f} GFLOPs/image")
    goal = "<= 2.11 (paper, GPU)" if args.device == "cuda" else f"<= {f:.3f} (the FLOP ratio)"
    print(f"time ratio {t:.3f} (goal {goal}) | FLOP ratio {f:.3f} | time/FLOP {t / f:.3f}", flush=True)
    if individual:
        rows = []
        for dn in DSPNET_DNS:
            tr = times[dn] / times[BYOL]
            fr = step_flops([[dn]], dn, args.resolution, 4096, 256) / flops[BYOL]
            rows.append(f"{dn} time {tr:.2f}x FLOPs {fr:.2f}x time/FLOP {tr / fr:.2f}")
        print("each DN's own BYOL step vs BYOL-1.0: " + "; ".join(rows))
        total = sum(times[dn] for dn in DSPNET_DNS) / times[BYOL]
        print(f"5 DNs one by one: {total:.2f}x a BYOL-1.0 step (paper 4.42x) vs DSPNet {t:.2f}x (paper 2.11x)",
              flush=True)
    pair = time_engine_vs_plain(args)
    print(f"engine BYOL step / plain eager BYOL loop: {pair[ENGINE] / pair[PLAIN]:.3f} (goal <= 1.05; "
          f"{pair[ENGINE] * 1e3:.0f} vs {pair[PLAIN] * 1e3:.0f} ms)", flush=True)
    if not args.skip_memory:
        byol, dspnet = measure(args, BYOL, 1), measure(args, args.dspnet_dns, 4)
        ratio = f"{dspnet['memory'] / byol['memory']:.3f}" if byol["memory"] > 0 else "n/a (too small to measure)"
        print(f"peak memory: BYOL {byol['memory'] / 2**20:.0f} MiB, DSPNet {dspnet['memory'] / 2**20:.0f} MiB, "
              f"ratio {ratio} (goal <= 1.15)", flush=True)


def _sampled_for_flops(dns: str, n: int, draws: int = 200) -> tuple[list[list[str]], str]:
    """The sub-networks the sandwich draws over ``draws`` steps (as the trainer draws them) and the full DN."""
    from dspnet_d2.dn import largest_dn
    from dspnet_d2.dn import dn_set
    from pretrain.methods import sample_subnets

    spec = dn_set(dns)
    return [[str(d) for d in sample_subnets(spec, n, step, 0, False)] for step in range(draws)], str(largest_dn(spec))


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
