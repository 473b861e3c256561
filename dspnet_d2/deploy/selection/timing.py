"""Latency: every DN timed in interleaved rounds after a warm-up, so machine noise hits every DN alike; a
DN's latency is the median of its rounds, its spread the interquartile range."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

__all__ = ["wall_clock", "time_interleaved", "latency_stats"]


def wall_clock(name: str, run: Callable, x: torch.Tensor) -> float:
    """Seconds one call of ``run(x)`` takes (CUDA: until the device has finished)."""
    start = time.perf_counter()
    run(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def time_interleaved(runners: dict[str, Callable], x: torch.Tensor, warmup: int, repeats: int,
                     timer: Callable[[str, Callable, torch.Tensor], float] = wall_clock) -> dict[str, list[float]]:
    """Seconds of ``repeats`` rounds, each timing every runner once with ``timer(name, run, x)``, after
    ``warmup`` untimed rounds (TorchScript's profiling runs, oneDNN and ONNX Runtime caches)."""
    for _ in range(warmup):
        for run in runners.values():
            run(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            times[name].append(timer(name, run, x))
    return times


def latency_stats(seconds: list[float]) -> dict:
    """Median and quartiles in milliseconds (a single sample is its own quartiles)."""
    ms = [s * 1e3 for s in seconds]
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0],) * 3
    return {"latency_ms": statistics.median(ms), "latency_q1_ms": q1, "latency_q3_ms": q3}


# -- peak memory --------------------------------------------------------------------------------------------
