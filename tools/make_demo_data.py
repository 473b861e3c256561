#!/usr/bin/env python
"""Generate the embedded synthetic "shapes" demo data (deterministic, nothing is downloaded).

The command is ``python -m dspnet_d2.demo.make_demo_data`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.demo.make_demo_data import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
