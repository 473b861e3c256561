"""``python -m pretrain.supervised --config-file configs/supervised/<recipe>.yaml INIT <checkpoint | none> [KEY VALUE ...]``

Slimmable supervised training of every DN of MODEL.DNS (sandwich rule, inplace distillation), then each
DN evaluated on the val split and exported with its classifier. One CPU/GPU process, or one process per GPU
under torchrun (tested on CPU with gloo only); rerunning the same command resumes from the newest checkpoint in
OUTPUT_DIR.
"""
import logging
import os
import sys

from dspnet_d2.errors import MissingFileError, cli_main

from ..engine.recipe import parse_recipe_args
from ..engine.loop import run_training
from .config import load_supervised_cfg
from .trainer import SupervisedTrainer

logger = logging.getLogger("pretrain.supervised")


def main(argv=None) -> int:
    args = parse_recipe_args(argv, "python -m pretrain.supervised", __doc__, "configs/supervised/",
                             "INIT none OUTPUT_DIR out")
    cfg = load_supervised_cfg(args.config_file, args.opts)
    if cfg.INIT.strip().lower() != "none" and not os.path.isfile(cfg.INIT):
        raise MissingFileError(f"INIT {cfg.INIT!r} does not exist (give a checkpoint, an exported DN or none)")
    return run_training(cfg, SupervisedTrainer, lambda trainer: f"slimmable supervised training from {trainer.series}")


if __name__ == "__main__":
    sys.exit(cli_main(main))
