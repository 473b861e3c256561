"""Metrics as JSON lines and TensorBoard scalars (rank 0 only)."""
from __future__ import annotations

import json
import os


class MetricWriter:
    def __init__(self, output_dir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
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

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
