#!/usr/bin/env python
"""Collect Mask R-CNN runs into the AP^bb / AP^mk table (markdown + CSV) and a plot of AP vs FLOPs.

The command is ``python -m dspnet_d2.detection_report`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.detection_report import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
