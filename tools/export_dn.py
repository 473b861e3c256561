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
import argparse
import sys

from dspnet_d2.errors import cli_main
from pretrain.cli_args import add_recalibration_args
from pretrain.commands import EXPORT_FORMATS, export_dn_file


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="pretraining / supervised checkpoint, or an exported DN (export/<dn>.pth)")
    parser.add_argument("--dn", default=None, help="the DN (default: the exported DN's own)")
    parser.add_argument("--format", choices=EXPORT_FORMATS, required=True)
    parser.add_argument("--static-batch", action="store_true", help="ONNX / pt2: batch size 2 only (default: any)")
    parser.add_argument("--dynamic-batch", action="store_true", help=argparse.SUPPRESS)  # the default now
    parser.add_argument("--dynamic-size", action="store_true", help="ONNX / pt2: any height and width "
                        "(default: --resolution x --resolution); checked at two sizes")
    parser.add_argument("--no-classifier", action="store_true", help="the encoder only, pooled features out")
    parser.add_argument("-o", "--output", required=True)
    add_recalibration_args(parser)
    return export_dn_file(parser.parse_args(argv), parser.error)


if __name__ == "__main__":
    sys.exit(cli_main(main))
