"""A DN deployed as the chosen runtime runs it: PyTorch eager (the static torchvision network), TorchScript
(traced) or ONNX Runtime (the dynamo export, CPU), and the input it is measured on."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..formats import export_onnx, export_torchscript, onnx_session
from .settings import Settings

__all__ = ["Deployed", "deploy", "load_runner", "example_input"]


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
