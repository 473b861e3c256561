#!/usr/bin/env python
"""From images to an AP table in one command: ``python -m pretrain.pipeline`` (pretrain/pipeline/).

    python tools/pipeline.py --config-file configs/pipeline/demo.yaml [KEY VALUE ...]
"""
import sys

from dspnet_d2.errors import cli_main
from pretrain.pipeline import main

if __name__ == "__main__":
    sys.exit(cli_main(main))
