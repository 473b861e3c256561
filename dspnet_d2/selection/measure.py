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
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Callable

import torch
from torch import nn

from ..complexity import count_flops, count_params
from ..dn import parse_dn
from ..errors import InvalidInputError
from ..deploy import export_onnx, export_torchscript, onnx_session, require_deploy_extra

__all__ = ["RUNTIMES", "DEVICES", "Settings", "Deployed", "deploy", "load_runner", "example_input", "wall_clock",
           "time_interleaved", "latency_stats", "peak_memory", "memory_method", "machine_name", "reset_peak_rss",
           "status_bytes", "MMAP_THRESHOLD", "measure", "CACHE_FILE"]

RUNTIMES = ("eager", "torchscript", "onnxruntime")
DEVICES = ("cpu", "cuda")
CACHE_FILE = "dn_measurements.json"
CACHE_FORMAT = "dspnet-dn-measurements-v1"
MMAP_THRESHOLD = "131072"  # bytes: glibc serves larger blocks with mmap and unmaps them when freed


@dataclass(frozen=True)
class Settings:
    """How the DNs are run and timed; every field is part of the cache key (a median of 3 rounds is no median
    of 100)."""

    runtime: str = "eager"  # eager | torchscript | onnxruntime
    device: str = "cpu"  # cpu | cuda (ONNX Runtime: cpu)
    threads: int | None = None  # torch intra-op threads = ONNX Runtime intra-op threads; None: torch's current
    batch: int = 1
    resolution: int | None = None  # input size; None: each DN's family evaluation resolution (224)
    amp: bool = False  # CUDA eager: bf16 autocast
    channels_last: bool = False  # eager / TorchScript: channels_last weights and input
    warmup: int = 3  # untimed runs of every DN before the timed rounds
    repeats: int = 20  # timed rounds; each runs every DN once

    def resolved(self) -> "Settings":
        """These settings checked against this machine, ``threads`` filled in; a mistake is an InvalidInputError."""
        if self.runtime not in RUNTIMES:
            raise InvalidInputError(f"unknown runtime {self.runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if self.device not in DEVICES:
            raise InvalidInputError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InvalidInputError("CUDA is absent on this machine (torch.cuda.is_available() is False): "
                                    "use --device cpu")
        if self.device == "cuda" and self.runtime == "onnxruntime":
            raise InvalidInputError("ONNX Runtime is measured on the CPU (its CPU execution provider): "
                                    "use --device cpu")
        if self.amp and (self.device != "cuda" or self.runtime != "eager"):
            raise InvalidInputError("--amp (bf16 autocast) applies to --runtime eager on --device cuda")
        if self.runtime == "onnxruntime":
            require_deploy_extra()
        if self.channels_last and self.runtime == "onnxruntime":
            raise InvalidInputError("--channels-last applies to the eager and torchscript runtimes")
        for name in ("threads", "batch", "resolution", "repeats"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidInputError(f"{name} must be at least 1, got {value}")
        if self.warmup < 0:
            raise InvalidInputError(f"warmup must be 0 or more, got {self.warmup}")
        return replace(self, threads=self.threads or torch.get_num_threads())

    def describe(self, resolution: int | None = None) -> str:
        amp = ", bf16 autocast" if self.amp else ""
        layout = ", channels_last" if self.channels_last else ""
        return (f"{self.runtime} on {self.device} ({machine_name(self.device)}), {self.threads} threads, batch "
                f"{self.batch}, {resolution or self.resolution or 'family'} px{amp}{layout}")


def machine_name(device: str) -> str:
    """The processor or GPU the figures belong to (part of the cache key)."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return f"{model}, {os.cpu_count()} cores"


def runtime_version(runtime: str) -> str:
    if runtime == "onnxruntime":
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch {torch.__version__}"


# -- a DN as its runtime runs it --------------------------------------------------------------------------
@dataclass
class Deployed:
    """One DN ready to run: ``run(images)``, the file a fresh process loads it from, its weights' size."""

    run: Callable[[torch.Tensor], object]
    file: str
    weight_bytes: int


def deploy(model: nn.Module, settings: Settings, folder: str, name: str, resolution: int) -> Deployed:
    """Write ``model`` (left unchanged) as ``settings.runtime``'s file in ``folder`` and load it back:
    eager is the pickled module, TorchScript the traced file, ONNX Runtime the ONNX file (any batch)."""
    model = _copy_for(model.eval(), settings)
    suffix = {"eager": ".pth", "torchscript": ".pt", "onnxruntime": ".onnx"}[settings.runtime]
    path = os.path.join(folder, name + suffix)
    if settings.runtime == "onnxruntime":
        export_onnx(model, path, resolution, dynamic_batch=True)
    elif settings.runtime == "torchscript":
        export_torchscript(model, path, resolution)
    else:
        torch.save(model, path)
    weight_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return Deployed(load_runner(path, settings), path, weight_bytes)


def _copy_for(model: nn.Module, settings: Settings) -> nn.Module:
    if not settings.channels_last:
        return model
    import copy

    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def load_runner(path: str, settings: Settings) -> Callable[[torch.Tensor], object]:
    """The callable that runs the file ``deploy`` wrote, on ``settings.device`` with ``settings.threads``."""
    if settings.runtime == "onnxruntime":
        # no spinning: ORT's threads spin after a run by default and would steal the cores from the next DN
        session = onnx_session(path, settings.threads, spinning=False)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.numpy()})
    if settings.runtime == "torchscript":
        model = torch.jit.load(path, map_location=settings.device)
    else:  # a module this process pickled a moment ago
        model = torch.load(path, map_location=settings.device, weights_only=False)
    if not settings.amp:
        return model

    def run(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(x)
    return run


def example_input(settings: Settings, resolution: int) -> torch.Tensor:
    x = torch.randn(settings.batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))
    x = x.to(settings.device)
    return x.contiguous(memory_format=torch.channels_last) if settings.channels_last else x


# -- timing -------------------------------------------------------------------------------------------------
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
def memory_method(device: str) -> str:
    if device == "cuda":
        return "torch.cuda.max_memory_allocated over one batch, plus the weights"
    return ("peak RSS growth of a fresh process that loads the DN and runs one batch: weights, runtime buffers and "
            "activations (glibc's mmap threshold fixed, so freed activations leave the RSS)")


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024


def reset_peak_rss() -> int:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs`` 5) and return it in bytes.
    ``getrusage``'s ru_maxrss cannot serve: it keeps the parent's peak across fork and exec."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_bytes("VmRSS")


def peak_memory(deployed: Deployed, settings: Settings, x: torch.Tensor) -> int:
    """Bytes a DN needs to run one batch (``memory_method`` says how they are counted)."""
    if settings.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        with torch.no_grad():
            deployed.run(x)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before + deployed.weight_bytes
    code = "import sys; from dspnet_d2.selection.measure import _rss_child; _rss_child(*sys.argv[1:])"
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD,  # and this very package in the child
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code, deployed.file, json.dumps(asdict(settings)), str(x.shape[-1])],
                            capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"measuring the memory of {deployed.file} failed:\n{result.stderr[-3000:]}")
    return int(result.stdout.strip().splitlines()[-1])


def _rss_child(path: str, settings_json: str, resolution: str) -> None:
    """The fresh process of ``peak_memory``: after the imports, load the DN, run it twice, print the peak RSS growth."""
    settings = Settings(**json.loads(settings_json))
    torch.set_num_threads(settings.threads)
    x = example_input(settings, int(resolution))
    base = reset_peak_rss()
    run = load_runner(path, settings)
    with torch.no_grad():
        for _ in range(2):
            run(x)
    print(status_bytes("VmHWM") - base)


# -- measuring DNs, with the cache --------------------------------------------------------------------------
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
