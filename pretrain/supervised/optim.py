"""The supervised recipes' optimizers (torch's RMSprop / SGD) and learning-rate schedules."""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["build_optimizer", "supervised_lr_at"]


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """Weight decay on weights (ndim > 1); biases and norm parameters decay only with
    ``SOLVER.WEIGHT_DECAY_NORM_AND_BIAS`` (torchvision's reference), else not (timm's default filter)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    rest_decay = cfg.SOLVER.WEIGHT_DECAY if cfg.SOLVER.WEIGHT_DECAY_NORM_AND_BIAS else 0.0
    groups = [{"params": decay, "weight_decay": cfg.SOLVER.WEIGHT_DECAY}, {"params": rest, "weight_decay": rest_decay}]
    if cfg.SOLVER.OPTIMIZER == "rmsprop":
        return torch.optim.RMSprop(groups, lr=0.0, alpha=cfg.SOLVER.RMSPROP_ALPHA, eps=cfg.SOLVER.RMSPROP_EPS,
                                   momentum=cfg.SOLVER.MOMENTUM)
    return torch.optim.SGD(groups, lr=0.0, momentum=cfg.SOLVER.MOMENTUM)


def supervised_lr_at(step: int, steps_per_epoch: int, cfg) -> float:
    """Linear warm-up from WARMUP_LR over WARMUP_EPOCHS (per step), then the schedule.

    "step" decays by DECAY_RATE every DECAY_EPOCHS counted in whole epochs from epoch 0 (timm's step
    scheduler; with DECAY_EPOCHS 30 and DECAY_RATE 0.1, torchvision's StepLR); "cosine" goes to 0 over the
    epochs after the warm-up.
    """
    solver = cfg.SOLVER
    peak = solver.BASE_LR * solver.BATCH_SIZE / solver.BASE_BATCH
    epoch = step / steps_per_epoch
    if epoch < solver.WARMUP_EPOCHS:
        return solver.WARMUP_LR + (peak - solver.WARMUP_LR) * epoch / solver.WARMUP_EPOCHS
    if solver.SCHEDULE == "step":
        return peak * solver.DECAY_RATE ** math.floor(math.floor(epoch) / solver.DECAY_EPOCHS)
    total = (solver.EPOCHS - solver.WARMUP_EPOCHS) * steps_per_epoch
    done = step - solver.WARMUP_EPOCHS * steps_per_epoch
    return peak * 0.5 * (1 + math.cos(math.pi * min(done, total) / max(total, 1)))
