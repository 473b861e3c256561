"""Weights & Biases as a mirror of the metric records (``LOGGER.WANDB``): optional, imported only when asked for.

Every record that goes to metrics.jsonl goes to the W&B run too, its numbers against ``step`` (a metric of
its own, so the steps a resumed run repeats after its checkpoint are logged again instead of dropped).
A resumed run continues the same W&B run: its id is kept in OUTPUT_DIR/wandb_run_id.
"""
from __future__ import annotations

import os
import secrets

from dspnet_d2.errors import InvalidInputError

__all__ = ["import_wandb", "WandbMirror"]

RUN_ID_FILE = "wandb_run_id"


def import_wandb():
    """The ``wandb`` module, or one clear error saying how to install it."""
    try:
        import wandb
    except ImportError as err:
        raise InvalidInputError(f"LOGGER.WANDB is True but wandb cannot be imported ({err}); pip install "
                                "'dspnet[wandb]' or set LOGGER.WANDB False") from None
    return wandb


class WandbMirror:
    def __init__(self, output_dir: str, project: str, name: str, offline: bool, config: dict | None = None):
        wandb = import_wandb()
        os.makedirs(output_dir, exist_ok=True)
        id_path = os.path.join(output_dir, RUN_ID_FILE)
        if os.path.exists(id_path):
            with open(id_path) as f:
                run_id = f.read().strip()
        else:
            run_id = secrets.token_hex(4)  # W&B ids: letters and digits
            with open(id_path, "w") as f:
                f.write(run_id + "\n")
        self.run = wandb.init(project=project or None, name=name or None, id=run_id, resume="allow", dir=output_dir,
                              config=config, mode="offline" if offline else None)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, step: int, values: dict) -> None:
        numbers = {k: v for k, v in values.items() if isinstance(v, (int, float))}  # what TensorBoard gets
        self.run.log({"step": step, **numbers})

    def close(self) -> None:
        self.run.finish()
