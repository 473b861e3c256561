"""What the pretraining and the supervised trainers share: a run's checkpoints, its resume, its metric records.

A subclass sets ``step``, ``optimizer``, ``scaler``, ``metrics``, ``sampler``, ``loader``,
``steps_per_epoch`` and ``total_steps`` (``setup_process`` sets the rest) and implements ``signature()``,
``model_state()``, ``load_model_state(state)``, ``run_batch(batch)`` and the loop's hooks.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time

import torch
import torch.distributed as dist
from tqdm import tqdm

from dspnet_d2.errors import InvalidInputError
from dspnet_d2.weights import save_atomic

from .checkpoint import (
    check_signature,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    rng_state,
    set_rng_state,
)
from .distributed import CollectiveError, collective_errors, setup_distributed, shutdown
from .preemption import EXIT_PREEMPTED, Preempted, StopProtocol
from .recipe import recipe_dns

__all__ = ["ResumableRun", "NonFiniteLossError", "setup_logging", "run_training", "per_dn_means", "check_world_size"]

logger = logging.getLogger("pretrain")


class NonFiniteLossError(RuntimeError):
    pass


def setup_logging(output_dir: str) -> None:
    """Log lines to stdout and to OUTPUT_DIR/log.txt."""
    os.makedirs(output_dir, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout),
                                  logging.FileHandler(os.path.join(output_dir, "log.txt"))])


def per_dn_means(subnets, rows: list[list[float]], names: tuple[str, ...]) -> dict[str, float]:
    """``{"<name>/<dn>": value}``, averaged over the draws of a DN that the sandwich drew more than once."""
    out = {}
    for dn in dict.fromkeys(subnets):
        picked = [row for d, row in zip(subnets, rows) if d == dn]
        out.update({f"{name}/{dn}": sum(row[j] for row in picked) / len(picked) for j, name in enumerate(names)})
    return out


def check_world_size(cfg, world_size: int) -> None:
    """The global batch splits evenly over the ranks."""
    if cfg.SOLVER.BATCH_SIZE % world_size:
        raise InvalidInputError(f"SOLVER.BATCH_SIZE={cfg.SOLVER.BATCH_SIZE} must be a multiple of the world size "
                                f"{world_size}")


def run_training(cfg, make_trainer, what) -> int:
    """Log to OUTPUT_DIR, build the trainer, write config.yaml, say what runs (``what(trainer)``) and train.

    Exit status 2 on a non-finite loss (the last good checkpoint stays), ``EXIT_PREEMPTED`` (75) when a signal
    stopped the run (its checkpoint written), 1 when a collective failed or timed out (a rank died or hangs).
    """
    setup_logging(cfg.OUTPUT_DIR)
    try:
        trainer = make_trainer(cfg)
        if trainer.is_main:
            with open(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), "w") as f:
                f.write(cfg.dump())
            logger.info("%s: %d steps of %d images on %d rank(s), device %s", what(trainer), trainer.total_steps,
                        cfg.SOLVER.BATCH_SIZE, trainer.world_size, trainer.device)
        trainer.train()
    except NonFiniteLossError as err:
        logger.error("%s", err)
        return 2
    except Preempted as stop:
        logger.warning("%s", stop)
        return EXIT_PREEMPTED
    except CollectiveError as err:
        logger.error("%s", err)
        return 1
    finally:
        shutdown()
    return 0


class ResumableRun:
    checkpoint_format = ""  # the ``format`` field of this run's checkpoints
    checkpoint_kind = ""  # what a wrong file is said not to be ("pretraining", "supervised")
    progress_desc = ""  # the progress bar's label
    signature_defaults: dict = {}  # entries older checkpoints lack, as they were then (check_signature)

    def setup_process(self, cfg) -> None:
        """Join the process group (under torchrun), pick the device; the loaded recipe ``cfg`` (validated) and
        its DN set (``self.dns``, parsed when it was loaded) must fit the world size."""
        self.cfg, self.dns = cfg, recipe_dns(cfg)
        self.rank, self.world_size, self.device = setup_distributed(cfg.DEVICE, cfg.DIST.TIMEOUT_MINUTES)
        check_world_size(cfg, self.world_size)
        self.is_main = self.rank == 0

    def setup_amp(self, cfg) -> None:
        """Mixed precision on GPU only; float16 needs a GradScaler (a no-op one otherwise, kept in checkpoints)."""
        self.amp_dtype = torch.bfloat16 if cfg.AMP.DTYPE == "bfloat16" else torch.float16
        self.amp = cfg.AMP.ENABLED and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def signature(self) -> dict:
        """What a checkpoint must share with this run to be resumed by it."""
        raise NotImplementedError

    def model_state(self) -> dict:
        raise NotImplementedError

    def weights_description(self) -> dict:
        """``dspnet_d2.weights.describe`` of this run's checkpoints: where ``model_state`` keeps the encoder."""
        raise NotImplementedError

    def load_model_state(self, state: dict) -> None:
        raise NotImplementedError

    def run_batch(self, batch) -> tuple[dict, int]:
        """One training step on a loader batch: its record and the unreadable images it skipped."""
        raise NotImplementedError

    def before_training(self, stop_at: int) -> None:
        """After the resume, before the first step."""

    def after_epoch(self, epoch: int) -> None:
        """At the end of each epoch, before its checkpoint (so a resumed run never skips it)."""

    def after_training(self) -> None:
        """Once the last step is done (also when a finished run is started again)."""

    # -- a step ----------------------------------------------------------------------------------
    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def apply_gradients(self, stacked, subnets) -> list[list[float]]:
        """The optimizer step on the gradients the sub-networks summed; ``stacked`` (one row per sub-network,
        loss first) is averaged over ranks, so all stop together on a non-finite loss. Returns its rows."""
        if self.world_size > 1:
            dist.all_reduce(stacked)
            stacked /= self.world_size
        rows = stacked.tolist()  # one host sync per step
        epoch = self.step // self.steps_per_epoch
        for dn, row in zip(subnets, rows):
            if not math.isfinite(row[0]):
                self.optimizer.zero_grad(set_to_none=True)
                raise NonFiniteLossError(f"non-finite loss {row[0]} at step {self.step} (epoch {epoch}) for "
                                         f"sub-network {dn}; the last good checkpoint is kept in {self.cfg.OUTPUT_DIR}")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return rows

    # -- the loop --------------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> int:
        """Train to the end (or ``stop_after`` more steps, to simulate an interruption); returns the step.

        A signal of ``CHECKPOINT.SIGNALS`` stops every rank after the same step, with that step's checkpoint,
        by raising ``Preempted``; a failed or timed-out collective raises ``CollectiveError``."""
        self.resume()
        stop_at = self.total_steps if stop_after is None else min(self.total_steps, self.step + stop_after)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main, desc=self.progress_desc,
                   dynamic_ncols=True)
        self.skipped_total = 0
        self.start_records()
        with collective_errors(self.rank, self.world_size, lambda: f"step {self.step}", self.cfg.DIST.TIMEOUT_MINUTES):
            try:
                with StopProtocol(self.cfg.OUTPUT_DIR, self.cfg.CHECKPOINT.SIGNALS, self.world_size, self.device,
                                  self.is_main) as stops:
                    self.before_training(stop_at)
                    while self.step < stop_at:
                        self.run_epoch(stop_at, bar, stops)
            finally:
                bar.close()
                if self.skipped_total:
                    logger.warning("skipped %d unreadable images on rank %d", self.skipped_total, self.rank)
            if self.step >= self.total_steps:  # the signals' default actions again: the last checkpoint is written
                self.after_training()
        self.metrics.close()
        return self.step

    def run_epoch(self, stop_at: int, bar, stops: StopProtocol) -> None:
        """The rest of the current epoch, up to ``stop_at``."""
        epoch, start = divmod(self.step, self.steps_per_epoch)
        self.sampler.set_epoch(epoch, start)
        for batch in self.loader:
            record, skipped = self.run_batch(batch)
            self.skipped_total += skipped
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.3g}")
            self.record_step(record, epoch, stop_at, skipped_images=self.skipped_total * self.world_size)
            if self.step % self.steps_per_epoch == 0:
                self.after_epoch(epoch)
            stops.check(self.step, self.save_and_close)
            if self.checkpoint_due(stop_at):
                self.save()
            if self.step >= stop_at:
                return

    # -- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"format": self.checkpoint_format, **self.weights_description(), "signature": self.signature(),
                "config": self.cfg.dump(), "step": self.step, **self.model_state(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state()}

    def save(self) -> None:
        if self.is_main:
            save_atomic(self.state_dict(), checkpoint_path(self.cfg.OUTPUT_DIR, self.step))
            prune_checkpoints(self.cfg.OUTPUT_DIR, self.cfg.CHECKPOINT.KEEP)
        if self.world_size > 1:
            dist.barrier()

    def save_and_close(self) -> None:
        """A stop's last act: the checkpoint of this step, and the metric records closed."""
        self.save()
        self.metrics.close()

    def resume(self) -> bool:
        path = latest_checkpoint(self.cfg.OUTPUT_DIR) if self.cfg.CHECKPOINT.RESUME else None
        if path is None:
            return False
        state = load_checkpoint(path, self.checkpoint_format, self.checkpoint_kind)
        check_signature(state, self.signature(), path, self.signature_defaults)
        self.load_model_state(state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.step = state["step"]
        logger.info("resumed from %s at step %d", path, self.step)
        return True

    # -- the loop's records ----------------------------------------------------------------------
    def start_records(self) -> None:
        self._tick, self._tick_step = time.perf_counter(), self.step

    def record_step(self, record: dict, epoch: int, stop_at: int, **extra) -> None:
        """Every LOG_PERIOD steps, at an epoch's end and at the last step: the step's record with its epoch
        and the images per second since the previous record."""
        if self.step % self.cfg.LOG_PERIOD and self.step % self.steps_per_epoch and self.step != stop_at:
            return
        now = time.perf_counter()
        images = (self.step - self._tick_step) * self.cfg.SOLVER.BATCH_SIZE
        self.metrics.write(self.step, {**record, "epoch": epoch, "images_per_s": images / max(now - self._tick, 1e-9),
                                       **extra})
        self._tick, self._tick_step = now, self.step

    def checkpoint_due(self, stop_at: int) -> bool:
        return (self.step % self.cfg.CHECKPOINT.PERIOD == 0 or self.step % self.steps_per_epoch == 0
                or self.step == stop_at)
