"""Atomic, self-describing checkpoints of tensors and plain Python values (``weights_only`` loads)."""
from __future__ import annotations

import os
import re

import torch

from dspnet_d2.errors import InvalidInputError
from dspnet_d2.runtime.seeding import rng_state, set_rng_state
from dspnet_d2.weights import PRETRAIN_FORMAT as FORMAT

_NAME = re.compile(r"^checkpoint_(\d{8})\.pth$")

__all__ = ["FORMAT", "checkpoint_path", "list_checkpoints", "latest_checkpoint",
           "prune_checkpoints", "load_checkpoint", "check_signature", "rng_state", "set_rng_state"]


def checkpoint_path(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, f"checkpoint_{step:08d}.pth")


def list_checkpoints(output_dir: str) -> list[str]:
    """Checkpoints in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    names = sorted(n for n in os.listdir(output_dir) if _NAME.match(n))
    return [os.path.join(output_dir, n) for n in names]


def latest_checkpoint(output_dir: str) -> str | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir: str, keep: int) -> None:
    for path in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        os.remove(path)


def load_checkpoint(path: str, kind: str = FORMAT, what: str = "pretraining") -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, foreign objects, truncated files
        raise InvalidInputError(f"{path} is not a dspnet {what} checkpoint: {err}") from None
    if not isinstance(state, dict) or state.get("format") != kind:
        raise InvalidInputError(f"{path} is not a dspnet {what} checkpoint (expected format {kind!r})")
    return state


def check_signature(state: dict, signature: dict, path: str, defaults: dict | None = None) -> None:
    """Refuse a checkpoint of another recipe, family or DN set instead of half-loading it. ``defaults``: what a
    checkpoint written before a signature entry existed held (e.g. the method, before there was a choice)."""
    saved = {**(defaults or {}), **state.get("signature", {})}
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs this run {v!r}" for k, v in signature.items() if saved.get(k) != v]
    if diffs:
        raise InvalidInputError(f"checkpoint {path} belongs to another run; refusing to resume from it.\n  "
                                + "\n  ".join(diffs) + "\nUse another OUTPUT_DIR or CHECKPOINT.RESUME False.")
