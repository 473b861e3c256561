#!/usr/bin/env python
"""Draw Mask R-CNN predictions of finished runs side by side (detectron2's Visualizer), as one PNG.

The command is ``python -m dspnet_d2.d2.draw_predictions`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.d2.draw_predictions import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
