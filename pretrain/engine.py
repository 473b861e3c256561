"""The pretraining loop: one process per device, DDP when launched with torchrun, resumable."""
from __future__ import annotations

import logging
import os
import random
import sys
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from dspnet_d2.export import export_dn
from dspnet_d2.weights import save_atomic, save_dn_file

from .checkpoint import (FORMAT, check_signature, checkpoint_path, latest_checkpoint, load_checkpoint,
                         prune_checkpoints)
from .config import parse_dns, validate_cfg
from .data import ImageFolderIO, ResumableSampler, TwoViewDataset, byol_transforms, collate_views
from .distributed import setup_distributed, shutdown
from .method import COLLAPSE_STATS, build_method
from .metrics import MetricWriter
from .monitor import KNNMonitor, plot_knn_curves
from .optim import LARS, bn_stat_weight_at, lars_param_groups, lr_at, tau_at
from .recalibration import recalibrate_on_images

logger = logging.getLogger("pretrain")


class NonFiniteLossError(RuntimeError):
    pass


def run_signature(cfg) -> dict:
    """What a checkpoint must share with a run to be resumed by it."""
    return {"recipe": cfg.RECIPE, "dns": [str(d) for d in parse_dns(cfg.MODEL.DNS)], "num_subnets": cfg.MODEL.NUM_SUBNETS,
            "proj": [cfg.MODEL.PROJ_HIDDEN, cfg.MODEL.PROJ_DIM], "batch_size": cfg.SOLVER.BATCH_SIZE,
            "epochs": cfg.SOLVER.EPOCHS, "resolution": cfg.DATA.RESOLUTION}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _per_dn_means(subnets, rows: list[list[float]], names: tuple[str, ...]) -> dict[str, float]:
    """``{"<name>/<dn>": value}``, averaged over the draws of a DN that the sandwich drew more than once."""
    out = {}
    for dn in dict.fromkeys(subnets):
        picked = [row for d, row in zip(subnets, rows) if d == dn]
        out.update({f"{name}/{dn}": sum(row[j] for row in picked) / len(picked) for j, name in enumerate(names)})
    return out


class Trainer:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rank, self.world_size, self.device = setup_distributed(cfg.DEVICE)
        validate_cfg(cfg, self.world_size)
        self.is_main = self.rank == 0
        self.method = build_method(cfg).to(self.device)
        self.method.set_sync_bn(cfg.MODEL.SYNC_BN and self.world_size > 1, cfg.MODEL.MOMENTUM_BN)
        self.channels_last = cfg.CHANNELS_LAST
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)
        self.online = self.method.online
        if self.world_size > 1:
            self.online = torch.nn.parallel.DistributedDataParallel(
                self.method.online, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=False, broadcast_buffers=False)
        self.optimizer = LARS(lars_param_groups([self.method.online], cfg.SOLVER.WEIGHT_DECAY), lr=0.0,
                              momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY,
                              eta=cfg.SOLVER.LARS_ETA)
        self.amp_dtype = torch.bfloat16 if cfg.AMP.DTYPE == "bfloat16" else torch.float16
        self.amp = cfg.AMP.ENABLED and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.images = images = ImageFolderIO(os.path.join(cfg.DATA.ROOT, cfg.DATA.SPLIT))
        # center crops of training images: the exports' BN recalibration and the kNN monitor
        self.eval_view = dict(resolution=cfg.EVAL_VIEW.RESOLUTION or self.method.full_dn.info.eval_resolution,
                              resize_ratio=cfg.EVAL_VIEW.RESIZE_RATIO, batch_size=cfg.EVAL_VIEW.BATCH_SIZE,
                              seed=cfg.EVAL_VIEW.SEED, mean=cfg.DATA.MEAN, std=cfg.DATA.STD)
        self.monitor = None
        if cfg.MONITOR.KNN_PERIOD and self.is_main:
            self.monitor = KNNMonitor(images, cfg.MONITOR.VAL_ROOT or os.path.join(cfg.DATA.ROOT, "val"),
                                      cfg.MONITOR.BANK_IMAGES, cfg.MONITOR.VAL_IMAGES, cfg.MONITOR.K,
                                      device=self.device, num_workers=cfg.DATA.NUM_WORKERS, **self.eval_view)
        transforms = byol_transforms(cfg.DATA.RESOLUTION, cfg.DATA.CROP_SCALE, cfg.DATA.MEAN, cfg.DATA.STD,
                                     cfg.DATA.BLUR_PROB, cfg.DATA.SOLARIZE_PROB, cfg.DATA.COLOR_JITTER,
                                     cfg.DATA.COLOR_JITTER_PROB, cfg.DATA.GRAYSCALE_PROB, cfg.DATA.BLUR_SIGMA)
        self.sampler = ResumableSampler(len(images), cfg.SOLVER.BATCH_SIZE, self.rank, self.world_size, cfg.SEED)
        self.loader = torch.utils.data.DataLoader(
            TwoViewDataset(images, transforms), batch_size=self.sampler.batch, sampler=self.sampler,
            num_workers=cfg.DATA.NUM_WORKERS, collate_fn=collate_views, pin_memory=self.device.type == "cuda",
            drop_last=True)
        self.steps_per_epoch = self.sampler.steps_per_epoch
        self.total_steps = cfg.SOLVER.EPOCHS * self.steps_per_epoch
        self.warmup_steps = cfg.SOLVER.WARMUP_EPOCHS * self.steps_per_epoch
        self.peak_lr = cfg.SOLVER.BASE_LR * cfg.SOLVER.BATCH_SIZE / 256
        self.step = 0
        self.metrics = MetricWriter(cfg.OUTPUT_DIR, enabled=self.is_main)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": FORMAT, "signature": run_signature(self.cfg), "config": self.cfg.dump(),
                "step": self.step, "online": self.method.online.state_dict(),
                "target": self.method.target.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": _rng_state()}

    def save(self) -> None:
        if self.is_main:
            save_atomic(self.state_dict(), checkpoint_path(self.cfg.OUTPUT_DIR, self.step))
            prune_checkpoints(self.cfg.OUTPUT_DIR, self.cfg.CHECKPOINT.KEEP)
        if self.world_size > 1:
            dist.barrier()

    def resume(self) -> bool:
        path = latest_checkpoint(self.cfg.OUTPUT_DIR) if self.cfg.CHECKPOINT.RESUME else None
        if path is None:
            return False
        state = load_checkpoint(path)
        check_signature(state, run_signature(self.cfg), path)
        self.method.online.load_state_dict(state["online"])
        self.method.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.step = state["step"]
        logger.info("resumed from %s at step %d", path, self.step)
        return True

    # -- one step ----------------------------------------------------------------------------------
    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def train_step(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, float]:
        cfg, step = self.cfg, self.step
        epoch = step // self.steps_per_epoch
        lr = lr_at(step, self.total_steps, self.warmup_steps, self.peak_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.method.set_target_bn_weight(bn_stat_weight_at(step, self.total_steps) if cfg.MODEL.MOMENTUM_BN else None)
        with self.autocast():
            projections = self.method.target_projections(view1, view2)  # once per step
        subnets = self.method.sample(step, cfg.SEED, full_only=epoch < cfg.MODEL.FULL_ONLY_EPOCHS)
        stacked = self.method.train_subnets(subnets, view1, view2, projections, self.online,
                                            backward=lambda loss: self.scaler.scale(loss).backward(),
                                            autocast=self.autocast)
        if self.world_size > 1:  # every rank sees the global losses, so all stop together on a NaN
            dist.all_reduce(stacked)
            stacked /= self.world_size
        rows = stacked.tolist()  # one host sync per step
        values = [row[0] for row in rows]
        for dn, value in zip(subnets, values):
            if not torch.isfinite(torch.tensor(value)):
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(f"non-finite loss {value} at step {step} (epoch {epoch}) for sub-network "
                                         f"{dn}; the last good checkpoint is kept in {cfg.OUTPUT_DIR}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        tau = tau_at(step, self.total_steps, cfg.MODEL.TAU_BASE)
        self.method.update_target(tau)
        self.step += 1
        return {"lr": lr, "tau": tau, "loss": sum(values), "subnets": [str(dn) for dn in subnets],
                **_per_dn_means(subnets, rows, ("loss",) + COLLAPSE_STATS)}

    # -- the loop ------------------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> int:
        """Train to the end (or ``stop_after`` more steps, to simulate an interruption); returns the step."""
        self.resume()
        self.method.train()
        stop_at = self.total_steps if stop_after is None else min(self.total_steps, self.step + stop_after)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main, desc="pretrain",
                   dynamic_ncols=True)
        skipped_total, tick, tick_step = 0, time.perf_counter(), self.step
        if self.step == 0 and stop_at > 0:
            self.monitor_knn()  # the starting point of the curves
        while self.step < stop_at:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, start)
            for view1, view2, skipped in self.loader:
                view1 = view1.to(self.device, non_blocking=True)
                view2 = view2.to(self.device, non_blocking=True)
                if self.channels_last:
                    view1, view2 = (v.contiguous(memory_format=torch.channels_last) for v in (view1, view2))
                record = self.train_step(view1, view2)
                skipped_total += skipped
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.3g}")
                end_of_epoch = self.step % self.steps_per_epoch == 0
                if self.step % self.cfg.LOG_PERIOD == 0 or end_of_epoch or self.step == stop_at:
                    now = time.perf_counter()
                    images = (self.step - tick_step) * self.cfg.SOLVER.BATCH_SIZE
                    record.update(epoch=epoch, images_per_s=images / max(now - tick, 1e-9),
                                  skipped_images=skipped_total * self.world_size)
                    self.metrics.write(self.step, record)
                    tick, tick_step = now, self.step
                if end_of_epoch and (epoch + 1) % max(self.cfg.MONITOR.KNN_PERIOD, 1) == 0:
                    self.monitor_knn()  # before the epoch's checkpoint: a resumed run never skips one
                if self.step % self.cfg.CHECKPOINT.PERIOD == 0 or end_of_epoch or self.step == stop_at:
                    self.save()
                if self.step >= stop_at:
                    break
        bar.close()
        if skipped_total:
            logger.warning("skipped %d unreadable images on rank %d", skipped_total, self.rank)
        if self.step >= self.total_steps and self.cfg.EXPORT:
            self.export()
        self.metrics.close()
        return self.step

    def monitor_knn(self) -> None:
        """The kNN monitor of every DN (main process; the others wait), into the metrics and a plot."""
        if self.monitor is not None:
            record = self.monitor(self.method.online.encoder, self.method.dns)
            self.metrics.write(self.step, record)
            logger.info("kNN monitor at step %d: %s", self.step,
                        ", ".join(f"{k[4:]} {v:.1f}" for k, v in record.items()))
            plot_knn_curves(self.metrics.path, os.path.join(self.cfg.OUTPUT_DIR, "knn_monitor.png"))
        if self.cfg.MONITOR.KNN_PERIOD and self.world_size > 1:
            dist.barrier()

    def export(self) -> dict[str, str]:
        """Write each DN's weights (export_dn of the online encoder) to OUTPUT_DIR/export/<dn>.pth, with
        BN statistics recalibrated for that DN (``EXPORT_RECALIBRATION_BATCHES``; recorded in the file)."""
        paths = {}
        if self.is_main:
            folder = os.path.join(self.cfg.OUTPUT_DIR, "export")
            os.makedirs(folder, exist_ok=True)
            encoder = self.method.online.encoder
            for dn in self.method.dns:
                model = export_dn(encoder, dn).to(self.device)
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
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout),
                                  logging.FileHandler(os.path.join(cfg.OUTPUT_DIR, "log.txt"))])
    trainer = Trainer(cfg)
    if trainer.is_main:
        with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
            f.write(cfg.dump())
        logger.info("pretraining %s: %d steps of %d images on %d rank(s), device %s", cfg.RECIPE or "run",
                    trainer.total_steps, cfg.SOLVER.BATCH_SIZE, trainer.world_size, trainer.device)
    try:
        trainer.train()
    except NonFiniteLossError as err:
        logger.error("%s", err)
        return 2
    finally:
        shutdown()
    return 0
