r"""Convert DSPNet / BYOL / torchvision weights to a detectron2 .pkl for the DSPNet backbones.

    python tools/convert_to_d2.py output/demo/checkpoint_00000280.pth --dn mbv3_w0.75 --data-root datasets/demo \
        --resolution 32 -o mbv3_w0.75.pkl
    python tools/convert_to_d2.py output/demo/export/mbv3_w0.75.pth -o mbv3_w0.75.pkl
    python tools/convert_to_d2.py resnet18-f37072fd.pth --dn resnet18 -o resnet18_supervised.pkl
    python tools/convert_to_d2.py output/demo/checkpoint_00000280.pth --supernet -o dspnet_mbv3_all.pkl

With ``--supernet`` the file holds every DN of the run; ``DSPNetCheckpointer`` (``tools/train_net.py``'s) slices
the selected ``MODEL.DSPNET.DN`` out of it at load time, with the BN statistics that all DNs share (detection
fine-tuning with SyncBN re-estimates them). detectron2's own ``DetectionCheckpointer`` refuses the file with
an error saying so, rather than loading a smaller DN as mostly random weights.

Every DN of a pretraining checkpoint shares the supernet's BN buffers, so a per-DN .pkl from one gets
its own statistics, recalibrated on a seeded sample of training images (``--data-root``), or states
that it keeps the shared ones (``--no-bn-recalibration``). Exported DNs carry their own already.
"""
import argparse
import sys

from ..dn import parse_dn
from ..errors import cli_main
from ..recalibration import RecalibrationOptions, add_recalibration_args
from .commands import convert_to_d2_pkl


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspnet_d2.deploy.convert_to_d2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="pretraining checkpoint, exported DN (.pth) or torchvision state_dict")
    parser.add_argument("--dn", default=None, help="the DN to convert (default: the exported DN's own)")
    parser.add_argument("--supernet", action="store_true", help="write every DN of a pretraining checkpoint")
    parser.add_argument("-o", "--output", required=True, help="output .pkl")
    add_recalibration_args(parser)
    args = parser.parse_args(argv)
    return convert_to_d2_pkl(args.source, args.output, dn=args.dn and parse_dn(args.dn), supernet=args.supernet,
                             recalibration=RecalibrationOptions.from_args(args), usage_error=parser.error)


if __name__ == "__main__":
    sys.exit(cli_main(main))
