"""``python -m pretrain [--import FILE_OR_MODULE ...] --config-file configs/pretrain/<recipe>.yaml [KEY VALUE ...]``

Runs on one CPU/GPU process, or one process per GPU under torchrun or tools/submit.py; restarting the same
command resumes from the newest checkpoint in OUTPUT_DIR. Tested on CPU with gloo (1 and 2 processes, two torchrun
agents); GPUs, NCCL and real clusters are untested (docs/AT_SCALE.md).

A method of your own (a ``pretrain.methods.Method`` subclass decorated with ``register_method``) joins with
``--import my_method.py`` (a file or a module name); its recipe then sets ``MODEL.METHOD`` to its name.
"""
import sys

from dspnet_d2.errors import cli_main

from .engine.config import load_cfg
from .engine.recipe import parse_recipe_args
from .engine.trainer import main as train


def main(argv=None) -> int:
    args = parse_recipe_args(argv, "python -m pretrain", __doc__, "configs/pretrain/", "SOLVER.EPOCHS 100")
    return train(load_cfg(args.config_file, args.opts))


if __name__ == "__main__":
    sys.exit(cli_main(main))
