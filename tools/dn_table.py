#!/usr/bin/env python
"""Print params and FLOPs of every DN of a family (or DN set) as a markdown table and CSV.

    python tools/dn_table.py --family mbv3            # the paper's 5 MobileNetV3 DNs at 224 px
    python tools/dn_table.py --family resnet_s9 --csv resnet_dns.csv
"""
import argparse
import sys

from dspnet_d2.complexity import print_dn_table
from dspnet_d2.dn import DN_SETS
from dspnet_d2.errors import cli_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="mbv3", help=f"a DN set or family: {sorted(DN_SETS)}, or one DN")
    parser.add_argument("--resolution", type=int, default=None,
                        help="input size (default: the family's evaluation resolution, 224)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="count a classifier too (1000 matches torchvision's published sizes)")
    parser.add_argument("--csv", default=None, help="also write the CSV to this file")
    args = parser.parse_args(argv)
    return print_dn_table(args.family, args.resolution, args.num_classes, args.csv)


if __name__ == "__main__":
    sys.exit(cli_main(main))
