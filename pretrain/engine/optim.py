"""LARS and the learning-rate schedule (a method's own schedules, e.g. BYOL's EMA tau, are in its file)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from dspnet_d2.errors import InvalidInputError

__all__ = ["LARS", "lars_param_groups", "lr_at"]


class LARS(torch.optim.Optimizer):
    """LARS as in BYOL: weight decay is added to the gradient *before* the trust ratio
    ``eta * ||w|| / ||g + wd w||``; groups with ``lars_exclude=True`` (biases and norm parameters)
    get neither weight decay nor adaptation.

    torch has no LARS, and torchvision/fvcore offer none; this one keeps everything on the device
    (``torch.where`` instead of Python branches) so a step never synchronises with the host, and updates
    each group with multi-tensor kernels.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001):
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise InvalidInputError(f"invalid LARS hyper-parameters lr={lr} momentum={momentum} wd={weight_decay} "
                                    f"eta={eta}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                                      lars_exclude=False))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if not group["lars_exclude"]:
                # torch's multi-tensor (_foreach) kernels: a handful of launches per group instead of ~8 per
                # parameter, what makes torch's own SGD/Adam fast on GPU
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                w_norms = torch.stack(torch._foreach_norm(params))
                g_norms = torch.stack(torch._foreach_norm(grads))
                trust = torch.where((w_norms > 0) & (g_norms > 0), group["eta"] * w_norms / g_norms,
                                    torch.ones_like(w_norms))
                torch._foreach_mul_(grads, list(trust.unbind()))
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


def lars_param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Two groups: weights (ndim > 1: decay + adaptation) and biases / norm parameters (neither)."""
    weights, excluded = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (weights if p.ndim > 1 else excluded).append(p)
    return [{"params": weights, "weight_decay": weight_decay, "lars_exclude": False},
            {"params": excluded, "weight_decay": 0.0, "lars_exclude": True}]


def _cosine(step: int, total: int) -> float:
    """1 at step 0, 0 at ``total``, half a cosine in between."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(step, 0), total) / max(total, 1)))


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warm-up from 0 to ``peak_lr`` over ``warmup_steps``, then cosine decay to 0."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    return peak_lr * _cosine(step - warmup_steps, total_steps - warmup_steps)
