"""``Method``: what a self-supervised method is to the engine, and the heads the methods share.

A method owns its networks, its loss, its per-step updates besides the optimizer's (an EMA target) and
what it checkpoints; the engine (``pretrain.engine.trainer``) owns the data, the optimizer and its
schedule, DDP, checkpoints, stops, the monitor and the export, and names no method. Each step the engine
hands the method the normalised views; the method trains the sub-networks it chooses (``subnets``), each
with one forward and backward (``subnet_loss``), and the engine takes one optimizer step on their summed
gradients.
"""
from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dspnet_d2.dn import DNSpec, largest_dn
from dspnet_d2.slim import Supernet
from dspnet_d2.slim.ops import SlimBatchNorm1d, SlimLinear, configure_norms

from ..data.augment import BYOLViews

__all__ = ["Method", "StepContext", "MLP", "TwoViewNetwork", "collapse_stats", "COLLAPSE_STATS"]

COLLAPSE_STATS = ("rep_std", "proj_std", "view_cos")


@torch.no_grad()
def collapse_stats(rep1: torch.Tensor, rep2: torch.Tensor, proj1: torch.Tensor) -> torch.Tensor:
    """``COLLAPSE_STATS`` of one sub-network: the std over the batch of the L2-normalised representation
    and projection, averaged over dimensions (about 1/sqrt(d) when spread, 0 at collapse: SimSiam's
    monitor, as solo-learn logs it), and the mean cosine between the two views' representations."""
    def spread(x):
        return F.normalize(x.float(), dim=1).std(0).mean()

    return torch.stack([spread(rep1), spread(proj1), F.cosine_similarity(rep1.float(), rep2.float()).mean()])


class MLP(nn.Sequential):
    """BYOL's projector / predictor: Linear(hidden) - BN - ReLU - Linear(out).

    The first Linear is slimmable: it takes the leading ``in_features`` of its weight, so one
    projector serves every sub-network's feature width.
    """

    def __init__(self, in_features: int, hidden: int, out: int):
        super().__init__(SlimLinear(in_features, hidden), SlimBatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


class TwoViewNetwork(nn.Module):
    """Encoder (slimmed to the active DN) + projector + predictor; ``forward`` takes both views."""

    def __init__(self, encoder: Supernet, projector: nn.Module, predictor: nn.Module):
        super().__init__()
        self.encoder, self.projector, self.predictor = encoder, projector, predictor

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, with_features: bool = False):
        """Predictions ``(p1, p2)``; with ``with_features`` also the representations and projections
        ``(y1, y2, z1, z2)`` they came from (what the collapse monitor reads)."""
        # views go through separately, so each has its own batch statistics (as BYOL)
        y1, y2 = self.encoder(view1), self.encoder(view2)
        z1, z2 = self.projector(y1), self.projector(y2)
        predictions = self.predictor(z1), self.predictor(z2)
        return (predictions, (y1, y2, z1, z2)) if with_features else predictions


@dataclass
class StepContext:
    """What the engine tells a method about the step it trains."""

    step: int
    epoch: int
    total_steps: int
    network: nn.Module  # ``Method.trained`` or its DDP wrapper: the forward to call
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward  # may scale the loss first (GradScaler)
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    # observe(dn, rep1, rep2): each distinct sub-network's detached representations, once a step (the probe)
    observe: Callable | None = None
    record: dict = field(default_factory=dict)  # values the method adds to the step's metric record


class Method(nn.Module):
    """The base of every pretraining method; a subclass is registered under ``name`` (``MODEL.METHOD``).

    A subclass builds its networks in ``__init__``, provides ``trained`` (the module the optimizer and DDP
    see, whose ``encoder`` is the slimmable supernet) and implements ``from_config`` and ``subnet_loss``.
    It may override ``add_config`` / ``validate`` / ``signature`` (its config keys), ``make_views`` (its
    augmentation), ``subnets`` (the DNs a step trains: the full network by default), ``shared_targets``
    (work done once a step for all sub-networks), ``after_step`` (updates after the optimizer's),
    ``checkpoint_state`` / ``load_checkpoint_state`` / ``encoder_location`` and ``configure_norms``.
    """

    name = ""
    # the columns of ``train_step``'s rows; each is logged per DN as "<name>/<dn>"
    row_names: tuple[str, ...] = ("loss",) + COLLAPSE_STATS
    encoder_location = ("online", "encoder.")  # (checkpoint entry, key prefix) of the encoder's weights
    trained: nn.Module

    def __init__(self, dns: tuple[DNSpec, ...], seed: int = 0):
        super().__init__()
        self.dns, self.seed = dns, seed
        self.full_dn = largest_dn(dns)

    # -- configuration ---------------------------------------------------------------------------
    @classmethod
    def add_config(cls, cfg) -> None:
        """Add this method's own keys (each with a comment) to the pretraining defaults; keys another
        method added already are left as they are."""

    @classmethod
    def validate(cls, cfg, dns: tuple[DNSpec, ...]) -> None:
        """Raise ``InvalidInputError`` on values this method cannot run with."""

    @classmethod
    def from_config(cls, cfg, dns: tuple[DNSpec, ...]) -> "Method":
        raise NotImplementedError

    @classmethod
    def make_views(cls, cfg) -> BYOLViews:
        """The augmentation that makes the two views of a training image: BYOL's, set by ``DATA.*``."""
        data = cfg.DATA
        return BYOLViews(data.RESOLUTION, data.CROP_SCALE, data.BLUR_PROB, data.SOLARIZE_PROB, data.COLOR_JITTER,
                         data.COLOR_JITTER_PROB, data.GRAYSCALE_PROB, data.BLUR_SIGMA, backend=data.AUGMENT_BACKEND)

    @classmethod
    def signature(cls, cfg) -> dict:
        """What a checkpoint of this method must share with a run to be resumed by it, beyond the engine's."""
        return {}

    # -- networks --------------------------------------------------------------------------------
    @property
    def encoder(self) -> Supernet:
        """The slimmable encoder whose DNs are monitored, probed and exported."""
        return self.trained.encoder

    def optimizer_modules(self) -> list[nn.Module]:
        """The modules whose parameters the optimizer trains."""
        return [self.trained]

    def configure_norms(self, sync: bool) -> None:
        """Cross-rank batch statistics (``sync``) where this method wants them."""
        configure_norms(self.trained, sync=sync)

    def checkpoint_state(self) -> dict:
        """The method's tensors in a checkpoint; ``encoder_location`` says where its encoder is."""
        return {"online": self.trained.state_dict()}

    def load_checkpoint_state(self, state: dict) -> None:
        self.trained.load_state_dict(state["online"])

    # -- a step ----------------------------------------------------------------------------------
    def subnets(self, ctx: StepContext) -> list[DNSpec]:
        """The sub-networks this step trains, one entry per draw (a DN drawn twice counts twice)."""
        return [self.full_dn]

    def shared_targets(self, views: tuple[torch.Tensor, ...], ctx: StepContext):
        """Computed once a step, before any sub-network, and passed to every ``subnet_loss``."""
        return None

    def subnet_loss(self, views: tuple[torch.Tensor, ...], shared, ctx: StepContext):
        """Forward of the active sub-network through ``ctx.network``: ``(loss, (rep1, rep2, proj1))``."""
        raise NotImplementedError

    def after_step(self, ctx: StepContext) -> None:
        """After the optimizer's step (e.g. the EMA target); may add values to ``ctx.record``."""

    def train_step(self, views: tuple[torch.Tensor, ...], ctx: StepContext) -> tuple[torch.Tensor, list[DNSpec]]:
        """Forward and backward of each sampled sub-network; the gradients add up for one optimizer step.
        Returns one row per draw (``row_names``) and the draws.

        A DN drawn k times runs once, in the order of its first draw, and backpropagates k times its loss:
        the same gradients as k identical runs at 1/k of their compute, its BN running statistics moved
        once. Its row is repeated k times, so the rows still sum to the step's total loss. Every backward
        but the last runs under DDP's ``no_sync``, so the last draw carries the one all-reduce.
        """
        with ctx.autocast():
            shared = self.shared_targets(views, ctx)
        subnets = self.subnets(ctx)
        network = ctx.network
        counts = collections.Counter(subnets)  # in the order of first draws: the last stays last
        rows = {}
        for i, (dn, count) in enumerate(counts.items()):
            self.encoder.set_active(dn)
            last = i == len(counts) - 1
            with contextlib.nullcontext() if last or not hasattr(network, "no_sync") else network.no_sync():
                with ctx.autocast():
                    loss, (rep1, rep2, proj1) = self.subnet_loss(views, shared, ctx)
                ctx.backward(count * loss)
            if ctx.observe is not None:
                ctx.observe(dn, rep1.detach(), rep2.detach())
            rows[dn] = torch.cat([loss.detach().float().view(1), collapse_stats(rep1, rep2, proj1)])
        return torch.stack([rows[dn] for dn in subnets]), subnets
