"""``python -m pretrain --config-file configs/pretrain/<recipe>.yaml [KEY VALUE ...]``

Runs on one CPU/GPU process, or on many GPUs/nodes under torchrun; restarting the same command
resumes from the newest checkpoint in OUTPUT_DIR.
"""
import argparse
import os
import sys

from dspnet_d2.errors import MissingFileError, cli_main

from .config import load_cfg
from .engine import main as train


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pretrain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a recipe under configs/pretrain/")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. SOLVER.EPOCHS 100")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isfile(args.config_file):  # else the config loader fails with a bare FileNotFoundError
        raise MissingFileError(f"config file {args.config_file!r} does not exist")
    return train(load_cfg(args.config_file, args.opts))


if __name__ == "__main__":
    sys.exit(cli_main(main))
