"""The commands behind tools/export_dn.py, tools/convert_to_d2.py and tools/select_dn.py: one DN of a checkpoint
or exported file, its BN statistics recalibrated on an image folder when it shares the supernet's, written as a
checked deployable file or a detectron2 .pkl; and the DN chosen for this machine, exported the same way.

``usage_error`` is the tool's ``parser.error``, so an option that does not fit the weights is reported with the
usage.
"""
from __future__ import annotations

import os

from ..dn import DNSpec
from ..errors import InvalidInputError
from ..recalibration import (
    RecalibrationOptions,
    UsageError,
    check_images_from_args,
    check_recalibration_args,
    images_from_args,
    recalibrate_from_args,
    report_usage_error,
)
from ..weights import read_weights, static_dn
from .convert import dn_backbone_state, save_d2_pkl, supernet_backbone_state, to_d2_model
from .formats import ExportOptions, ParityError, check_batches, check_deployed, check_sizes, get_format
from .selection import Budget, ExportRequest, Settings, select_dn

__all__ = ["export_dn_file", "convert_to_d2_pkl", "select_and_export_dn"]


def export_dn_file(source: str, output: str, fmt: str, dn: DNSpec | None = None, static_batch: int | None = None,
                   dynamic_size: bool = False, classifier: bool = True,
                   recalibration: RecalibrationOptions = RecalibrationOptions(),
                   usage_error: UsageError | None = None) -> int:
    """Write DN ``dn`` of ``source`` as format ``fmt`` (a name of ``formats()``) to ``output`` (tools/export_dn.py):
    a file of any batch, or of ``static_batch`` only, where the format can be written either way (ONNX, pt2;
    TorchScript: traced, any batch and size). A file that runs is written under a temporary name beside ``output``
    and takes that name only once its check against the PyTorch model has passed; a file that fails it is removed
    (an InvalidInputError). ``usage_error``: as ``check_recalibration_args``."""
    form = get_format(fmt)
    form.requires()
    if static_batch is not None and static_batch < 1:
        report_usage_error(f"--static-batch takes a batch size of 1 or more, not {static_batch}", usage_error)
    if static_batch is None and not form.dynamic_batch:
        report_usage_error(f"a {fmt} file takes one batch size: give --static-batch N", usage_error)
    if dynamic_size and not form.dynamic_size:
        report_usage_error(f"a {fmt} file takes one height and width: drop --dynamic-size", usage_error)
    weights = read_weights(source)
    model, dn = weights.model(dn, classifier=classifier)
    check_recalibration_args(recalibration, weights.shares_bn, usage_error)
    images = images_from_args(recalibration)
    info = recalibrate_from_args(model, dn, recalibration, images)
    model.eval()
    resolution = recalibration.resolution or dn.info.eval_resolution
    if form.load is None:  # a file of weights: nothing to run it with
        metadata = {"bn_recalibration": info, "source": source}
        form.export(model, output, ExportOptions(resolution, dn=dn, metadata=metadata))
        print(f"wrote DN {dn} ({sum(p.numel() for p in model.parameters())} parameters) to {output}")
        return 0
    # a trace holds for any batch and size: these networks have no shape-dependent control flow
    static_batch = None if form.any_shape else static_batch
    options = ExportOptions(resolution, static_batch is None, static_batch or 2, dynamic_size)
    root, suffix = os.path.splitext(output)
    unchecked = f"{root}.unchecked{suffix}"
    try:
        form.export(model, unchecked, options)
        sizes = check_sizes(resolution, dynamic_size or form.any_shape)
        real = check_images_from_args(images, recalibration, resolution)
        worst = check_deployed(model, unchecked, fmt, sizes, static_batch, images=real)
    except BaseException as err:  # no file under either name that has not passed its check
        if os.path.exists(unchecked):
            os.remove(unchecked)
        if isinstance(err, ParityError):
            raise InvalidInputError(f"{output} not written: {err}") from None
        raise
    os.replace(unchecked, output)
    size = "any H x W" if dynamic_size else f"{resolution} x {resolution}"
    shape = "traced: any batch and size" if form.any_shape else f"{static_batch or 'any'} x 3 x {size}"
    checked = ", ".join(f"{h}x{w}" for h, w in sizes)
    checked += f" and {len(real)} images of {recalibration.data_root}" if real is not None else ""
    print(f"wrote DN {dn} as {fmt} ({shape}) to {output}; checked at batches {list(check_batches(static_batch))}, "
          f"sizes {checked}: max |{fmt} - PyTorch| {worst:.1e} of the output's scale"
          + (f"; BN recalibrated on {info['images']} images" if info else ""))
    return 0


def convert_to_d2_pkl(source: str, output: str, dn: DNSpec | None = None, supernet: bool = False,
                      recalibration: RecalibrationOptions = RecalibrationOptions(),
                      usage_error: UsageError | None = None) -> int:
    """Write DN ``dn`` of ``source`` (or, with ``supernet``, every DN of a pretraining checkpoint) as a detectron2
    .pkl to ``output`` (tools/convert_to_d2.py); a DN of a supernet checkpoint gets its BN statistics as
    ``recalibration`` says. ``usage_error``: as ``export_dn_file``'s."""
    read = read_weights(source, allow_torchvision=True)
    weights, dns = read.weights, read.dns
    if supernet:
        if dns is None or len(dns) < 2:
            report_usage_error("--supernet needs a DSPNet pretraining checkpoint (several DNs)", usage_error)
        state, top = supernet_backbone_state(weights, dns)
        save_d2_pkl(output, to_d2_model(state), supernet=top)
        print(f"wrote {len(state)} tensors of supernet {top} (DNs {', '.join(map(str, dns))}) to {output}")
        return 0
    spec = read.dn(dn)
    check_recalibration_args(recalibration, read.shares_bn, usage_error)
    note = ""
    if recalibration.data_root and not recalibration.no_bn_recalibration:
        model = static_dn(weights, spec)
        info = recalibrate_from_args(model, spec, recalibration, images_from_args(recalibration))
        weights = model.state_dict()
        note = f", BN recalibrated on {info['images']} images at {info['resolution']} px (seed {info['seed']})"
    state = dn_backbone_state(weights, spec)
    save_d2_pkl(output, to_d2_model(state))
    print(f"wrote {len(state)} tensors of DN {spec} to {output}{note}")
    return 0


def select_and_export_dn(sources: list[str], output_dir: str, results: list[str], budget: Budget,
                         settings: Settings, rank_by: str | None = None, remeasure: bool = False,
                         export: str | None = None, export_file: str | None = None, data_root: str | None = None,
                         no_bn_recalibration: bool = False) -> int:
    """``dspnet_d2.deploy.selection.select_dn`` with its table printed; with ``export`` (a format), the chosen DN
    written by ``export_dn_file``, whose parity check runs (tools/select_dn.py)."""
    if export is None and (export_file or data_root or no_bn_recalibration):
        raise InvalidInputError("--export-file, --data-root and --no-bn-recalibration go with --export FORMAT")
    request = export and ExportRequest(export, export_file, data_root, no_bn_recalibration)
    selection = select_dn(sources, output_dir, results, rank_by=rank_by, export=request or None, remeasure=remeasure,
                          budget=budget, settings=settings)
    print(open(selection.paths["md"]).read())
    print(selection.summary())
    if request:
        dn = selection.choice.dn  # exported at the resolution it was measured and ranked at
        recalibration = RecalibrationOptions(data_root=data_root, no_bn_recalibration=no_bn_recalibration,
                                             resolution=selection.row(dn)["resolution"])
        return export_dn_file(selection.chosen.path, request.output(dn, output_dir), request.format,
                              dn=selection.chosen.dn, recalibration=recalibration)
    return 0
