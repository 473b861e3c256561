"""Parameters and FLOPs of a DN (fvcore's counting: one fused multiply-add = one FLOP), and the table of a
DN set (tools/dn_table.py)."""
from __future__ import annotations

import argparse
import csv
import io
import sys

import torch
from torch import nn

from .dn import DN_SETS, DNSpec, dn_set, parse_dn
from .errors import cli_main
from .families import build_static_dn

__all__ = ["count_params", "count_flops", "dn_complexity", "dn_rows", "to_markdown", "to_csv", "print_dn_table"]

FIELDS = ("dn", "resolution", "params", "flops")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, resolution: int) -> int:
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, torch.zeros(1, 3, resolution, resolution))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())
    finally:
        model.train(was_training)


def dn_complexity(dn: "str | DNSpec", resolution: int | None = None, num_classes: int | None = None) -> dict:
    """``{"dn", "resolution", "params", "flops"}`` of the static network of ``dn``.

    ``num_classes=None`` counts the feature extractor only (what is transferred); ``1000`` adds the
    ImageNet classifier, matching torchvision's published model sizes.
    """
    dn = parse_dn(dn)
    resolution = resolution or dn.info.eval_resolution
    model = build_static_dn(dn, num_classes=num_classes)
    return {"dn": str(dn), "resolution": resolution, "params": count_params(model),
            "flops": count_flops(model, resolution)}


def dn_rows(dns, resolution=None, num_classes=None) -> list[dict]:
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


def print_dn_table(family: str, resolution: int | None = None, num_classes: int | None = None,
                   csv_path: str | None = None) -> int:
    """Print every DN of ``family`` (a DN set, a family or one DN) as markdown and CSV; the CSV also to
    ``csv_path`` when given."""
    rows = dn_rows(dn_set(family), resolution, num_classes)
    print(to_markdown(rows))
    print()
    text = to_csv(rows)
    print(text, end="")
    if csv_path:
        with open(csv_path, "w") as f:
            f.write(text)
    return 0


COMMAND_HELP = """Print params and FLOPs of every DN of a family (or DN set) as a markdown table and CSV.

    python tools/dn_table.py --family mbv3            # the paper's 5 MobileNetV3 DNs at 224 px
    python tools/dn_table.py --family resnet_s9 --csv resnet_dns.csv
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspnet_d2.complexity", description=COMMAND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
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
