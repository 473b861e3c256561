#!/usr/bin/env python
"""Train / evaluate Mask R-CNN with a DSPNet DN backbone (detectron2's usual flags).

The command is ``python -m dspnet_d2.d2.train_net`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.d2.train_net import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
