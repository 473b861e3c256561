#!/usr/bin/env python
"""Convert DSPNet / BYOL / torchvision weights to a detectron2 .pkl for the DSPNet backbones.

    python tools/convert_to_d2.py output/demo/checkpoint_00000060.pth --dn mbv3_w0.75 -o mbv3_w0.75.pkl
    python tools/convert_to_d2.py output/demo/export/mbv3_w0.75.pth -o mbv3_w0.75.pkl
    python tools/convert_to_d2.py resnet18-f37072fd.pth --dn resnet18 -o resnet18_supervised.pkl
    python tools/convert_to_d2.py output/demo/checkpoint_00000060.pth --supernet -o dspnet_mbv3_all.pkl

With ``--supernet`` the file holds every DN of the run; the backbone slices the selected
``MODEL.DSPNET.DN`` out of it at load time.
"""
from __future__ import annotations

import argparse
import sys

from dspnet_d2.convert import (dn_backbone_state, read_source_weights, save_d2_pkl, supernet_backbone_state,
                               to_d2_model)
from dspnet_d2.dn import parse_dn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="pretraining checkpoint, exported DN (.pth) or torchvision state_dict")
    parser.add_argument("--dn", default=None, help="the DN to convert (default: the exported DN's own)")
    parser.add_argument("--supernet", action="store_true", help="write every DN of a pretraining checkpoint")
    parser.add_argument("-o", "--output", required=True, help="output .pkl")
    args = parser.parse_args(argv)
    weights, dns = read_source_weights(args.source)
    if args.supernet:
        if dns is None or len(dns) < 2:
            parser.error("--supernet needs a DSPNet pretraining checkpoint (several DNs)")
        state, top = supernet_backbone_state(weights, dns)
        save_d2_pkl(args.output, to_d2_model(state), supernet=top)
        print(f"wrote {len(state)} tensors of supernet {top} (DNs {', '.join(map(str, dns))}) to {args.output}")
        return 0
    if args.dn is None:
        if dns is None or len(dns) != 1:
            parser.error("--dn is needed for this source" + (f" (its DNs: {', '.join(map(str, dns))})" if dns else ""))
        dn = dns[0]
    else:
        dn = parse_dn(args.dn)
        if dns is not None and not any(dn.fits_in(d) for d in dns):
            parser.error(f"DN {dn} is not in {args.source} (its DNs: {', '.join(map(str, dns))})")
    state = dn_backbone_state(weights, dn)
    save_d2_pkl(args.output, to_d2_model(state))
    print(f"wrote {len(state)} tensors of DN {dn} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
