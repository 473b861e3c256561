#!/usr/bin/env python
"""Pick the DN for this machine: every DN measured here with the chosen runtime, joined with the run's accuracies, the
most accurate one within every budget given; optionally exported.

The command is ``python -m dspnet_d2.deploy.select_dn`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.deploy.select_dn import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
