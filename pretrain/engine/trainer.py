"""The pretraining loop of any registered method: one process per device, DDP when launched with torchrun,
resumable. The method (``MODEL.METHOD``, ``pretrain.methods``) trains its sub-networks each step; this
trainer owns the data, LARS and its schedule, checkpoints, the monitor and each DN's export."""
from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from dspnet_d2.errors import InvalidInputError
from dspnet_d2.images import ImageFolderIO, class_selection
from dspnet_d2.recalibration import recalibrate_on_images
from dspnet_d2.runtime.workers import ShieldedLoader
from dspnet_d2.slim.slicing import slice_dn
from dspnet_d2.weights import describe, save_dn_file

from ..data.augment import normalize_views
from ..data.sampler import ResumableSampler
from ..data.views import TwoViewDataset, collate_views
from ..methods import StepContext, build_method, get_method
from ..monitor.knn_monitor import KNNMonitor, plot_monitor_curves
from ..monitor.probe import LinearProbes
from .checkpoint import FORMAT
from .loop import NonFiniteLossError, ResumableRun, per_dn_means, run_training
from .metrics import build_metric_writer
from .optim import LARS, lars_param_groups, lr_at

__all__ = ["Trainer", "NonFiniteLossError", "run_signature", "main"]

logger = logging.getLogger("pretrain")


def run_signature(cfg, dns) -> dict:
    """What a checkpoint must share with a run to be resumed by it: the engine's part and the method's."""
    return {"recipe": cfg.RECIPE, "method": cfg.MODEL.METHOD, "dns": [str(d) for d in dns],
            **get_method(cfg.MODEL.METHOD).signature(cfg), "batch_size": cfg.SOLVER.BATCH_SIZE,
            "epochs": cfg.SOLVER.EPOCHS, "resolution": cfg.DATA.RESOLUTION}


class Trainer(ResumableRun):
    checkpoint_format, checkpoint_kind, progress_desc = FORMAT, "pretraining", "pretrain"
    signature_defaults = {"method": "dspnet"}  # checkpoints from before MODEL.METHOD are DSPNet's (BYOL: n = 1)

    def __init__(self, cfg):
        self.setup_process(cfg)
        self.method = build_method(cfg, self.dns).to(self.device)
        self.method.configure_norms(sync=cfg.MODEL.SYNC_BN and self.world_size > 1)
        self.channels_last = cfg.CHANNELS_LAST
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.network = self.method.trained  # what each step's forward runs: the method's network or its DDP
        if self.world_size > 1:
            self.network = torch.nn.parallel.DistributedDataParallel(
                self.method.trained, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False, broadcast_buffers=False)
        self.optimizer = LARS(lars_param_groups(self.method.optimizer_modules(), cfg.SOLVER.WEIGHT_DECAY), lr=0.0,
                              momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
                              eta=cfg.SOLVER.LARS_ETA)
        self.setup_amp(cfg)
        self.images = images = ImageFolderIO(os.path.join(cfg.DATA.ROOT, cfg.DATA.SPLIT),
                                             class_selection(cfg.DATA.CLASS_COUNT, cfg.DATA.CLASS_LIST))
        # center crops of training images: the exports' BN recalibration and the kNN monitor
        self.eval_view = dict(resolution=cfg.EVAL_VIEW.RESOLUTION or self.method.full_dn.info.eval_resolution,
                              resize_ratio=cfg.EVAL_VIEW.RESIZE_RATIO, batch_size=cfg.EVAL_VIEW.BATCH_SIZE,
                              seed=cfg.EVAL_VIEW.SEED, mean=cfg.DATA.MEAN, std=cfg.DATA.STD)
        self.monitor = None
        if cfg.MONITOR.KNN_PERIOD and self.is_main:
            self.monitor = KNNMonitor(images, cfg.MONITOR.VAL_ROOT or os.path.join(cfg.DATA.ROOT, "val"),
                                      cfg.MONITOR.BANK_IMAGES, cfg.MONITOR.VAL_IMAGES, cfg.MONITOR.K,
                                      device=self.device, num_workers=cfg.DATA.NUM_WORKERS, **self.eval_view)
        views = self.method.make_views(cfg)
        self.sampler = ResumableSampler(len(images), cfg.SOLVER.BATCH_SIZE, self.rank, self.world_size, cfg.SEED)
        workers = cfg.DATA.NUM_WORKERS
        self.loader = ShieldedLoader(
            TwoViewDataset(images, views), batch_size=self.sampler.batch, sampler=self.sampler,
            num_workers=workers, collate_fn=collate_views, pin_memory=self.device.type == "cuda", drop_last=True,
            persistent_workers=workers > 0, prefetch_factor=cfg.DATA.PREFETCH_FACTOR if workers else None)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = cfg.SOLVER.EPOCHS * self.steps_per_epoch
        self.warmup_steps = cfg.SOLVER.WARMUP_EPOCHS * self.steps_per_epoch
        self.peak_lr = cfg.SOLVER.BASE_LR * cfg.SOLVER.BATCH_SIZE / 256
        self.probes = self.build_probes(cfg) if cfg.MONITOR.LINEAR_PROBE else None
        self.step = 0
        self.metrics = build_metric_writer(cfg, enabled=self.is_main)

    def build_probes(self, cfg) -> LinearProbes:
        if len(self.images.classes) < 2:
            raise InvalidInputError(f"MONITOR.LINEAR_PROBE needs class folders to learn from; {self.images.root} "
                                    f"has {len(self.images.classes)}")
        encoder = self.method.encoder
        dims = {str(dn): encoder.channels(dn)["pooled"] for dn in self.method.dns}
        return LinearProbes(dims, len(self.images.classes), cfg.MONITOR.LINEAR_PROBE_LR, seed=cfg.SEED).to(self.device)

    # -- checkpoints (ResumableRun) --------------------------------------------------------------
    def signature(self) -> dict:
        return run_signature(self.cfg, self.dns)

    def model_state(self) -> dict:
        probe = {"linear_probe": self.probes.checkpoint_state()} if self.probes is not None else {}
        return {**self.method.checkpoint_state(), **probe}

    def weights_description(self) -> dict:
        return describe(self.method.dns, *self.method.encoder_location)  # the encoder: every DN's weights

    def load_model_state(self, state: dict) -> None:
        self.method.load_checkpoint_state(state)
        if self.probes is not None and "linear_probe" in state:  # else the probe starts now, from scratch
            self.probes.load_checkpoint_state(state["linear_probe"])

    # -- one step ----------------------------------------------------------------------------------
    def train_step(self, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor | None = None
                   ) -> dict[str, float]:
        step = self.step
        lr = lr_at(step, self.total_steps, self.warmup_steps, self.peak_lr)
        self.set_lr(lr)
        observe = None
        if self.probes is not None:
            both = torch.cat([labels, labels])
            observe = lambda dn, rep1, rep2: self.probes.observe(dn, torch.cat([rep1, rep2]), both)  # noqa: E731
        ctx = StepContext(step, step // self.steps_per_epoch, self.total_steps, self.network,
                          backward=lambda loss: self.scaler.scale(loss).backward(), autocast=self.autocast,
                          observe=observe, record={"lr": lr})
        stacked, subnets = self.method.train_step((view1, view2), ctx)
        rows = self.apply_gradients(stacked, subnets)
        if self.probes is not None:
            self.probes.step(self.world_size)
        self.method.after_step(ctx)
        self.step += 1
        return {**ctx.record, "loss": sum(row[0] for row in rows), "subnets": [str(dn) for dn in subnets],
                **per_dn_means(subnets, rows, self.method.row_names)}

    # -- the loop's hooks (ResumableRun.train) ---------------------------------------------------
    def run_batch(self, batch) -> tuple[dict, int]:
        view1, view2, skipped, labels = batch  # uint8: normalised here, on the device
        view1, view2 = (normalize_views(v.to(self.device, non_blocking=True), self.cfg.DATA.MEAN, self.cfg.DATA.STD)
                        for v in (view1, view2))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        view1, view2 = (v.contiguous(memory_format=memory_format) for v in (view1, view2))
        return self.train_step(view1, view2, labels.to(self.device, non_blocking=True)), skipped

    def before_training(self, stop_at: int) -> None:
        self.method.train()
        if self.step == 0 and stop_at > 0:
            self.monitor_knn()  # the starting point of the curves

    def after_epoch(self, epoch: int) -> None:
        if self.probes is not None:
            self.metrics.write(self.step, self.probes.epoch_top1())
        if (epoch + 1) % max(self.cfg.MONITOR.KNN_PERIOD, 1) == 0:
            self.monitor_knn()
        elif self.probes is not None:
            self.plot_monitor()

    def after_training(self) -> None:
        if self.cfg.EXPORT:
            self.export()

    def monitor_knn(self) -> None:
        """The kNN monitor of every DN (main process; the others wait), into the metrics and a plot."""
        if self.monitor is not None:
            record = self.monitor(self.method.encoder, self.method.dns)
            self.metrics.write(self.step, record)
            logger.info("kNN monitor at step %d: %s", self.step,
                        ", ".join(f"{k[4:]} {v:.1f}" for k, v in record.items()))
        self.plot_monitor()
        if self.cfg.MONITOR.KNN_PERIOD and self.world_size > 1:
            dist.barrier()

    def plot_monitor(self) -> None:
        """knn_monitor.png: the kNN curves of every DN and, beside them, the linear probe's (main process)."""
        if self.is_main and (self.monitor is not None or self.probes is not None):
            plot_monitor_curves(self.metrics.path, os.path.join(self.cfg.OUTPUT_DIR, "knn_monitor.png"))

    def export(self) -> dict[str, str]:
        """Write each DN's weights (``slice_dn`` of the method's encoder) to OUTPUT_DIR/export/<dn>.pth, with
        BN statistics recalibrated for that DN (``EXPORT_RECALIBRATION_BATCHES``; recorded in the file)."""
        paths = {}
        if self.is_main:
            folder = os.path.join(self.cfg.OUTPUT_DIR, "export")
            os.makedirs(folder, exist_ok=True)
            encoder = self.method.encoder
            for dn in self.method.dns:
                model = slice_dn(encoder, dn).to(self.device)
                recalibration = None
                if self.cfg.EXPORT_RECALIBRATION_BATCHES:
                    recalibration = recalibrate_on_images(
                        model, self.images, num_batches=self.cfg.EXPORT_RECALIBRATION_BATCHES, device=self.device,
                        num_workers=self.cfg.DATA.NUM_WORKERS, **self.eval_view)
                paths[str(dn)] = os.path.join(folder, f"{dn}.pth")
                save_dn_file(paths[str(dn)], dn, model.state_dict(), config=self.cfg.dump(), step=self.step,
                             bn_recalibration=recalibration)
            logger.info("exported %d DNs to %s", len(paths), folder)
        return paths


def main(cfg) -> int:
    return run_training(cfg, Trainer, lambda trainer: f"pretraining {cfg.RECIPE or 'run'}")
