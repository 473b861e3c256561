#!/usr/bin/env python
"""Merge the results of several runs into one table and plot, one line per series (the paper's Fig. A1).

The command is ``python -m pretrain.eval.compare_runs`` (it also runs from an installed package); --help says more.
"""
import sys

from dspnet_d2.errors import cli_main
from pretrain.eval.compare_runs import main

if __name__ == "__main__":
    sys.exit(cli_main(main))
