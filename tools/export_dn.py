#!/usr/bin/env python
"""Write one DN as a deployable file: ONNX, TorchScript, a torch.export program (.pt2) or a torchvision
state_dict.

    python tools/export_dn.py output/demo/export/mbv3_w0.75.pth --format onnx --resolution 32 -o mbv3_w0.75.onnx
    python tools/export_dn.py output/dspnet_mbv3_imagenet/checkpoint_XXXXXXXX.pth --dn mbv3_w0.5 \\
        --data-root /path/to/imagenet --format torchscript -o mbv3_w0.5.pt
    python tools/export_dn.py output/supervised/dspnet/export/mbv3_w1.0.pth --format onnx --dynamic-batch -o m.onnx

The static DN (torchvision's network, with the classifier when the file has one), in eval mode. A DN of
a supernet checkpoint gets BN statistics of its own, recalibrated on a seeded sample of --data-root
(or keeps the shared ones with --no-bn-recalibration); an exported DN carries its own already. The
written file is checked before the command ends: ONNX under ONNX Runtime, TorchScript reloaded, both
against the PyTorch model on random images (atol 1e-4 + rtol 1e-4). ONNX needs the deploy extra:
pip install -e ".[deploy]".
"""
from __future__ import annotations

import argparse
import sys

import torch

from dspnet_d2.errors import cli_main
from dspnet_d2.export import (export_onnx, export_program, export_torchscript, load_dn_model, onnx_session,
                              require_deploy_extra, run_onnx)
from dspnet_d2.weights import PRETRAIN_FORMAT, SUPERVISED_FORMAT, read_source, save_dn_file
from pretrain.recalibration import add_recalibration_args, check_recalibration_args, recalibrate_from_args

FORMATS = ("onnx", "torchscript", "pt2", "state_dict")
ATOL = RTOL = 1e-4


def check_file(model, path: str, fmt: str, resolution: int, dynamic_batch: bool) -> float:
    """Largest |file - PyTorch| over random batches (1 and 3 images with a dynamic batch, else 2)."""
    worst = 0.0
    if fmt == "onnx":  # each file loaded once for all the batches
        session = onnx_session(path)
        run = lambda x: run_onnx(session, x)  # noqa: E731
    else:
        run = torch.jit.load(path) if fmt == "torchscript" else torch.export.load(path).module()
    for batch in (1, 3) if dynamic_batch or fmt == "torchscript" else (2,):
        images = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(images)
            got = run(images)
        if got.shape != expected.shape or not torch.allclose(got, expected, atol=ATOL, rtol=RTOL):
            raise RuntimeError(f"{path} differs from the PyTorch model: max |diff| "
                               f"{(got - expected).abs().max().item() if got.shape == expected.shape else 'shape'}")
        worst = max(worst, (got - expected).abs().max().item())
    return worst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="pretraining / supervised checkpoint, or an exported DN (export/<dn>.pth)")
    parser.add_argument("--dn", default=None, help="the DN (default: the exported DN's own)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--dynamic-batch", action="store_true", help="ONNX / pt2: any batch size (default: 2)")
    parser.add_argument("--no-classifier", action="store_true", help="the encoder only, pooled features out")
    parser.add_argument("-o", "--output", required=True)
    add_recalibration_args(parser)
    args = parser.parse_args(argv)
    _, _, kind = read_source(args.source, allow_torchvision=False)
    model, dn = load_dn_model(args.source, args.dn, classifier=not args.no_classifier)
    check_recalibration_args(parser, args, shares_bn=kind in (PRETRAIN_FORMAT, SUPERVISED_FORMAT))
    info = recalibrate_from_args(model, dn, args)
    model.eval()
    resolution = args.resolution or dn.info.eval_resolution
    if args.format == "state_dict":
        save_dn_file(args.output, dn, model.state_dict(), bn_recalibration=info, source=args.source)
        print(f"wrote DN {dn} ({sum(p.numel() for p in model.parameters())} parameters) to {args.output}")
        return 0
    if args.format == "onnx":
        require_deploy_extra()
        export_onnx(model, args.output, resolution, dynamic_batch=args.dynamic_batch)
    elif args.format == "pt2":
        export_program(model, args.output, resolution, dynamic_batch=args.dynamic_batch)
    else:
        export_torchscript(model, args.output, resolution)
    worst = check_file(model, args.output, args.format, resolution, args.dynamic_batch)
    print(f"wrote DN {dn} as {args.format} ({resolution} px{', dynamic batch' if args.dynamic_batch else ''}) to "
          f"{args.output}; max |{args.format} - PyTorch| on random images {worst:.2e}"
          + (f"; BN recalibrated on {info['images']} images" if info else ""))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
