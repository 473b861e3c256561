#!/usr/bin/env python
"""Train or evaluate a detectron2 LazyConfig with a DN backbone (configs/detection/lazy/).

The command is ``python -m dspnet_d2.d2.lazy_train`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.d2.lazy_train import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
