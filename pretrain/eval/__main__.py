"""``python -m pretrain.eval --config-file configs/eval/<protocol>.yaml PRETRAINED <ckpt> DNS all [KEY VALUE ...]``

Evaluates every DN of a DSPNet checkpoint (or the given DNs, or BYOL checkpoints) and writes
results.md / results.csv / results.json and accuracy.png into OUTPUT_DIR. Runs under torchrun too;
rerunning the same command skips finished DNs and resumes classifier training.
"""
import argparse
import logging
import os
import sys

from dspnet_d2.errors import MissingFileError, cli_main

from ..engine.distributed import shutdown
from .config import load_eval_cfg
from .runner import Evaluation


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a protocol under configs/eval/")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. PRETRAINED run/ckpt.pth")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config_file):  # else the config loader fails with a bare FileNotFoundError
        raise MissingFileError(f"config file {args.config_file!r} does not exist")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        stream=sys.stdout)
    cfg = load_eval_cfg(args.config_file, args.opts)
    try:
        results = Evaluation(cfg).run()
    finally:
        shutdown()
    for r in results:
        print(f"{r['series']:>12} {r['dn']:>22}  top-1 {r['top1']:6.2f}  top-5 {r['top5']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
