"""detectron2 LazyConfigs with a DN backbone: detectron2's own model-zoo pieces (``common/models/mask_rcnn_fpn.py``,
``common/data/coco.py``, ...) with ``DSPNetBackbone`` as the FPN's bottom-up network, the DN one key
(``model.backbone.bottom_up.dn``). ``configs/detection/lazy/`` holds the configs; ``python -m
dspnet_d2.d2.lazy_train`` trains them, as does detectron2's ``tools/lazyconfig_train_net.py``."""
from __future__ import annotations

import os

from . import require_detectron2

require_detectron2(__name__)

import detectron2  # noqa: E402
from detectron2.config import LazyCall as L  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.engine import AMPTrainer, SimpleTrainer, default_setup, default_writers, hooks  # noqa: E402
from detectron2.evaluation import inference_on_dataset, print_csv_format  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from ..errors import MissingFileError  # noqa: E402
from .backbone import dn_backbone  # noqa: E402
from .checkpoint import DSPNetCheckpointer  # noqa: E402
from .train import DEMO_DATASETS, any_seed, ddp_model, register_demo  # noqa: E402

__all__ = ["model_zoo_config", "dn_mask_rcnn_fpn", "evaluate", "train", "run_config"]

# the pretrained networks expect RGB with torchvision's mean and std
PIXEL_MEAN, PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def model_zoo_config(relative: str):
    """A LazyConfig file of detectron2's model zoo (``common/...``), read from the installed detectron2 (without
    ``detectron2.model_zoo``, whose import needs setuptools' ``pkg_resources``)."""
    path = os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs", relative)
    if not os.path.isfile(path):
        raise MissingFileError(f"detectron2's model-zoo config {relative} is not in this install ({path}); "
                               "install detectron2 from its source tree, which ships configs/")
    return LazyConfig.load(path)


def dn_mask_rcnn_fpn(dn: str = "mbv3_w0.5", norm: str = "SyncBN"):
    """detectron2's Mask R-CNN FPN with the DN's static network as the bottom-up network, ``norm`` in it and in
    the FPN (the paper: SyncBN, every layer trained), RGB input with torchvision's normalisation."""
    model = model_zoo_config("common/models/mask_rcnn_fpn.py").model
    model.backbone.bottom_up = L(dn_backbone)(dn=dn, norm=norm, freeze_at=0)
    model.backbone.in_features = ["res2", "res3", "res4", "res5"]
    model.backbone.norm = norm
    model.pixel_mean, model.pixel_std, model.input_format = PIXEL_MEAN, PIXEL_STD, "RGB"
    return model


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
    model = ddp_model(model, **cfg.train.ddp)
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
    with any_seed():  # cfg.train.seed may be any 63-bit integer
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
