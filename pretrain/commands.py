"""The commands behind tools/export_dn.py, tools/convert_to_d2.py and tools/select_dn.py: one DN of a checkpoint
or exported file, its BN statistics recalibrated on an image folder when it shares the supernet's, written as a
checked deployable file or a detectron2 .pkl; and the DN chosen for this machine, exported the same way.

``args`` is the tool's parsed command line (the options of ``cli_args.add_recalibration_args`` included);
``usage_error`` its ``parser.error``, so an option that does not fit the weights is reported with the usage.
"""
from __future__ import annotations

import argparse

from dspnet_d2.convert import dn_backbone_state, save_d2_pkl, supernet_backbone_state, to_d2_model
from dspnet_d2.deploy import (check_deployed, check_sizes, export_onnx, export_program, export_torchscript,
                              require_deploy_extra)
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.selection import Budget, ExportRequest, Settings, select_dn
from dspnet_d2.weights import read_weights, save_dn_file, static_dn

from .cli_args import (UsageError, check_images_from_args, check_recalibration_args, images_from_args,
                       recalibrate_from_args, recalibration_defaults, report_usage_error)

__all__ = ["EXPORT_FORMATS", "export_dn_file", "convert_to_d2_pkl", "select_and_export_dn"]

EXPORT_FORMATS = ("onnx", "torchscript", "pt2", "state_dict")


def export_dn_file(args: argparse.Namespace, usage_error: UsageError | None = None) -> int:
    """Write DN ``args.dn`` of ``args.source`` as ``args.format`` to ``args.output`` and check the file against
    the PyTorch model (tools/export_dn.py)."""
    if args.static_batch and args.dynamic_batch:
        report_usage_error("--static-batch and --dynamic-batch exclude each other", usage_error)
    source = read_weights(args.source)
    model, dn = source.model(args.dn, classifier=not args.no_classifier)
    check_recalibration_args(args, source.shares_bn, usage_error)
    images = images_from_args(args)
    info = recalibrate_from_args(model, dn, args, images)
    model.eval()
    resolution = args.resolution or dn.info.eval_resolution
    if args.format == "state_dict":
        save_dn_file(args.output, dn, model.state_dict(), bn_recalibration=info, source=args.source)
        print(f"wrote DN {dn} ({sum(p.numel() for p in model.parameters())} parameters) to {args.output}")
        return 0
    dynamic_batch = not args.static_batch
    if args.format == "onnx":
        require_deploy_extra()
        export_onnx(model, args.output, resolution, dynamic_batch=dynamic_batch, dynamic_size=args.dynamic_size)
    elif args.format == "pt2":
        export_program(model, args.output, resolution, dynamic_batch=dynamic_batch, dynamic_size=args.dynamic_size)
    else:  # a trace holds for any batch and size: these networks have no shape-dependent control flow
        export_torchscript(model, args.output, resolution)
    sizes = check_sizes(resolution, args.dynamic_size or args.format == "torchscript")
    batches = (1, 3) if dynamic_batch or args.format == "torchscript" else (2,)
    real = check_images_from_args(images, args, resolution)
    worst = check_deployed(model, args.output, args.format, sizes, batches, images=real)
    size = "any H x W" if args.dynamic_size else f"{resolution} x {resolution}"
    shape = (f"{'any' if dynamic_batch else 2} x 3 x {size}" if args.format != "torchscript"
             else "traced: any batch and size")
    checked = ", ".join(f"{h}x{w}" for h, w in sizes)
    checked += f" and {len(real)} images of {args.data_root}" if real is not None else ""
    print(f"wrote DN {dn} as {args.format} ({shape}) to {args.output}; checked at batches {list(batches)}, sizes "
          f"{checked}: max |{args.format} - PyTorch| {worst:.1e} of the output's scale"
          + (f"; BN recalibrated on {info['images']} images" if info else ""))
    return 0


def convert_to_d2_pkl(args: argparse.Namespace, usage_error: UsageError | None = None) -> int:
    """Write DN ``args.dn`` of ``args.source`` (or, with ``args.supernet``, every DN of a pretraining
    checkpoint) as a detectron2 .pkl to ``args.output`` (tools/convert_to_d2.py)."""
    source = read_weights(args.source, allow_torchvision=True)
    weights, dns = source.weights, source.dns
    if args.supernet:
        if dns is None or len(dns) < 2:
            report_usage_error("--supernet needs a DSPNet pretraining checkpoint (several DNs)", usage_error)
        state, top = supernet_backbone_state(weights, dns)
        save_d2_pkl(args.output, to_d2_model(state), supernet=top)
        print(f"wrote {len(state)} tensors of supernet {top} (DNs {', '.join(map(str, dns))}) to {args.output}")
        return 0
    dn = source.dn(args.dn)
    check_recalibration_args(args, source.shares_bn, usage_error)
    note = ""
    if args.data_root and not args.no_bn_recalibration:
        model = static_dn(weights, dn)
        info = recalibrate_from_args(model, dn, args, images_from_args(args))
        weights = model.state_dict()
        note = f", BN recalibrated on {info['images']} images at {info['resolution']} px (seed {info['seed']})"
    state = dn_backbone_state(weights, dn)
    save_d2_pkl(args.output, to_d2_model(state))
    print(f"wrote {len(state)} tensors of DN {dn} to {args.output}{note}")
    return 0


def select_and_export_dn(sources: list[str], output_dir: str, results: list[str], budget: Budget,
                         settings: Settings, rank_by: str | None = None, remeasure: bool = False,
                         export: str | None = None, export_file: str | None = None, data_root: str | None = None,
                         no_bn_recalibration: bool = False) -> int:
    """``dspnet_d2.selection.select_dn`` with its table printed; with ``export`` (a format), the chosen DN
    written by ``export_dn_file``, whose parity check runs (tools/select_dn.py)."""
    if export is None and (export_file or data_root or no_bn_recalibration):
        raise InvalidInputError("--export-file, --data-root and --no-bn-recalibration go with --export FORMAT")
    request = export and ExportRequest(export, export_file, data_root, no_bn_recalibration)
    selection = select_dn(sources, output_dir, results, rank_by=rank_by, export=request or None, remeasure=remeasure,
                          budget=budget, settings=settings)
    print(open(selection.paths["md"]).read())
    print(selection.summary())
    if request:
        options = request.options(selection.chosen, selection.row(selection.choice.dn)["resolution"], output_dir)
        return export_dn_file(argparse.Namespace(**{**recalibration_defaults(), **options}))
    return 0
