"""The table of file formats a DN is written to (``ExportFormat``: ONNX, TorchScript, a torch.export program,
a torchvision state_dict; ``register_format`` adds one from outside), ONNX Runtime sessions, and the parity check
of a written file against its PyTorch model. Every command that writes or runs a DN file reads the table."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..dn import DNSpec
from ..errors import InvalidInputError
from ..weights import save_dn_file

__all__ = ["ExportFormat", "ExportOptions", "register_format", "unregister_format", "get_format", "formats",
           "export_onnx", "export_torchscript", "export_program", "run_onnx", "onnx_outputs", "onnx_session",
           "require_deploy_extra", "parity_error", "check_deployed", "check_sizes", "check_batches", "ParityError",
           "ONNX_OPSET", "PARITY_TOLERANCE", "MIN_DYNAMIC_SIZE"]

ONNX_OPSET = 18  # the dynamo exporter's default opset; every op of the two families has an ONNX Runtime kernel
PARITY_TOLERANCE = 1e-4  # largest |exported - PyTorch| per image, relative to that image's output scale
# the smallest H, W of a file of any size: from 64 px every stride-32 map is at least 2 x 2 (torch.export
# specialises a 1 x 1 map)
MIN_DYNAMIC_SIZE = 64


class ParityError(RuntimeError):
    """A written file's outputs differ from its PyTorch model's beyond the tolerance."""


Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ExportOptions:
    """What a file is written for: the example it is traced at, the shapes it takes, what it records."""

    resolution: int = 224  # the example is R x R
    dynamic_batch: bool = True  # any batch size, else ``batch`` only
    batch: int = 2  # the example's batch: at least 2 for any batch (torch.export specialises a batch of 1)
    dynamic_size: bool = False  # any H, W >= MIN_DYNAMIC_SIZE, else R x R
    dn: DNSpec | None = None  # a weights file records its DN ...
    metadata: dict = field(default_factory=dict)  # ... and where its weights come from (source, bn_recalibration)


@dataclass(frozen=True)
class ExportFormat:
    """A kind of file a DN is written to: how it is written, and how it is loaded to run."""

    name: str  # the --format value
    suffix: str  # the file name's ending, with its dot
    export: Callable[[nn.Module, str, ExportOptions], str]  # writes the eval-mode model to the path; returns the path
    # load(path, device="cpu", threads=None): the file as a function of an image batch; None: a file of weights,
    # no program (nothing runs it, nothing is checked)
    load: Callable[..., Runner] | None
    runtime: str = "torch"  # the Python module that runs the file (its __version__ marks a measurement)
    dynamic_batch: bool = True  # can be written for any batch size (else for the example's only)
    dynamic_size: bool = True  # can be written for any H x W (else for R x R only)
    any_shape: bool = False  # every file takes any batch and size, whatever is asked (a trace)
    devices: tuple[str, ...] = ("cpu", "cuda")  # where its load runs it
    requires: Callable[[], None] = lambda: None  # raises InvalidInputError when what it needs is not installed


_FORMATS: dict[str, ExportFormat] = {}


def register_format(fmt: ExportFormat) -> ExportFormat:
    """Add ``fmt`` to the table that tools/export_dn.py's --format and tools/select_dn.py's --export and --runtime
    read (a parser built afterwards offers it); a name already taken is a ValueError."""
    if fmt.name in _FORMATS:
        raise ValueError(f"export format {fmt.name!r} is registered already")
    _FORMATS[fmt.name] = fmt
    return fmt


def unregister_format(name: str) -> ExportFormat:
    return _FORMATS.pop(name)


def formats() -> dict[str, ExportFormat]:
    """The registered formats by name, in the order they were registered."""
    return dict(_FORMATS)


def get_format(name: str) -> ExportFormat:
    if name not in _FORMATS:
        raise InvalidInputError(f"unknown format {name!r}; choose one of {', '.join(_FORMATS)}")
    return _FORMATS[name]


def _dynamic_shapes(dynamic_batch: bool, dynamic_size: bool, resolution: int):
    """``torch.export``'s dynamic dimensions of the one input (by position), or None for a static shape."""
    dims = {0: torch.export.Dim("batch", min=1, max=1024)} if dynamic_batch else {}
    if dynamic_size:
        if resolution < MIN_DYNAMIC_SIZE:  # the example traced must lie in the range the file serves
            raise InvalidInputError(f"a file of any height and width serves H, W >= {MIN_DYNAMIC_SIZE} px and is traced "
                                    f"at its resolution: give a resolution >= {MIN_DYNAMIC_SIZE}, not {resolution}")
        dims.update({axis: torch.export.Dim(name, min=MIN_DYNAMIC_SIZE, max=4096)
                     for axis, name in ((2, "height"), (3, "width"))})
    return (dims,) if dims else None


def _example(model: nn.Module, batch: int, resolution: int) -> torch.Tensor:
    device = next(model.parameters()).device
    return torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(0)).to(device)


@torch.no_grad()
def export_onnx(model: nn.Module, path: str, resolution: int = 224, dynamic_batch: bool = True,
                opset: int = ONNX_OPSET, dynamic_size: bool = False, batch: int = 2) -> str:
    """Write ``model`` (eval mode) to ONNX with torch's dynamo exporter (``torch.export`` graph; the
    TorchScript-based exporter is deprecated), input ``images`` (N, 3, H, W), output ``output``; with
    ``dynamic_batch`` N is free (traced at ``batch``, at least 2: torch.export specialises a batch of 1),
    else N is ``batch``; with ``dynamic_size`` H and W are free (else R x R). Needs the ``deploy`` extra
    (onnx, onnxscript)."""
    model = model.eval()
    program = torch.onnx.export(model, (_example(model, batch, resolution),), dynamo=True, opset_version=opset,
                                verbose=False, input_names=["images"], output_names=["output"],
                                dynamic_shapes=_dynamic_shapes(dynamic_batch, dynamic_size, resolution),
                                external_data=False)
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


def check_sizes(resolution: int, dynamic_size: bool) -> list[tuple[int, int]]:
    """The H x W a parity check runs at: the export's R x R, and with ``dynamic_size`` a second size of
    another aspect ratio (not a multiple of 32, as real images after a shortest-edge resize)."""
    second = (resolution + resolution // 4 + 3, resolution + resolution // 2 + 5)
    return [(resolution, resolution)] + ([second] if dynamic_size else [])


def check_batches(static_batch: int | None = None) -> tuple[int, ...]:
    """The batch sizes a parity check runs random images at: 1 and 3 for a file of any batch, else the
    file's own (it takes no other)."""
    return (1, 3) if static_batch is None else (static_batch,)


def _batches_of(images: torch.Tensor, batch: int) -> list[torch.Tensor]:
    """``images`` in batches of exactly ``batch``, the last filled up with images from the start."""
    count = math.ceil(len(images) / batch) * batch
    return list(images[torch.arange(count) % len(images)].split(batch))


@torch.no_grad()
def check_deployed(model: nn.Module, path: str, fmt: str, sizes: list[tuple[int, int]], static_batch: int | None = None,
                   images: torch.Tensor | None = None, tolerance: float = PARITY_TOLERANCE) -> float:
    """The worst ``parity_error`` of the file ``path``, run by format ``fmt``'s load, against ``model`` over random
    batches of each size in
    ``sizes`` and each batch size of ``check_batches(static_batch)``, and over ``images`` (real images) when
    given, whole or, for a file of one batch size, in batches of it; raises ``ParityError`` when it exceeds
    ``tolerance``."""
    run, worst = get_format(fmt).load(path), 0.0
    generator = torch.Generator().manual_seed(0)
    checks = [torch.randn(b, 3, h, w, generator=generator) for h, w in sizes for b in check_batches(static_batch)]
    if images is not None:
        checks += [images] if static_batch is None else _batches_of(images, static_batch)
    for inputs in checks:
        error = parity_error(run(inputs), model(inputs))
        if error > tolerance:
            raise ParityError(f"{path} differs from the PyTorch model on a batch of {tuple(inputs.shape)}: max |diff| "
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


def onnx_outputs(session, inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every output of an ``onnx_session`` for its one input ``inputs``."""
    return tuple(torch.from_numpy(a) for a in session.run(None, {session.get_inputs()[0].name: inputs.cpu().numpy()}))


def run_onnx(path: "str | object", images: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """The first output of ``path`` (a file, or a session of ``onnx_session``) for ``images`` under ONNX Runtime."""
    return onnx_outputs(onnx_session(path, threads) if isinstance(path, str) else path, images)[0]


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
                   dynamic_size: bool = False, batch: int = 2) -> str:
    """Write ``model`` (eval mode) as a ``torch.export`` program (.pt2), torch's successor of TorchScript;
    ``torch.export.load(path).module()`` runs it without this package. Batch and size as ``export_onnx``'s."""
    program = torch.export.export(model.eval(), (_example(model, batch, resolution),),
                                  dynamic_shapes=_dynamic_shapes(dynamic_batch, dynamic_size, resolution))
    torch.export.save(program, path + ".tmp")
    os.replace(path + ".tmp", path)
    return path


def _load_onnx(path: str, device: str = "cpu", threads: int | None = None) -> Runner:
    # one session for every batch; no spinning: ORT's threads spin after a run by default and would steal the
    # cores from whatever runs next (the PyTorch model it is checked against, the next DN timed)
    session = onnx_session(path, threads, spinning=False)
    return lambda images: run_onnx(session, images)


def _load_torchscript(path: str, device: str = "cpu", threads: int | None = None) -> Runner:
    return torch.jit.load(path, map_location=device)


def _load_program(path: str, device: str = "cpu", threads: int | None = None) -> Runner:
    return torch.export.load(path).module().to(device)


def _write_weights(model: nn.Module, path: str, options: ExportOptions) -> str:
    save_dn_file(path, options.dn, model.state_dict(), **options.metadata)
    return path


def _batch(options: ExportOptions) -> dict:
    return {"dynamic_batch": options.dynamic_batch, "dynamic_size": options.dynamic_size, "batch": options.batch}


# the built-in formats, in the order --format lists them; each export looks its function up by name when it runs,
# so that a function replaced in this module (a test's monkeypatch) is the one the table calls
register_format(ExportFormat(
    "onnx", ".onnx", lambda model, path, o: export_onnx(model, path, o.resolution, **_batch(o)), _load_onnx,
    runtime="onnxruntime", devices=("cpu",), requires=require_deploy_extra))
register_format(ExportFormat(
    "torchscript", ".pt", lambda model, path, o: export_torchscript(model, path, o.resolution), _load_torchscript,
    any_shape=True))
register_format(ExportFormat(
    "pt2", ".pt2", lambda model, path, o: export_program(model, path, o.resolution, **_batch(o)), _load_program))
register_format(ExportFormat("state_dict", ".pth", _write_weights, None))
