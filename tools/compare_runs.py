#!/usr/bin/env python
"""Merge the results of several runs into one table and plot, one line per series (the paper's Fig. A1).

    python tools/compare_runs.py output/supervised_demo_random output/supervised_demo_dspnet -o output/fig_a1

Each argument is the OUTPUT_DIR of ``python -m pretrain.supervised`` or ``python -m pretrain.eval`` (its
results.json); the series names come from the runs (random init, DSPNet init, BYOL init, ...). Writes
results.{md,csv,json} and accuracy.png (top-1 vs FLOPs and vs params) into the output folder.
"""
import argparse
import sys

from dspnet_d2.errors import cli_main
from pretrain.report import compare_runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories holding results.json")
    parser.add_argument("-o", "--output", required=True, help="folder for the merged table and plot")
    parser.add_argument("--title", default="top-1 per DN", help="plot and table title")
    args = parser.parse_args(argv)
    return compare_runs(args.runs, args.output, args.title)


if __name__ == "__main__":
    sys.exit(cli_main(main))
