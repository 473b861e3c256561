#!/usr/bin/env python
"""Print params and FLOPs of every DN of a family (or DN set) as a markdown table and CSV.

The command is ``python -m dspnet_d2.dn_table`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.dn_table import main
from dspnet_d2.errors import cli_main

if __name__ == "__main__":
    sys.exit(cli_main(main))
