#!/usr/bin/env python
"""Write one DN as a deployable file: ONNX, TorchScript, a torch.export program (.pt2) or a torchvision
state_dict.

    python tools/export_dn.py output/demo/export/mbv3_w0.75.pth --format onnx --resolution 32 -o mbv3_w0.75.onnx
    python tools/export_dn.py output/dspnet_mbv3_imagenet/checkpoint_XXXXXXXX.pth --dn mbv3_w0.5 \\
        --data-root /path/to/imagenet --format torchscript -o mbv3_w0.5.pt
    python tools/export_dn.py output/supervised/dspnet/export/mbv3_w1.0.pth --format onnx --dynamic-size -o m.onnx

The static DN (torchvision's network, with the classifier when the file has one), in eval mode. A DN of
a supernet checkpoint gets BN statistics of its own, recalibrated on a seeded sample of --data-root
(or keeps the shared ones with --no-bn-recalibration); an exported DN carries its own already.
ONNX and .pt2 files take any batch size (``--static-batch``: 2 only) and, with ``--dynamic-size``, any
height and width (else R x R). The written file is checked before the command ends (ONNX under ONNX
Runtime, TorchScript and .pt2 reloaded) against the PyTorch model on random images at two batch sizes
(and at two sizes with --dynamic-size), and on real images of --data-root when given: per image, the
largest difference over the output's scale must stay within 1e-4 (a trained DN's outputs reach ~1e4, and
float32 error grows with them). ONNX needs the deploy extra: pip install -e ".[deploy]".
"""
from __future__ import annotations

import argparse
import sys


from dspnet_d2.errors import cli_main
from dspnet_d2.deploy import (check_deployed, check_sizes, export_onnx, export_program, export_torchscript,
                              require_deploy_extra)
from dspnet_d2.weights import read_weights, save_dn_file
from pretrain.recalibration import (add_recalibration_args, check_recalibration_args, check_images_from_args,
                                    recalibrate_from_args)

FORMATS = ("onnx", "torchscript", "pt2", "state_dict")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="pretraining / supervised checkpoint, or an exported DN (export/<dn>.pth)")
    parser.add_argument("--dn", default=None, help="the DN (default: the exported DN's own)")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--static-batch", action="store_true", help="ONNX / pt2: batch size 2 only (default: any)")
    parser.add_argument("--dynamic-batch", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--dynamic-size", action="store_true", help="ONNX / pt2: any height and width "
                        "(default: --resolution x --resolution); checked at two sizes")
    parser.add_argument("--no-classifier", action="store_true", help="the encoder only, pooled features out")
    parser.add_argument("-o", "--output", required=True)
    add_recalibration_args(parser)
    args = parser.parse_args(argv)
    if args.static_batch and args.dynamic_batch:
        parser.error("--static-batch and --dynamic-batch exclude each other")
    source = read_weights(args.source)
    model, dn = source.model(args.dn, classifier=not args.no_classifier)
    check_recalibration_args(parser, args, shares_bn=source.shares_bn)
    info = recalibrate_from_args(model, dn, args)
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
    real = check_images_from_args(dn, args, resolution)
    worst = check_deployed(model, args.output, args.format, sizes, batches, images=real)
    shape = (f"{'any' if dynamic_batch else 2} x 3 x " + ("any H x W" if args.dynamic_size else f"{resolution} x {resolution}")
             if args.format != "torchscript" else "traced: any batch and size")
    checked = ", ".join(f"{h}x{w}" for h, w in sizes) + (f" and {len(real)} images of {args.data_root}" if real is not None else "")
    print(f"wrote DN {dn} as {args.format} ({shape}) to {args.output}; checked at batches {list(batches)}, sizes "
          f"{checked}: max |{args.format} - PyTorch| {worst:.1e} of the output's scale"
          + (f"; BN recalibrated on {info['images']} images" if info else ""))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
