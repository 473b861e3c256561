"""What a measurement is taken with (runtime, device, threads, batch, resolution, rounds) and on what machine."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass, replace

import torch

from ...errors import InvalidInputError
from ..formats import require_deploy_extra

__all__ = ["RUNTIMES", "DEVICES", "Settings", "machine_name", "runtime_version"]

RUNTIMES = ("eager", "torchscript", "onnxruntime")
DEVICES = ("cpu", "cuda")


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
