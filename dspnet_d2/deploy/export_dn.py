"""Write one DN as a deployable file: ONNX, TorchScript, a torch.export program (.pt2) or a torchvision
state_dict.

    python tools/export_dn.py output/demo/export/mbv3_w0.75.pth --format onnx --resolution 32 -o mbv3_w0.75.onnx
    python tools/export_dn.py output/dspnet_mbv3_imagenet/checkpoint_XXXXXXXX.pth --dn mbv3_w0.5 \\
        --data-root /path/to/imagenet --format torchscript -o mbv3_w0.5.pt
    python tools/export_dn.py output/supervised/dspnet/export/mbv3_w1.0.pth --format onnx --dynamic-size -o m.onnx

The static DN (torchvision's network, with the classifier when the file has one), in eval mode. A DN of
a supernet checkpoint gets BN statistics of its own, recalibrated on a seeded sample of --data-root
(or keeps the shared ones with --no-bn-recalibration); an exported DN carries its own already.
ONNX and .pt2 files take any batch size (``--static-batch N``: N only; ``--static-batch``: 2) and, with
``--dynamic-size``, any height and width (else R x R). The written file is checked before the command ends
(ONNX under ONNX Runtime, TorchScript and .pt2 reloaded) against the PyTorch model on random images at
batches 1 and 3 (a static file: its own batch), at two sizes with --dynamic-size, and on 8 real images of
--data-root when given (a static file: in batches of its own): per image, the largest difference over the
output's scale must stay within 1e-4 (a trained DN's outputs reach ~1e4, and float32 error grows with them).
The file takes the name -o only once it has passed; one that fails is removed and the command ends with an
error. ONNX needs the deploy extra: pip install -e ".[deploy]".
"""
import argparse
import sys

from ..dn import parse_dn
from ..errors import cli_main
from ..recalibration import RecalibrationOptions, add_recalibration_args
from .commands import export_dn_file
from .formats import formats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspnet_d2.deploy.export_dn", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="pretraining / supervised checkpoint, or an exported DN (export/<dn>.pth)")
    parser.add_argument("--dn", default=None, help="the DN (default: the exported DN's own)")
    # read now: a format registered before main() runs is offered
    parser.add_argument("--format", choices=list(formats()), required=True)
    parser.add_argument("--static-batch", type=int, nargs="?", const=2, default=None, metavar="N",
                        help="ONNX / pt2: batch size N only (no N: 2; default: any batch)")
    parser.add_argument("--dynamic-batch", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--dynamic-size", action="store_true", help="ONNX / pt2: any height and width "
                        "(default: --resolution x --resolution); checked at two sizes")
    parser.add_argument("--no-classifier", action="store_true", help="the encoder only, pooled features out")
    parser.add_argument("-o", "--output", required=True)
    add_recalibration_args(parser)
    args = parser.parse_args(argv)
    if args.static_batch is not None and args.dynamic_batch:
        parser.error("--static-batch and --dynamic-batch exclude each other")
    return export_dn_file(args.source, args.output, args.format, dn=args.dn and parse_dn(args.dn), static_batch=args.static_batch,
                          dynamic_size=args.dynamic_size, classifier=not args.no_classifier,
                          recalibration=RecalibrationOptions.from_args(args), usage_error=parser.error)


if __name__ == "__main__":
    sys.exit(cli_main(main))
