"""``python -m pretrain.eval.compare_runs RUN [RUN ...] -o FOLDER``: several runs' per-DN results as one table
and plot (tools/compare_runs.py)."""
from __future__ import annotations

import argparse
import sys

from dspnet_d2.errors import cli_main

from .report import read_results, write_report


def compare_runs(run_dirs: list[str], output_dir: str, title: str) -> int:
    """The results of several runs as one table and plot in ``output_dir``, printed (tools/compare_runs.py)."""
    results = [row for run in run_dirs for row in read_results(run)]
    paths = write_report(results, output_dir, title)
    print(open(paths["md"]).read())
    print("wrote " + ", ".join(paths.values()))
    return 0


COMMAND_HELP = """Merge the results of several runs into one table and plot, one line per series (the paper's Fig. A1).

    python tools/compare_runs.py output/supervised_demo_random output/supervised_demo_dspnet -o output/fig_a1

Each argument is the OUTPUT_DIR of ``python -m pretrain.supervised`` or ``python -m pretrain.eval`` (its
results.json); the series names come from the runs (random init, DSPNet init, BYOL init, ...). Writes
results.{md,csv,json} and accuracy.png (top-1 vs FLOPs and vs params) into the output folder.
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.eval.compare_runs", description=COMMAND_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories holding results.json")
    parser.add_argument("-o", "--output", required=True, help="folder for the merged table and plot")
    parser.add_argument("--title", default="top-1 per DN", help="plot and table title")
    args = parser.parse_args(argv)
    return compare_runs(args.runs, args.output, args.title)


if __name__ == "__main__":
    sys.exit(cli_main(main))
