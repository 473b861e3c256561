#!/usr/bin/env python
"""Export Mask R-CNN with a DN backbone for deployment, along detectron2's own path (TracingAdapter), and check the
file against the eager model on real images.

The command is ``python -m dspnet_d2.d2.export_d2`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.d2.export_d2 import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
