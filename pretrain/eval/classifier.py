"""Classifier on a DN encoder: linear probe (frozen encoder) or fine-tuning, resumable per epoch."""
from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dspnet_d2.weights import save_atomic

from ..distributed import is_main_process, world_size
from ..features import evaluate_classifier


class Classifier(nn.Module):
    """Encoder (pooled features) + optional BN (no affine) + Linear.

    With ``frozen=True`` the encoder stays in eval mode (neither weights nor BN statistics change).
    """

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int, head_bn: bool, frozen: bool):
        super().__init__()
        self.encoder, self.frozen = encoder, frozen
        norm = [nn.BatchNorm1d(feature_dim, affine=False)] if head_bn else []
        self.head = nn.Sequential(*norm, nn.Linear(feature_dim, num_classes))
        nn.init.normal_(self.head[-1].weight, std=0.01)
        nn.init.zeros_(self.head[-1].bias)
        if frozen:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                features = self.encoder(x)
        else:
            features = self.encoder(x)
        return self.head(features)


def _lr_factor(cfg, progress: float) -> float:
    """Multiplier of the base lrs at ``progress`` epochs (fractional)."""
    if cfg.TRAIN.SCHEDULE == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress / cfg.TRAIN.EPOCHS))
    return cfg.TRAIN.GAMMA ** sum(progress >= e for e in cfg.TRAIN.STEP_EPOCHS)


def train_classifier(model: Classifier, train_loader, val_loader, cfg, device: torch.device, state_path: str,
                     desc: str = "train") -> dict[str, float]:
    """SGD with per-step schedule; resumes from ``state_path`` (written atomically every epoch)."""
    groups = [{"params": model.head.parameters(), "lr": cfg.TRAIN.LR, "base_lr": cfg.TRAIN.LR}]
    if not model.frozen:
        groups.append({"params": model.encoder.parameters(), "lr": cfg.TRAIN.BACKBONE_LR,
                       "base_lr": cfg.TRAIN.BACKBONE_LR})
    optimizer = torch.optim.SGD(groups, momentum=cfg.TRAIN.MOMENTUM, weight_decay=cfg.TRAIN.WEIGHT_DECAY)
    start_epoch = 0
    if os.path.exists(state_path):
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
    world = world_size()
    trained = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
    main = is_main_process()
    criterion = nn.CrossEntropyLoss()
    steps = len(train_loader)
    for epoch in range(start_epoch, cfg.TRAIN.EPOCHS):
        if hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        trained.train()
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch + 1}/{cfg.TRAIN.EPOCHS}", disable=not main, leave=False)
        for i, (x, y, _) in enumerate(bar):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(cfg, epoch + i / steps)
            loss = criterion(trained(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if main:
            save_atomic({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict()},
                        state_path)
        if world > 1:
            dist.barrier()
    return evaluate_classifier(model, val_loader, device)
