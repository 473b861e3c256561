"""Print params and FLOPs of every DN of a family (or DN set) as a markdown table and CSV.

    python tools/dn_table.py --family mbv3            # the paper's 5 MobileNetV3 DNs at 224 px
    python tools/dn_table.py --family resnet_s9 --csv resnet_dns.csv
"""
from __future__ import annotations

import argparse
import csv
import io
import sys

from .complexity import dn_complexity
from .dn import DN_SETS, DNSpec, dn_set
from .errors import cli_main

__all__ = ["dn_rows", "to_markdown", "to_csv", "print_dn_table", "main"]

FIELDS = ("dn", "resolution", "params", "flops")


def dn_rows(dns: tuple[DNSpec, ...], resolution: int | None = None, num_classes: int | None = None) -> list[dict]:
    return [dn_complexity(dn, resolution, num_classes) for dn in dns]


def to_markdown(rows: list[dict]) -> str:
    lines = ["| DN | resolution | params (M) | FLOPs (M) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['dn']} | {r['resolution']} | {r['params'] / 1e6:.2f} | {r['flops'] / 1e6:.1f} |" for r in rows]
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def print_dn_table(dns: tuple[DNSpec, ...], resolution: int | None = None, num_classes: int | None = None,
                   csv_path: str | None = None) -> int:
    """Print every DN of ``dns`` as markdown and CSV; the CSV also to ``csv_path`` when given."""
    rows = dn_rows(dns, resolution, num_classes)
    print(to_markdown(rows))
    print()
    text = to_csv(rows)
    print(text, end="")
    if csv_path:
        with open(csv_path, "w") as f:
            f.write(text)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspnet_d2.dn_table", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="mbv3", help=f"a DN set or family: {sorted(DN_SETS)}, or one DN")
    parser.add_argument("--resolution", type=int, default=None,
                        help="input size (default: the family's evaluation resolution, 224)")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="count a classifier too (1000 matches torchvision's published sizes)")
    parser.add_argument("--csv", default=None, help="also write the CSV to this file")
    args = parser.parse_args(argv)
    return print_dn_table(dn_set(args.family), args.resolution, args.num_classes, args.csv)


if __name__ == "__main__":
    sys.exit(cli_main(main))
