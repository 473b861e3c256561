"""Classifier on a DN encoder: linear probe (frozen encoder) or fine-tuning, resumable per epoch."""
from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dspnet_d2.runtime.seeding import rng_state, set_rng_state
from dspnet_d2.runtime.stopping import StopProtocol
from dspnet_d2.weights import save_atomic

from ..engine.distributed import is_main_process, world_size
from ..monitor.features import evaluate_classifier


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
                     desc: str = "train", stops: StopProtocol | None = None) -> dict[str, float]:
    """SGD with per-step schedule on the batches of ``train_loader`` (its sampler a ``ResumableSampler``);
    resumes from ``state_path``, written atomically at every epoch's end and at the step a stop signal ends
    (``stops``; then ``Preempted`` is raised: the same command continues from that step)."""
    groups = [{"params": model.head.parameters(), "lr": cfg.TRAIN.LR, "base_lr": cfg.TRAIN.LR}]
    if not model.frozen:
        groups.append({"params": model.encoder.parameters(), "lr": cfg.TRAIN.BACKBONE_LR,
                       "base_lr": cfg.TRAIN.BACKBONE_LR})
    optimizer = torch.optim.SGD(groups, momentum=cfg.TRAIN.MOMENTUM, weight_decay=cfg.TRAIN.WEIGHT_DECAY)
    start_epoch, start_batch = 0, 0
    if os.path.exists(state_path):
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, start_batch = state["epoch"], state.get("batch", 0)
        if "rng" in state:
            set_rng_state(state["rng"])
    world = world_size()
    trained = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
    main = is_main_process()
    criterion = nn.CrossEntropyLoss()
    sampler = train_loader.sampler
    steps = sampler.steps_per_epoch

    def save(epoch: int, batch: int) -> None:
        if main:
            save_atomic({"epoch": epoch, "batch": batch, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "rng": rng_state()}, state_path)
        if world > 1:
            dist.barrier()

    for epoch in range(start_epoch, cfg.TRAIN.EPOCHS):
        first = start_batch if epoch == start_epoch else 0
        sampler.set_epoch(epoch, first)
        trained.train()
        bar = tqdm(train_loader, desc=f"{desc} epoch {epoch + 1}/{cfg.TRAIN.EPOCHS}", disable=not main, leave=False,
                   initial=first, total=steps)
        for i, (x, y, _) in enumerate(bar, start=first):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * _lr_factor(cfg, epoch + i / steps)
            loss = criterion(trained(x.to(device, non_blocking=True)), y.to(device, non_blocking=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if stops is not None:
                stops.check(epoch * steps + i + 1, lambda: save(*((epoch + 1, 0) if i + 1 == steps else (epoch, i + 1))),
                            where=f"{desc} step {i + 1} of epoch {epoch + 1}")
        save(epoch + 1, 0)
    return evaluate_classifier(model, val_loader, device)
