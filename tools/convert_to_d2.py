#!/usr/bin/env python
"""Convert DSPNet / BYOL / torchvision weights to a detectron2 .pkl for the DSPNet backbones.

The command is ``python -m dspnet_d2.deploy.convert_to_d2`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.deploy.convert_to_d2 import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
