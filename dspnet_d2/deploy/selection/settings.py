"""What a measurement is taken with (runtime, device, threads, batch, resolution, rounds) and on what machine."""
from __future__ import annotations

import importlib
import os
import platform
from dataclasses import dataclass, replace

import torch

from ...errors import InvalidInputError
from ..formats import ExportFormat, ExportOptions, formats

__all__ = ["EAGER", "runtimes", "DEVICES", "Settings", "machine_name", "runtime_version"]

DEVICES = ("cpu", "cuda")


def _save_module(model, path: str, options: ExportOptions) -> str:
    torch.save(model, path)
    return path


def _load_module(path: str, device: str = "cpu", threads: int | None = None):
    return torch.load(path, map_location=device, weights_only=False)  # a module this process pickled a moment ago


# PyTorch eager: the static network pickled, so that a fresh process loads it as it loads any other file (memory)
EAGER = ExportFormat("eager", ".pth", _save_module, _load_module, any_shape=True)
# the runtimes measured before every registered format was, and the format each runs
_NAMED_RUNTIMES = {"torchscript": "torchscript", "onnxruntime": "onnx"}


def runtimes() -> dict[str, ExportFormat]:
    """The --runtime values and the format each runs: eager, torchscript, onnxruntime, then every other
    registered format that runs (a file of weights does not), under its own name."""
    table = formats()
    named = {"eager": EAGER} | {name: table[fmt] for name, fmt in _NAMED_RUNTIMES.items() if fmt in table}
    others = {name: fmt for name, fmt in table.items()
              if fmt.load is not None and name not in _NAMED_RUNTIMES.values()}
    return named | others


@dataclass(frozen=True)
class Settings:
    """How the DNs are run and timed; every field is part of the cache key (a median of 3 rounds is no median
    of 100)."""

    runtime: str = "eager"  # a name of runtimes(): eager | torchscript | onnxruntime | pt2 | a registered format
    device: str = "cpu"  # cpu | cuda (ONNX Runtime: cpu)
    threads: int | None = None  # torch intra-op threads = ONNX Runtime intra-op threads; None: torch's current
    batch: int = 1
    resolution: int | None = None  # input size; None: each DN's family evaluation resolution (224)
    amp: bool = False  # CUDA eager: bf16 autocast
    channels_last: bool = False  # runtimes of torch (eager, TorchScript, pt2): channels_last weights and input
    warmup: int = 3  # untimed runs of every DN before the timed rounds
    repeats: int = 20  # timed rounds; each runs every DN once

    def resolved(self) -> "Settings":
        """These settings checked against this machine, ``threads`` filled in; a mistake is an InvalidInputError."""
        table = runtimes()
        if self.runtime not in table:
            raise InvalidInputError(f"unknown runtime {self.runtime!r}; choose one of {', '.join(table)}")
        if self.device not in DEVICES:
            raise InvalidInputError(f"unknown device {self.device!r}; choose one of {', '.join(DEVICES)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InvalidInputError("CUDA is absent on this machine (torch.cuda.is_available() is False): "
                                    "use --device cpu")
        fmt = table[self.runtime]
        if self.device not in fmt.devices:
            raise InvalidInputError(f"--runtime {self.runtime} runs on the {' or '.join(fmt.devices)} only: "
                                    f"use --device {fmt.devices[0]}")
        if self.amp and (self.device != "cuda" or fmt is not EAGER):
            raise InvalidInputError("--amp (bf16 autocast) applies to --runtime eager on --device cuda")
        fmt.requires()
        if self.channels_last and fmt.runtime != "torch":  # a layout of torch's tensors
            torch_runtimes = [name for name, f in table.items() if f.runtime == "torch"]
            raise InvalidInputError(f"--channels-last applies to the {', '.join(torch_runtimes[:-1])} and "
                                    f"{torch_runtimes[-1]} runtimes")
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
    """What runs ``runtime``'s files, with its version (part of the cache key): ``torch 2.x``, ``onnxruntime 1.x``."""
    module = runtimes()[runtime].runtime
    return f"{module} {getattr(importlib.import_module(module), '__version__', '')}".strip()


# -- a DN as its runtime runs it --------------------------------------------------------------------------
