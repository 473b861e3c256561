#!/usr/bin/env python
"""Merge the results of several runs into one table and plot, one line per series (the paper's Fig. A1).

    python tools/compare_runs.py output/supervised_demo_random output/supervised_demo_dspnet -o output/fig_a1

Each argument is the OUTPUT_DIR of ``python -m pretrain.supervised`` or ``python -m pretrain.eval`` (its
results.json); the series names come from the runs (random init, DSPNet init, BYOL init, ...). Writes
results.{md,csv,json} and accuracy.png (top-1 vs FLOPs and vs params) into the output folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from dspnet_d2.errors import InvalidInputError, MissingFileError, cli_main
from pretrain.report import write_report


def read_results(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        raise MissingFileError(f"{run_dir} has no results.json (not a finished run)")
    try:
        with open(path) as f:
            return json.load(f)["results"]
    except (ValueError, KeyError) as err:
        raise InvalidInputError(f"{path} is not a results file: {err}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories holding results.json")
    parser.add_argument("-o", "--output", required=True, help="folder for the merged table and plot")
    parser.add_argument("--title", default="top-1 per DN", help="plot and table title")
    args = parser.parse_args(argv)
    results = [row for run in args.runs for row in read_results(run)]
    paths = write_report(results, args.output, args.title)
    print(open(paths["md"]).read())
    print("wrote " + ", ".join(paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
