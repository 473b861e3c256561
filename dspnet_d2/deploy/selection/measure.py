"""Latency and peak memory of deployed DNs on this machine, cached per (machine, device, runtime, threads,
batch, resolution, warm-up and timed rounds, DN).

Each DN runs as the chosen runtime runs it: PyTorch eager (the static torchvision network), TorchScript
(traced) or ONNX Runtime (the dynamo export, CPU). All DNs are timed in interleaved rounds after a
warm-up, so machine noise hits every DN alike; a DN's latency is the median of its rounds, its spread
the interquartile range. ``tools/bench/deploy_latency.py`` times runtimes side by side with the same code.
"""
from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from typing import Callable

import torch
from torch import nn

from ...complexity import count_flops, count_params
from ...dn import parse_dn
from ...errors import InvalidInputError
from .memory import peak_memory
from .runners import deploy, example_input
from .settings import Settings, machine_name, runtime_version
from .timing import latency_stats, time_interleaved, wall_clock

__all__ = ["measure", "CACHE_FILE"]

CACHE_FILE = "dn_measurements.json"
CACHE_FORMAT = "dspnet-dn-measurements-v1"


def _cache_key(settings: Settings, dn: str, params: int, resolution: int) -> str:
    """The parameter count tells a DN with a classifier from one without."""
    parts = {"machine": machine_name(settings.device), "device": settings.device, "runtime": settings.runtime,
             "version": runtime_version(settings.runtime), "threads": settings.threads, "batch": settings.batch,
             "resolution": resolution, "amp": settings.amp, "channels_last": settings.channels_last,
             "warmup": settings.warmup, "repeats": settings.repeats, "dn": dn, "params": params}
    return "|".join(f"{k}={v}" for k, v in parts.items())


def _read_cache(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        return data["entries"]
    except (ValueError, KeyError, AttributeError) as err:
        raise InvalidInputError(f"{path} is not a DN measurement cache ({err}); move it away") from None


def _write_cache(path: str, entries: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump({"format": CACHE_FORMAT, "entries": entries}, f, indent=1)
    os.replace(path + ".tmp", path)


def measure(models: dict[str, nn.Module], settings: Settings, cache_dir: str, timer=wall_clock, memory=peak_memory,
            remeasure: bool = False, log: Callable[[str], None] = print) -> dict[str, dict]:
    """FLOPs, params, latency (median, quartiles, every round) and peak memory of each DN of ``models``
    (DN string -> static network), from ``cache_dir``'s cache where it has them (unless ``remeasure``;
    ``cached`` True), else measured here and added to it. ``timer`` and ``memory`` replace the clock and the
    memory probe (tests)."""
    settings = settings.resolved()
    os.makedirs(cache_dir, exist_ok=True)
    cache_path = os.path.join(cache_dir, CACHE_FILE)
    cache = _read_cache(cache_path)
    keys, todo = {}, {}
    for dn, model in models.items():
        resolution = settings.resolution or parse_dn(dn).info.eval_resolution
        keys[dn] = _cache_key(settings, dn, count_params(model), resolution)
        if remeasure or keys[dn] not in cache:
            todo.setdefault(resolution, []).append(dn)
    cached = len(models) - sum(map(len, todo.values()))
    if cached:
        log(f"{cached} of {len(models)} DNs from the cache {cache_path}")
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        for resolution, dns in todo.items():
            log(f"measuring {len(dns)} DNs: {settings.describe(resolution)}; {settings.warmup} warm-up and "
                f"{settings.repeats} timed rounds, interleaved")
            group = _measure_group({dn: models[dn] for dn in dns}, settings, resolution, timer, memory)
            cache.update({keys[dn]: record for dn, record in group.items()})
            _write_cache(cache_path, cache)
    finally:
        torch.set_num_threads(threads)
    measured = {dn for dns in todo.values() for dn in dns}
    return {dn: {**cache[keys[dn]], "cached": dn not in measured} for dn in models}


def _measure_group(models: dict[str, nn.Module], settings: Settings, resolution: int, timer, memory) -> dict[str, dict]:
    x = example_input(settings, resolution)
    with tempfile.TemporaryDirectory() as folder:
        records, runners = {}, {}
        for dn, model in models.items():
            deployed = deploy(model, settings, folder, dn, resolution)
            runners[dn] = deployed.run
            records[dn] = {"dn": dn, "flops": count_flops(model, resolution), "params": count_params(model),
                           "resolution": resolution,
                           "memory_mb": memory(deployed, settings, x) / 2**20}  # one DN at a time, before the timing
        times = time_interleaved(runners, x, settings.warmup, settings.repeats, timer)
    measured = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {dn: {**record, **latency_stats(times[dn]), "samples_ms": [t * 1e3 for t in times[dn]],
                 "measured": measured} for dn, record in records.items()}
