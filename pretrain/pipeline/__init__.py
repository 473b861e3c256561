"""From images to an AP table in one command: the paper's whole story, stage by stage.

    python -m pretrain.pipeline --config-file configs/pipeline/demo.yaml [KEY VALUE ...]

  1. pretrain   DSPNet pretraining (python -m pretrain)
  2. knn        kNN top-1 of every DN: pretrained, the weights the run started from, random inits
  3. convert    the supernet to one detectron2 .pkl holding every DN (python -m dspnet_d2.deploy.convert_to_d2)
  4. detection  Mask R-CNN for each DN of DETECTION.DNS, from the DSPNet weights and from random init
                (python -m dspnet_d2.d2.train_net)
  5. ap_table   the AP^bb / AP^mk table and plot of both series (python -m dspnet_d2.detection_report)
  6. pictures   detectron2's Visualizer on val images, every model next to the ground truth, one PNG a DN
  7. report     OUTPUT_DIR/report.md: every table and picture, and each stage's time

Each stage is one of the package's commands, run as a child process; the pipeline prints it first, so
any stage can also be launched by hand (the LAUNCHER / NUM_GPUS keys put torchrun or --num-gpus in
front). Running the same command again skips the finished stages and resumes an interrupted one where
it stopped (each command resumes from its own checkpoints). Without detectron2, stages 1-3 run, and the
summary says which stages were skipped and why; the exit status is still 0. SIGTERM, SIGINT or SIGUSR1 is
passed on to the running stage (a training stage stops with its checkpoint); the stage is recorded as
interrupted and the pipeline exits with status 75, as the training commands do.
"""
from __future__ import annotations

import os

from dspnet_d2.errors import MissingFileError

from .config import load_pipeline_cfg
from .runner import Pipeline

__all__ = ["Pipeline", "load_pipeline_cfg", "main"]


def argument_parser():
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pretrain.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="a pipeline under configs/pipeline/")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. DETECTION.DNS \"['mbv3_w1.0']\"")
    return parser


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    if not os.path.isfile(args.config_file):
        raise MissingFileError(f"config file {args.config_file!r} does not exist")
    return Pipeline(load_pipeline_cfg(args.config_file, args.opts), args.config_file).run()
