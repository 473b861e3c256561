#!/usr/bin/env python
"""Every DN of a set as Mask R-CNN (the paper's detection table), then the AP^bb / AP^mk table and plot.

The command is ``python -m pretrain.pipeline.detection_sweep`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.errors import cli_main
from pretrain.pipeline.detection_sweep import main

if __name__ == "__main__":
    sys.exit(cli_main(main))
