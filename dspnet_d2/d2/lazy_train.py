"""Train or evaluate a detectron2 LazyConfig (``configs/detection/lazy/``) with this package's checkpointer, which
also reads a supernet .pkl, on one process, ``--num-gpus`` processes, or the ranks torchrun or a Slurm task
started. detectron2's own ``tools/lazyconfig_train_net.py`` trains the same configs from a per-DN .pkl.

    python -m dspnet_d2.d2.lazy_train --config-file configs/detection/lazy/mask_rcnn_dn_fpn_2x.py --num-gpus 8 \\
        model.backbone.bottom_up.dn=resnet18 train.init_checkpoint=resnet18.pkl
    python -m dspnet_d2.d2.lazy_train --config-file ... --eval-only train.init_checkpoint=output/.../model_final.pth
"""
from __future__ import annotations

import logging
import os
import sys

from . import require_detectron2

require_detectron2(__name__)

from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.engine import AMPTrainer, SimpleTrainer, default_setup, default_writers, hooks, launch  # noqa: E402
from detectron2.engine.defaults import create_ddp_model  # noqa: E402
from detectron2.evaluation import inference_on_dataset, print_csv_format  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from ..errors import InvalidInputError, MissingFileError, cli_main  # noqa: E402
from .checkpoint import DSPNetCheckpointer  # noqa: E402
from .train import DEMO_DATASETS, argument_parser, join_process_group, launched_per_process, register_demo  # noqa: E402

logger = logging.getLogger("detectron2")


def evaluate(cfg, model) -> dict:
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    print_csv_format(results)
    return results


def train(cfg, resume: bool) -> None:
    """detectron2's LazyConfig training loop (its ``tools/lazyconfig_train_net.py``), with ``DSPNetCheckpointer``
    and DDP that also runs on CPU (gloo)."""
    model = instantiate(cfg.model).to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    loader = instantiate(cfg.dataloader.train)
    ddp = dict(cfg.train.ddp)
    if cfg.train.device == "cpu":
        ddp["device_ids"] = None  # detectron2 gives the local rank's GPU otherwise
    model = create_ddp_model(model, **ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, loader, optimizer)
    checkpointer = DSPNetCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: evaluate(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def run_config(args) -> None:
    """One rank's training or evaluation."""
    cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
    default_setup(cfg, args)
    names = [cfg.dataloader.train.dataset.names, cfg.dataloader.test.dataset.names]
    if any(name in DEMO_DATASETS for name in names):
        register_demo(args.demo_root)
    if args.eval_only:
        model = instantiate(cfg.model).to(cfg.train.device)
        DSPNetCheckpointer(model).load(cfg.train.init_checkpoint)
        evaluate(cfg, model)
    else:
        train(cfg, args.resume)


def main(argv=None) -> int:
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
