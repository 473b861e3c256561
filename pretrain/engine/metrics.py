"""Metrics as JSON lines and TensorBoard scalars (rank 0 only), mirrored to Weights & Biases on request."""
from __future__ import annotations

import json
import os

import yaml


class MetricWriter:
    """``mirror``: anything with ``log(step, values)`` and ``close()`` that gets every record too."""

    def __init__(self, output_dir: str, enabled: bool = True, mirror=None):
        self.enabled = enabled
        self._tb = None
        self.mirror = mirror if enabled else None
        if not enabled:
            return
        self.path = os.path.join(output_dir, "metrics.jsonl")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(output_dir, "tb"))
        except ImportError:  # tensorboard is a dependency, but metrics must not die with it
            self._tb = None

    def write(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
        if self.mirror is not None:
            self.mirror.log(step, values)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None


def build_metric_writer(cfg, enabled: bool) -> MetricWriter:
    """The run's writer: OUTPUT_DIR/metrics.jsonl and tb/, and the W&B run of ``cfg.LOGGER`` (main process)."""
    mirror = None
    if enabled and cfg.LOGGER.WANDB:
        from .wandb_logger import WandbMirror

        mirror = WandbMirror(cfg.OUTPUT_DIR, cfg.LOGGER.WANDB_PROJECT, cfg.LOGGER.WANDB_NAME or cfg.RECIPE,
                             cfg.LOGGER.WANDB_OFFLINE, config=yaml.safe_load(cfg.dump()))
    return MetricWriter(cfg.OUTPUT_DIR, enabled, mirror)
