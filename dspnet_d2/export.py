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
           "export_program", "run_onnx", "onnx_session", "require_deploy_extra", "ONNX_OPSET"]

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


def _batch_dim(dynamic_batch: bool):
    return ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None  # by position


def _example(model: nn.Module, batch: int, resolution: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)).to(device)


@torch.no_grad()
def export_onnx(model: nn.Module, path: str, resolution: int = 224, dynamic_batch: bool = True,
                opset: int = ONNX_OPSET) -> str:
    """Write ``model`` (eval mode) to ONNX with torch's dynamo exporter (``torch.export`` graph; the
    TorchScript-based exporter is deprecated), input ``images`` (N, 3, R, R), output ``output``; with
    ``dynamic_batch`` N is free. Needs the ``deploy`` extra (onnx, onnxscript)."""
    model = model.eval()
    program = torch.onnx.export(model, (_example(model, 2, resolution),), dynamo=True, opset_version=opset, verbose=False,
                                input_names=["images"], output_names=["output"], dynamic_shapes=_batch_dim(dynamic_batch),
                                external_data=False)
    program.save(path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


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
def export_program(model: nn.Module, path: str, resolution: int = 224, dynamic_batch: bool = True) -> str:
    """Write ``model`` (eval mode) as a ``torch.export`` program (.pt2), torch's successor of TorchScript;
    ``torch.export.load(path).module()`` runs it without this package."""
    program = torch.export.export(model.eval(), (_example(model, 2, resolution),), dynamic_shapes=_batch_dim(dynamic_batch))
    torch.export.save(program, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path
