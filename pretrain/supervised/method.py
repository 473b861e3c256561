"""Slimmable supervised training (US-Nets' sandwich rule + inplace distillation) and its starting weights."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from dspnet_d2.dn import DNSpec
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.families import get_family
from dspnet_d2.slim import Supernet
from dspnet_d2.weights import DN_FORMAT, PRETRAIN_FORMAT, read_weights, slice_for_dn

from ..methods.dspnet import sample_subnets

__all__ = ["sandwich_order", "distillation_loss", "train_subnets", "load_init", "INIT_SERIES"]

INIT_SERIES = {"none": "random init", "dspnet": "DSPNet init", "byol": "BYOL init"}


def sandwich_order(dns: tuple[DNSpec, ...], n: int, step: int, seed: int, full_only: bool = False) -> list[DNSpec]:
    """The pretraining's sandwich draw, largest first: its predictions are the others' soft targets."""
    subnets = sample_subnets(dns, n, step, seed, full_only)
    return subnets[-1:] + subnets[:-1]


def distillation_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy ``-sum_c p_teacher(c) log p_student(c)``, averaged over the batch (US-Nets)."""
    return -(teacher_probs * F.log_softmax(student_logits.float(), dim=1)).sum(1).mean()


def train_subnets(model: Supernet, subnets: list[DNSpec], images: torch.Tensor, labels: torch.Tensor,
                  label_smoothing: float, wrapped: nn.Module | None = None, backward=torch.Tensor.backward,
                  autocast=contextlib.nullcontext) -> torch.Tensor:
    """Forward and backward of each sub-network (largest first): the largest learns from the labels, every
    other one from the largest's detached soft predictions; gradients add up for one optimizer step.

    ``wrapped`` is ``model`` or its DDP wrapper: every backward but the last runs under ``no_sync``, so the
    one all-reduce carries the summed gradients. Returns one row per sub-network: loss, batch top-1 (%).
    """
    wrapped = model if wrapped is None else wrapped
    rows, teacher = [], None
    for i, dn in enumerate(subnets):
        model.set_active(dn)
        last = i == len(subnets) - 1
        with contextlib.nullcontext() if last or not hasattr(wrapped, "no_sync") else wrapped.no_sync():
            with autocast():
                logits = wrapped(images)
            if teacher is None:
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
                teacher = F.softmax(logits.detach().float(), dim=1)
            else:
                loss = distillation_loss(logits, teacher)
            backward(loss)
        top1 = (logits.detach().argmax(1) == labels).float().mean() * 100
        rows.append(torch.stack([loss.detach().float(), top1]))
    return torch.stack(rows)


def load_init(model: Supernet, init: str) -> str:
    """Load ``init``'s encoder weights into ``model`` (the classifier stays fresh); returns the series name.

    A DSPNet pretraining checkpoint gives every DN; a single-network source (a BYOL checkpoint, an exported
    DN) must be the full-width network of ``model``, which the other DNs then slice (BYOL+S-Net).
    """
    if init.strip().lower() == "none":
        return INIT_SERIES["none"]
    source = read_weights(init)
    weights, dns, kind = source.weights, source.dns, source.kind
    if kind not in (PRETRAIN_FORMAT, DN_FORMAT):
        raise InvalidInputError(f"INIT {init} is a {kind} file; give a pretraining checkpoint or an exported DN")
    full = model.max_dn
    head = get_family(full.family).head + "."
    if len(dns) == 1 and dns[0] != full:
        raise InvalidInputError(f"INIT {init} holds the single network {dns[0]}; a single-network start (BYOL+S-Net) "
                                f"must be the full network {full} of MODEL.DNS")
    try:  # slicing the full single network into every DN is the BYOL+S-Net start itself
        source.dn(full, slice_single=True)
    except InvalidInputError:
        raise InvalidInputError(f"INIT {init} holds {', '.join(map(str, dns))}, which does not contain {full}") from None
    target = {k: v for k, v in model.state_dict().items() if not k.startswith(head)}
    model.load_state_dict(slice_for_dn(weights, target, full), strict=False)
    return INIT_SERIES["dspnet" if kind == PRETRAIN_FORMAT and len(dns) > 1 else "byol"]
