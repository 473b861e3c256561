"""DSPNet (and BYOL, its n = 1 / single-DN case): online sub-networks, one shared full target, loss, EMA.

Per step: the target (the full network, an EMA of the online weights) projects both views ONCE;
each sampled online sub-network predicts those shared projections; losses are summed (a DN drawn
twice runs once, its loss counted twice).
"""
from __future__ import annotations

import collections
import contextlib
import copy
import random

import torch
import torch.nn.functional as F
from torch import nn

from dspnet_d2.dn import DNSpec, dn_set, largest_dn, smallest_dn
from dspnet_d2.families import build_supernet
from dspnet_d2.runtime.seeding import derive_seed
from dspnet_d2.slim import Supernet
from dspnet_d2.slim.ops import SlimBatchNorm1d, SlimLinear, commit_momentum_stats, configure_norms

from .config import parse_dns

__all__ = ["MLP", "OnlineNetwork", "TargetNetwork", "DSPNet", "byol_loss", "sample_subnets", "collapse_stats",
           "COLLAPSE_STATS", "build_method"]


class MLP(nn.Sequential):
    """BYOL's projector / predictor: Linear(hidden) - BN - ReLU - Linear(out).

    The first Linear is slimmable: it takes the leading ``in_features`` of its weight, so one
    projector serves every sub-network's feature width.
    """

    def __init__(self, in_features: int, hidden: int, out: int):
        super().__init__(SlimLinear(in_features, hidden), SlimBatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


class TargetNetwork(nn.Module):
    """Encoder + projector; the target branch is always the full network."""

    def __init__(self, encoder: Supernet, projector: MLP):
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


class OnlineNetwork(TargetNetwork):
    """Encoder (slimmed to the sampled DN) + projector + predictor; ``forward`` takes both views."""

    def __init__(self, encoder: Supernet, projector: MLP, predictor: MLP):
        super().__init__(encoder, projector)
        self.predictor = predictor

    def forward(self, view1: torch.Tensor, view2: torch.Tensor, with_features: bool = False):
        """Predictions ``(p1, p2)``; with ``with_features`` also the representations and projections
        ``(y1, y2, z1, z2)`` they came from (what the collapse monitor reads)."""
        # views go through separately, so each has its own batch statistics (as BYOL)
        y1, y2 = self.encoder(view1), self.encoder(view2)
        z1, z2 = self.projector(y1), self.projector(y2)
        predictions = self.predictor(z1), self.predictor(z2)
        return (predictions, (y1, y2, z1, z2)) if with_features else predictions


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalised MSE ``2 - 2 cos(p, z)``, averaged over the batch."""
    return (2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=-1)).mean()


def sample_subnets(dns: tuple[DNSpec, ...], n: int, step: int, seed: int, full_only: bool) -> list[DNSpec]:
    """Sandwich rule: smallest, n - 2 random distinct others, largest (always last).

    Seeded from (seed, step) only, so every DDP rank draws the same sub-networks.
    ``full_only`` (the warm-up epochs) or ``n == 1`` gives the full network alone. When n - 2 exceeds
    the DNs between the smallest and the largest (the paper's n = 4 on a 3-DN set), the middle draws
    repeat: each middle DN appears (n - 2) // |middle| times, the rest are drawn without replacement.
    """
    largest = largest_dn(dns)
    if full_only or n == 1:
        return [largest]
    smallest = smallest_dn(dns)
    middle = [dn for dn in dns if dn not in (smallest, largest)]
    rng = random.Random(derive_seed(seed, step))
    rounds, rest = divmod(n - 2, len(middle)) if middle else (0, 0)
    picked = middle * rounds + rng.sample(middle, rest)
    return [smallest] + sorted(picked) + [largest]


COLLAPSE_STATS = ("rep_std", "proj_std", "view_cos")


@torch.no_grad()
def collapse_stats(rep1: torch.Tensor, rep2: torch.Tensor, proj1: torch.Tensor) -> torch.Tensor:
    """``COLLAPSE_STATS`` of one sub-network: the std over the batch of the L2-normalised representation
    and projection, averaged over dimensions (about 1/sqrt(d) when spread, 0 at collapse: SimSiam's
    monitor, as solo-learn logs it), and the mean cosine between the two views' representations."""
    def spread(x):
        return F.normalize(x.float(), dim=1).std(0).mean()

    return torch.stack([spread(rep1), spread(proj1), F.cosine_similarity(rep1.float(), rep2.float()).mean()])


class DSPNet(nn.Module):
    """The method object: online network, shared target, loss and EMA update."""

    def __init__(self, dns, num_subnets: int = 4, proj_hidden: int = 4096, proj_dim: int = 256):
        super().__init__()
        self.dns = dn_set(dns)
        self.num_subnets = num_subnets
        encoder = build_supernet(self.dns)
        self.full_dn = largest_dn(self.dns)
        feature_dim = encoder.feature_dim
        self.online = OnlineNetwork(encoder, MLP(feature_dim, proj_hidden, proj_dim),
                                    MLP(proj_dim, proj_hidden, proj_dim))
        self.target = TargetNetwork(copy.deepcopy(encoder), copy.deepcopy(self.online.projector))
        self.target.requires_grad_(False)

    def sample(self, step: int, seed: int, full_only: bool) -> list[DNSpec]:
        return sample_subnets(self.dns, self.num_subnets, step, seed, full_only)

    @torch.no_grad()
    def target_projections(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-network projections of both views: computed once per step, shared by all sub-networks."""
        self.target.encoder.set_active(self.full_dn)
        projections = self.target(view1), self.target(view2)
        commit_momentum_stats(self.target)  # momentum BN: running statistics move once per step
        return projections

    def train_subnets(self, subnets: list[DNSpec], view1: torch.Tensor, view2: torch.Tensor, projections,
                      online: nn.Module | None = None, backward=torch.Tensor.backward,
                      autocast=contextlib.nullcontext, observe=None) -> torch.Tensor:
        """Forward and backward of each sampled sub-network against the shared target ``projections``:
        the gradients add up for one optimizer step. Returns one row per draw of ``subnets``: its loss,
        then its ``COLLAPSE_STATS``.

        A DN drawn k times (the repeated middle draws of ``sample_subnets``) runs once, in the order of
        its first draw, and backpropagates k times its loss: the same gradients as k identical runs, at
        1/k of their compute, and its BN running statistics move once. Its row is repeated k times, so
        the rows still sum to the step's total loss.

        ``online`` is ``self.online`` or its DDP wrapper: every backward but the last runs under
        ``no_sync``, so the sandwich's largest network (drawn last) carries the one all-reduce.
        ``backward`` may scale the loss first (AMP's GradScaler); ``autocast`` makes the forward context.
        ``observe(dn, rep1, rep2)``, if given, sees each distinct sub-network's detached representations
        once, after its backward (the online linear probe: one update per DN and step).
        """
        online = self.online if online is None else online
        counts = collections.Counter(subnets)  # in the order of first draws: the largest stays last
        rows = {}
        for i, (dn, count) in enumerate(counts.items()):
            self.online.encoder.set_active(dn)
            last = i == len(counts) - 1
            with contextlib.nullcontext() if last or not hasattr(online, "no_sync") else online.no_sync():
                with autocast():
                    predictions, (rep1, rep2, proj1, _) = online(view1, view2, with_features=True)
                    loss = self.symmetric_loss(predictions, projections)
                backward(count * loss)
            if observe is not None:
                observe(dn, rep1.detach(), rep2.detach())
            rows[dn] = torch.cat([loss.detach().float().view(1), collapse_stats(rep1, rep2, proj1)])
        return torch.stack([rows[dn] for dn in subnets])

    @staticmethod
    def symmetric_loss(predictions, projections) -> torch.Tensor:
        """BYOL loss of one sub-network, symmetrised over the views by summing both terms."""
        (p1, p2), (z1, z2) = predictions, projections
        return byol_loss(p1, z2) + byol_loss(p2, z1)

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """xi <- tau xi + (1 - tau) theta, over the target's encoder and projector parameters."""
        online = dict(self.online.named_parameters())
        pairs = [(target, online[name]) for name, target in self.target.named_parameters()]
        torch._foreach_lerp_([t for t, _ in pairs], [o for _, o in pairs], 1.0 - tau)  # one fused launch

    def set_target_bn_weight(self, weight: float | None) -> None:
        """Momentum BN in the target: weight of the batch statistics (None: plain BN)."""
        configure_norms(self.target, stat_weight=weight)

    def set_sync_bn(self, enabled: bool, momentum_bn: bool = False) -> None:
        """Cross-rank batch statistics; the target does without them under momentum BN, which
        Momentum^2 Teacher introduced to avoid that communication (each rank mixes its own batch
        statistics with the running ones)."""
        configure_norms(self.online, sync=enabled)
        configure_norms(self.target, sync=enabled and not momentum_bn)


def build_method(cfg) -> DSPNet:
    """The run's DSPNet at step 0: seeded by ``cfg.SEED`` only, so a checkpoint's config rebuilds the
    exact weights its run started from (the eval's paired "initial weights" reference)."""
    torch.manual_seed(cfg.SEED)
    return DSPNet(parse_dns(cfg.MODEL.DNS), cfg.MODEL.NUM_SUBNETS, cfg.MODEL.PROJ_HIDDEN, cfg.MODEL.PROJ_DIM)
