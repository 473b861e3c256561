"""Peak memory of a deployed DN: CUDA's allocator peak, or on CPU the peak resident set of a fresh process
that loads and runs the file (VmHWM after a reset), with glibc's mmap threshold fixed."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from dataclasses import asdict

import torch

from .runners import Deployed, example_input, load_runner
from .settings import Settings, runtimes

__all__ = ["MMAP_THRESHOLD", "memory_method", "status_bytes", "reset_peak_rss", "peak_memory"]

MMAP_THRESHOLD = "131072"  # bytes: glibc serves larger blocks with mmap and unmaps them when freed


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
    code = "import sys; from dspnet_d2.deploy.selection.memory import _rss_child; _rss_child(*sys.argv[1:])"
    # the module that defines the runtime's format registers it when the fresh process imports it
    module = runtimes()[settings.runtime].load.__module__
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD,  # and this very package in the child
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code, deployed.file, json.dumps(asdict(settings)), str(x.shape[-1]),
                             module], capture_output=True, text=True, env=env)
    if result.returncode:
        raise RuntimeError(f"measuring the memory of {deployed.file} failed:\n{result.stderr[-3000:]}")
    return int(result.stdout.strip().splitlines()[-1])


def _rss_child(path: str, settings_json: str, resolution: str, module: str) -> None:
    """The fresh process of ``peak_memory``: after the imports, load the DN, run it twice, print the peak RSS growth."""
    importlib.import_module(module)
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
