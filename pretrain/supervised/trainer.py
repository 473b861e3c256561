"""The slimmable supervised loop: one process per device, DDP under torchrun, resumable, evaluated per DN."""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dspnet_d2.complexity import dn_complexity
from dspnet_d2.dn import largest_dn
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.families import get_family
from dspnet_d2.images import ImageFolderIO, LabelledImages, SeededLabelledImages, eval_transform
from dspnet_d2.recalibration import recalibrate_on_images
from dspnet_d2.slim.ops import configure_norms
from dspnet_d2.runtime.workers import ShieldedLoader
from dspnet_d2.weights import SUPERVISED_FORMAT, describe, save_dn_file, static_dn

from ..data.sampler import ResumableSampler
from ..engine.loop import ResumableRun, per_dn_means
from ..engine.metrics import build_metric_writer
from ..monitor.features import evaluate_classifier, make_loader
from ..eval.report import write_report
from .config import regularizers
from .data import supervised_transform
from .method import load_init, sandwich_order, train_subnets
from .optim import build_optimizer, supervised_lr_at

logger = logging.getLogger("pretrain.supervised")


def run_signature(cfg, dns) -> dict:
    """What a checkpoint must share with a run to be resumed by it."""
    return {"recipe": cfg.RECIPE, "dns": [str(d) for d in dns], "init": cfg.INIT,
            "num_subnets": cfg.MODEL.NUM_SUBNETS, "batch_size": cfg.SOLVER.BATCH_SIZE, "epochs": cfg.SOLVER.EPOCHS,
            "resolution": cfg.DATA.RESOLUTION}


def wrap_ddp(model, device: torch.device) -> torch.nn.parallel.DistributedDataParallel:
    """DDP whose all-reduce rides on the step's last backward (the others run under ``no_sync``).

    That backward is a smaller sub-network's (the largest goes first): a depth-slimmed one leaves the deeper
    blocks out of it, so depth-slimmable families let DDP find those unused parameters; their gradients
    from the earlier ``no_sync`` backwards are still averaged (tests/test_supervised.py, float64).
    """
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
        find_unused_parameters=model.max_dn.depths is not None)


class SupervisedTrainer(ResumableRun):
    checkpoint_format, checkpoint_kind, progress_desc = SUPERVISED_FORMAT, "supervised", "supervised"

    def __init__(self, cfg):
        self.setup_process(cfg)
        full = largest_dn(self.dns)
        self.train_images = ImageFolderIO(os.path.join(cfg.DATA.ROOT, cfg.DATA.TRAIN_SPLIT))
        self.val_images = ImageFolderIO(os.path.join(cfg.DATA.ROOT, cfg.DATA.VAL_SPLIT))
        if self.val_images.classes != self.train_images.classes:
            raise InvalidInputError("train and val splits have different class folders")
        self.num_classes = len(self.train_images.classes)
        self.resolution = cfg.DATA.RESOLUTION or full.info.eval_resolution
        torch.manual_seed(cfg.SEED)
        family = get_family(full.family)
        self.model = family.supernet(full, num_classes=self.num_classes, **regularizers(cfg, family))
        self.series = load_init(self.model, cfg.INIT)
        self.model.to(self.device)
        configure_norms(self.model, sync=cfg.MODEL.SYNC_BN and self.world_size > 1)
        self.wrapped = wrap_ddp(self.model, self.device) if self.world_size > 1 else self.model
        self.optimizer = build_optimizer(cfg, self.model)
        self.ema = None
        if cfg.MODEL.EMA_DECAY:
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.MODEL.EMA_DECAY),
                                     use_buffers=True)
        self.setup_amp(cfg)
        data = cfg.DATA
        transform = supervised_transform(self.resolution, data.CROP_SCALE, data.MEAN, data.STD, data.RAND_AUGMENT_OPS,
                                         data.RAND_AUGMENT_MAGNITUDE, data.RAND_AUGMENT_MAGNITUDE_STD,
                                         data.RANDOM_ERASING)
        self.sampler = ResumableSampler(len(self.train_images), cfg.SOLVER.BATCH_SIZE, self.rank, self.world_size,
                                        cfg.SEED)
        self.loader = ShieldedLoader(
            SeededLabelledImages(self.train_images, transform), batch_size=self.sampler.batch, sampler=self.sampler,
            num_workers=data.NUM_WORKERS, pin_memory=self.device.type == "cuda", drop_last=True,
            persistent_workers=data.NUM_WORKERS > 0)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = cfg.SOLVER.EPOCHS * self.steps_per_epoch
        self.step = 0
        self.metrics = build_metric_writer(cfg, enabled=self.is_main)

    # -- checkpoints (ResumableRun) --------------------------------------------------------------
    def signature(self) -> dict:
        return run_signature(self.cfg, self.dns)

    def model_state(self) -> dict:
        return {"series": self.series, "model": self.model.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None}

    def weights_description(self) -> dict:
        return describe(self.dns, "model", "")  # the supernet, classifier included

    def load_model_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])

    # -- one step ------------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        cfg, step = self.cfg, self.step
        lr = supervised_lr_at(step, self.steps_per_epoch, cfg)
        self.set_lr(lr)
        subnets = sandwich_order(self.dns, cfg.MODEL.NUM_SUBNETS, step, cfg.SEED)
        stacked = train_subnets(self.model, subnets, images, labels, cfg.MODEL.LABEL_SMOOTHING, self.wrapped,
                                backward=lambda loss: self.scaler.scale(loss).backward(),
                                autocast=self.autocast)
        rows = self.apply_gradients(stacked, subnets)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return {"lr": lr, "loss": sum(row[0] for row in rows), "subnets": [str(dn) for dn in subnets],
                **per_dn_means(subnets, rows, ("loss", "train_top1"))}

    # -- the loop's hooks (ResumableRun.train) ---------------------------------------------------
    def run_batch(self, batch) -> tuple[dict, int]:
        images, labels, skipped = batch
        record = self.train_step(images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
        return record, int(skipped.sum())

    def before_training(self, stop_at: int) -> None:
        self.model.train()  # evaluation works on static copies: the supernet stays in training mode

    def after_epoch(self, epoch: int) -> None:
        period = self.cfg.EVAL_PERIOD
        if period and (epoch + 1) % period == 0 and self.step < self.total_steps:
            self.evaluate()

    def after_training(self) -> None:
        self.finish()

    # -- evaluation and export -------------------------------------------------------------------
    def weights(self) -> tuple[dict, str]:
        """The weights evaluated and exported: the EMA when the recipe keeps one."""
        if self.ema is not None:
            return self.ema.module.state_dict(), "ema"
        return self.model.state_dict(), "online"

    def evaluate(self) -> list[tuple[dict, torch.nn.Module]]:
        """Top-1/top-5 on the val split of every DN (its static network, BN recalibrated for it)."""
        cfg = self.cfg
        state, which = self.weights()
        view = (self.resolution, cfg.DATA.RESIZE_RATIO, cfg.DATA.MEAN, cfg.DATA.STD)
        val_loader = make_loader(LabelledImages(self.val_images, eval_transform(*view)), cfg.EVAL_BATCH_SIZE,
                                 cfg.DATA.NUM_WORKERS, shuffle=False)
        evaluated = []
        for dn in self.dns:
            model = static_dn(state, dn, self.num_classes).to(self.device)
            recalibration = None
            if cfg.BN_RECALIBRATION.BATCHES:  # the same seeded sample on every rank
                recalibration = recalibrate_on_images(
                    model, self.train_images, self.resolution, cfg.EVAL_BATCH_SIZE, cfg.BN_RECALIBRATION.BATCHES,
                    cfg.BN_RECALIBRATION.SEED, self.device, cfg.DATA.NUM_WORKERS, cfg.DATA.RESIZE_RATIO,
                    cfg.DATA.MEAN, cfg.DATA.STD)
            accuracy = evaluate_classifier(model, val_loader, self.device)
            size = dn_complexity(dn, self.resolution, num_classes=self.num_classes)
            result = {"series": self.series, "dn": str(dn), "params": size["params"], "flops": size["flops"],
                      **accuracy, "epoch": self.step / self.steps_per_epoch, "step": self.step, "weights": which,
                      "resolution": self.resolution, "bn_recalibration": recalibration, "init": cfg.INIT}
            evaluated.append((result, model))
        record = {f"val_top1/{r['dn']}": r["top1"] for r, _ in evaluated}
        self.metrics.write(self.step, record)
        if self.is_main:
            logger.info("val top-1 at step %d (%s weights): %s", self.step, which,
                        ", ".join(f"{k[9:]} {v:.2f}" for k, v in record.items()))
        return evaluated

    def finish(self) -> None:
        """The final evaluation (results.{md,csv,json}, accuracy.png) and each DN's export, once."""
        cfg = self.cfg
        if os.path.exists(os.path.join(cfg.OUTPUT_DIR, "accuracy.png")):
            return  # finished earlier (the report's plot is written last)
        evaluated = self.evaluate()
        if self.is_main:
            results = [result for result, _ in evaluated]
            title = (f"slimmable supervised training on {cfg.DATA.ROOT} from {self.series}, {self.resolution} px, "
                     f"{cfg.SOLVER.EPOCHS} epochs")
            if cfg.EXPORT:
                folder = os.path.join(cfg.OUTPUT_DIR, "export")
                os.makedirs(folder, exist_ok=True)
                for dn, (result, model) in zip(self.dns, evaluated):
                    save_dn_file(os.path.join(folder, f"{dn}.pth"), dn, model.state_dict(),
                                 config=cfg.dump(), step=self.step, num_classes=self.num_classes,
                                 classes=list(self.train_images.classes), bn_recalibration=result["bn_recalibration"])
            paths = write_report(results, cfg.OUTPUT_DIR, title)
            logger.info("wrote %s", ", ".join(paths.values()))
        if self.world_size > 1:
            dist.barrier()

