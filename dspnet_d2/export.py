"""Export a DN out of a supernet as a plain network, recalibrate BN statistics, and write a DN as a
deployable file: ONNX (checked with ONNX Runtime) or TorchScript."""
from __future__ import annotations

import os
from typing import Iterable

import torch
from torch import nn

from .dn import DNSpec, parse_dn
from .errors import InvalidInputError
from .families import get_family
from .slim.base import Supernet
from .weights import dn_in_source, read_source, static_dn

__all__ = ["export_dn", "recalibrate_bn", "seeded_subset", "load_dn_model", "export_onnx", "export_torchscript",
           "export_program", "run_onnx", "onnx_session", "require_deploy_extra", "parity_error", "check_deployed",
           "check_sizes", "load_deployed", "ONNX_OPSET",
           "PARITY_TOLERANCE"]

ONNX_OPSET = 18  # the dynamo exporter's default opset; every op of the two families has an ONNX Runtime kernel


@torch.no_grad()
def export_dn(supernet: Supernet, dn: "str | DNSpec") -> nn.Module:
    """The DN ``dn`` of ``supernet`` as a plain torchvision network with independent (cloned) weights.

    The result needs nothing from this package; its output equals the supernet's with ``dn`` active.
    """
    dn = supernet.check_dn(dn)
    return static_dn(supernet.state_dict(), dn, supernet.num_classes).train(supernet.training)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable, num_batches: int | None = None) -> int:
    """Recompute every BatchNorm's running statistics as the exact average over ``num_batches`` batches,
    each batch weighted by its number of images (a partial last batch counts for what it holds).

    ``batches`` yields tensors or tuples whose first item is the input (a DataLoader works). Works on an
    exported DN or on a supernet slimmed to a DN (shared BN buffers then hold that DN's statistics).
    Only the BN layers run in train mode: dropout and stochastic depth stay off, as at inference.
    Returns the number of batches used; every module's mode and BN momentum are restored afterwards.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved_momentum = [m.momentum for m in norms]
    saved_modes = [(m, m.training) for m in model.modules()]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.train()
    used = seen = 0
    try:
        for batch in batches:
            if num_batches is not None and used >= num_batches:
                break
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            seen += len(inputs)
            for m in norms:  # running = (1 - m) running + m batch: m = n / seen keeps the image-weighted mean
                m.momentum = len(inputs) / seen
            model(inputs)
            used += 1
    finally:
        for m, momentum in zip(norms, saved_momentum):
            m.momentum = momentum
        for m, training in saved_modes:
            m.training = training
    if used == 0:
        raise ValueError("recalibrate_bn got no batches")
    return used


def seeded_subset(num_items: int, max_items: int, seed: int) -> list[int]:
    """``min(num_items, max_items)`` distinct indices of ``range(num_items)`` drawn at random from ``seed``.

    The sample of BN recalibration: image folders list their files class by class, so reading them in
    order would show the statistics of the first few classes only (200 x 256 ImageNet images cover
    40 of its 1000 classes). The same seed gives the same sample on every rank and in every run.
    """
    if num_items < 1 or max_items < 1:
        raise ValueError(f"a sample needs items and a positive quota, got {num_items} items, quota {max_items}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(num_items, generator=generator)[:max_items].tolist()


def load_dn_model(source: str, dn: "str | DNSpec | None" = None, classifier: bool = True) -> tuple[nn.Module, DNSpec]:
    """The static DN of a weight file (pretraining or supervised checkpoint, exported DN), in eval mode,
    with its classifier when the file has one and ``classifier`` is true. ``dn`` may be omitted for a
    file of one DN."""
    weights, dns, _ = read_source(source, allow_torchvision=False)
    dn = dn_in_source(source, dns, dn)
    head = get_family(dn.family).head
    head_weights = sorted((k for k in weights if k.startswith(head + ".") and k.endswith(".weight")),
                          key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")])
    num_classes = weights[head_weights[-1]].shape[0] if classifier and head_weights else None
    return static_dn(weights, dn, num_classes).eval(), dn


PARITY_TOLERANCE = 1e-4  # largest |exported - PyTorch| per image, relative to that image's output scale


def _dynamic_shapes(dynamic_batch: bool, dynamic_size: bool):
    """``torch.export``'s dynamic dimensions of the one input (by position), or None for a static shape."""
    dims = {0: torch.export.Dim("batch", min=1, max=1024)} if dynamic_batch else {}
    if dynamic_size:  # from 64 px every stride-32 map is at least 2 x 2 (torch.export specialises a 1 x 1 map)
        dims.update({2: torch.export.Dim("height", min=64, max=4096), 3: torch.export.Dim("width", min=64, max=4096)})
    return (dims,) if dims else None


def _example(model: nn.Module, batch: int, resolution: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)).to(device)


@torch.no_grad()
def export_onnx(model: nn.Module, path: str, resolution: int = 224, dynamic_batch: bool = True,
                opset: int = ONNX_OPSET, dynamic_size: bool = False) -> str:
    """Write ``model`` (eval mode) to ONNX with torch's dynamo exporter (``torch.export`` graph; the
    TorchScript-based exporter is deprecated), input ``images`` (N, 3, H, W), output ``output``; with
    ``dynamic_batch`` N is free, with ``dynamic_size`` H and W are (else R x R). Needs the ``deploy``
    extra (onnx, onnxscript)."""
    model = model.eval()
    program = torch.onnx.export(model, (_example(model, 2, resolution),), dynamo=True, opset_version=opset, verbose=False,
                                input_names=["images"], output_names=["output"],
                                dynamic_shapes=_dynamic_shapes(dynamic_batch, dynamic_size), external_data=False)
    program.save(path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def parity_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| of each image over that image's output scale (its largest |expected|, at least
    1), the worst over the batch. float32 accumulation error grows with the output's scale: a trained
    DN's outputs reach ~1e4, where an element-wise tolerance fails small outputs next to large ones."""
    if got.shape != expected.shape:
        raise ValueError(f"exported output shape {tuple(got.shape)} != PyTorch's {tuple(expected.shape)}")
    diff = (got.float() - expected.float()).abs().flatten(1).amax(1)
    scale = expected.float().abs().flatten(1).amax(1).clamp(min=1.0)
    return (diff / scale).max().item()


def load_deployed(path: str, fmt: str):
    """A written file as a function of an image batch: ``onnx`` (ONNX Runtime), ``torchscript`` or ``pt2``."""
    if fmt == "onnx":  # one session for every batch
        session = onnx_session(path)
        return lambda images: run_onnx(session, images)
    return torch.jit.load(path) if fmt == "torchscript" else torch.export.load(path).module()


def check_sizes(resolution: int, dynamic_size: bool) -> list[tuple[int, int]]:
    """The H x W a parity check runs at: the export's R x R, and with ``dynamic_size`` a second size of
    another aspect ratio (not a multiple of 32, as real images after a shortest-edge resize)."""
    second = (resolution + resolution // 4 + 3, resolution + resolution // 2 + 5)
    return [(resolution, resolution)] + ([second] if dynamic_size else [])


@torch.no_grad()
def check_deployed(model: nn.Module, path: str, fmt: str, sizes: list[tuple[int, int]], batches=(1, 3),
                   images: torch.Tensor | None = None, tolerance: float = PARITY_TOLERANCE) -> float:
    """The worst ``parity_error`` of the file ``path`` against ``model`` over random batches of each size in
    ``sizes`` and each batch size of ``batches`` (and ``images``, real images, when given); raises
    ``RuntimeError`` when it exceeds ``tolerance``."""
    run, worst = load_deployed(path, fmt), 0.0
    generator = torch.Generator().manual_seed(0)
    checks = [torch.randn(b, 3, h, w, generator=generator) for h, w in sizes for b in batches]
    for inputs in checks + ([images] if images is not None else []):
        error = parity_error(run(inputs), model(inputs))
        if error > tolerance:
            raise RuntimeError(f"{path} differs from the PyTorch model on a batch of {tuple(inputs.shape)}: max |diff| "
                               f"{error:.1e} of the output's scale (tolerance {tolerance:.0e})")
        worst = max(worst, error)
    return worst


def require_deploy_extra() -> None:
    """Raise the user's error when the ``deploy`` extra (onnx, onnxscript, onnxruntime) is not installed."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as err:
        raise InvalidInputError(f"ONNX needs the deploy extra: pip install -e \".[deploy]\" ({err})") from None


def onnx_session(path: str, threads: int | None = None, spinning: bool = True):
    """An ONNX Runtime CPU session of ``path`` (``threads`` intra-op threads; ``spinning`` False stops its
    threads from spinning after each run, which steals the cores from whatever runs next)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def run_onnx(path: "str | object", images: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """The first output of ``path`` (a file, or a session of ``onnx_session``) for ``images`` under ONNX Runtime."""
    session = onnx_session(path, threads) if isinstance(path, str) else path
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.cpu().numpy()})[0])


@torch.no_grad()
def export_torchscript(model: nn.Module, path: str, resolution: int = 224) -> str:
    """Write ``model`` (eval mode) as TorchScript traced at (2, 3, R, R) (``torch.jit.script`` is
    deprecated; the networks have no data-dependent control flow, so the trace holds for any batch);
    ``torch.jit.load(path)`` runs it without this package."""
    traced = torch.jit.trace(model.eval(), _example(model, 2, resolution), check_trace=False)
    traced.save(path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


@torch.no_grad()
def export_program(model: nn.Module, path: str, resolution: int = 224, dynamic_batch: bool = True,
                   dynamic_size: bool = False) -> str:
    """Write ``model`` (eval mode) as a ``torch.export`` program (.pt2), torch's successor of TorchScript;
    ``torch.export.load(path).module()`` runs it without this package."""
    program = torch.export.export(model.eval(), (_example(model, 2, resolution),),
                                  dynamic_shapes=_dynamic_shapes(dynamic_batch, dynamic_size))
    torch.export.save(program, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path
