#!/usr/bin/env python
"""Collect Mask R-CNN runs into the AP^bb / AP^mk table (markdown + CSV) and a plot of AP vs FLOPs.

    python tools/report.py DSPNet=output/detection/dspnet_* BYOL=output/detection/byol_* -o report/
    python tools/report.py output/detection/demo

Each argument is a run directory (tools/train_net.py's OUTPUT_DIR), optionally prefixed by a series
name. A run's metrics come from final_results.json, else from the last evaluation in metrics.json;
runs without any are listed as missing, never dropped silently.
"""
import argparse
import sys

from dspnet_d2.detection_report import detection_report
from dspnet_d2.errors import cli_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="[SERIES=]run directory")
    parser.add_argument("-o", "--output", default="report", help="folder for detection.md/.csv/.png")
    args = parser.parse_args(argv)
    return detection_report(args.runs, args.output)


if __name__ == "__main__":
    sys.exit(cli_main(main))
