"""Train or evaluate a detectron2 LazyConfig (``configs/detection/lazy/``) with this package's checkpointer, which
also reads a supernet .pkl, on one process, ``--num-gpus`` processes, or the ranks torchrun or a Slurm task
started. detectron2's own ``lazyconfig_train_net.py`` trains the same configs from a per-DN .pkl (needs detectron2).

    python -m dspnet_d2.d2.lazy_train --config-file configs/detection/lazy/mask_rcnn_dn_fpn_2x.py --num-gpus 8 \\
        model.backbone.bottom_up.dn=resnet18 train.init_checkpoint=resnet18.pkl
    python -m dspnet_d2.d2.lazy_train --config-file ... --eval-only train.init_checkpoint=output/.../model_final.pth
"""
from __future__ import annotations

import os
import sys

from ..errors import InvalidInputError, MissingDependencyError, MissingFileError, cli_main


def main(argv=None) -> int:
    try:
        from detectron2.engine import launch

        from .lazy import run_config
        from .train import argument_parser, join_process_group, launched_per_process
    except ImportError as err:  # reported as the other commands report a user's mistake
        raise MissingDependencyError(str(err)) from None
    args = argument_parser().parse_args(argv)
    if not os.path.isfile(args.config_file):
        raise MissingFileError(f"config file {args.config_file!r} does not exist")
    if not args.config_file.endswith(".py"):
        raise InvalidInputError(f"{args.config_file} is not a LazyConfig (.py); tools/train_net.py takes .yaml")
    if launched_per_process():
        join_process_group()
        run_config(args)
    else:
        launch(run_config, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main(main))
