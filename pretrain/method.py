"""DSPNet (and BYOL, its n = 1 / single-DN case): online sub-networks, one shared full target, loss, EMA.

Per step: the target (the full network, an EMA of the online weights) projects both views ONCE;
each sampled online sub-network predicts those shared projections; losses are summed.
"""
from __future__ import annotations

import copy
import random

import torch
import torch.nn.functional as F
from torch import nn

from dspnet_d2.dn import DNSpec, dn_set, largest_dn, smallest_dn
from dspnet_d2.slim import Supernet, build_supernet
from dspnet_d2.slim.ops import SlimBatchNorm1d, SlimLinear, commit_momentum_stats, configure_norms

__all__ = ["MLP", "OnlineNetwork", "TargetNetwork", "DSPNet", "byol_loss", "sample_subnets"]


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
    rng = random.Random(seed * 1_000_003 + step)
    rounds, rest = divmod(n - 2, len(middle)) if middle else (0, 0)
    picked = middle * rounds + rng.sample(middle, rest)
    return [smallest] + sorted(picked) + [largest]


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
