#!/usr/bin/env python
r"""Convert DSPNet / BYOL / torchvision weights to a detectron2 .pkl for the DSPNet backbones.

    python tools/convert_to_d2.py output/demo/checkpoint_00000280.pth --dn mbv3_w0.75 --data-root datasets/demo \
        --resolution 32 -o mbv3_w0.75.pkl
    python tools/convert_to_d2.py output/demo/export/mbv3_w0.75.pth -o mbv3_w0.75.pkl
    python tools/convert_to_d2.py resnet18-f37072fd.pth --dn resnet18 -o resnet18_supervised.pkl
    python tools/convert_to_d2.py output/demo/checkpoint_00000280.pth --supernet -o dspnet_mbv3_all.pkl

With ``--supernet`` the file holds every DN of the run; the backbone slices the selected
``MODEL.DSPNET.DN`` out of it at load time, with the BN statistics that all DNs share (detection
fine-tuning with SyncBN re-estimates them).

Every DN of a pretraining checkpoint shares the supernet's BN buffers, so a per-DN .pkl from one gets
its own statistics, recalibrated on a seeded sample of training images (``--data-root``), or states
that it keeps the shared ones (``--no-bn-recalibration``). Exported DNs carry their own already.
"""
from __future__ import annotations

import argparse
import sys

from dspnet_d2.convert import dn_backbone_state, save_d2_pkl, supernet_backbone_state, to_d2_model
from dspnet_d2.errors import cli_main
from dspnet_d2.weights import read_weights, static_dn
from pretrain.recalibration import add_recalibration_args, check_recalibration_args, recalibrate_from_args


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="pretraining checkpoint, exported DN (.pth) or torchvision state_dict")
    parser.add_argument("--dn", default=None, help="the DN to convert (default: the exported DN's own)")
    parser.add_argument("--supernet", action="store_true", help="write every DN of a pretraining checkpoint")
    parser.add_argument("-o", "--output", required=True, help="output .pkl")
    add_recalibration_args(parser)
    args = parser.parse_args(argv)
    source = read_weights(args.source, allow_torchvision=True)
    weights, dns = source.weights, source.dns
    if args.supernet:
        if dns is None or len(dns) < 2:
            parser.error("--supernet needs a DSPNet pretraining checkpoint (several DNs)")
        state, top = supernet_backbone_state(weights, dns)
        save_d2_pkl(args.output, to_d2_model(state), supernet=top)
        print(f"wrote {len(state)} tensors of supernet {top} (DNs {', '.join(map(str, dns))}) to {args.output}")
        return 0
    dn = source.dn(args.dn)
    check_recalibration_args(parser, args, shares_bn=source.shares_bn)
    note = ""
    if args.data_root and not args.no_bn_recalibration:
        model = static_dn(weights, dn)
        info = recalibrate_from_args(model, dn, args)
        weights = model.state_dict()
        note = f", BN recalibrated on {info['images']} images at {info['resolution']} px (seed {info['seed']})"
    state = dn_backbone_state(weights, dn)
    save_d2_pkl(args.output, to_d2_model(state))
    print(f"wrote {len(state)} tensors of DN {dn} to {args.output}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
