"""A DN deployed as the chosen runtime runs it (``runtimes()``: PyTorch eager, the static torchvision network;
TorchScript, traced; ONNX Runtime, the dynamo export on the CPU; or any other registered format), and the input
it is measured on."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..formats import ExportOptions
from .settings import Settings, runtimes

__all__ = ["Deployed", "deploy", "load_runner", "example_input"]


@dataclass
class Deployed:
    """One DN ready to run: ``run(images)``, the file a fresh process loads it from, its weights' size."""

    run: Callable[[torch.Tensor], object]
    file: str
    weight_bytes: int


def deploy(model: nn.Module, settings: Settings, folder: str, name: str, resolution: int) -> Deployed:
    """Write ``model`` (left unchanged) as ``settings.runtime``'s format in ``folder`` (R x R, any batch where the
    format takes any) and load it back."""
    model = _copy_for(model.eval(), settings)
    fmt = runtimes()[settings.runtime]
    options = ExportOptions(resolution, fmt.dynamic_batch, 2 if fmt.dynamic_batch else settings.batch)
    path = fmt.export(model, os.path.join(folder, name + fmt.suffix), options)
    weight_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return Deployed(load_runner(path, settings), path, weight_bytes)


def _copy_for(model: nn.Module, settings: Settings) -> nn.Module:
    if not settings.channels_last:
        return model
    import copy

    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def load_runner(path: str, settings: Settings) -> Callable[[torch.Tensor], object]:
    """The callable that runs the file ``deploy`` wrote, on ``settings.device`` with ``settings.threads``."""
    model = runtimes()[settings.runtime].load(path, settings.device, settings.threads)
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
