"""BYOL on a slimmable encoder: an online network predicts the projections of a target network, the EMA
of its weights, which is always the full network (Grill et al., 2020)."""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from dspnet_d2.dn import DNSpec, largest_dn
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.families import build_supernet
from dspnet_d2.slim import Supernet
from dspnet_d2.slim.ops import commit_momentum_stats, configure_norms

from .base import MLP, Method, StepContext, TwoViewNetwork
from .registry import register_method

__all__ = ["BYOL", "TargetNetwork", "byol_loss", "tau_at", "bn_stat_weight_at"]


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalised MSE ``2 - 2 cos(p, z)``, averaged over the batch."""
    return (2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=-1)).mean()


def _cosine(step: int, total: int) -> float:
    """1 at step 0, 0 at ``total``, half a cosine in between."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(step, 0), total) / max(total, 1)))


def tau_at(step: int, total_steps: int, tau_base: float) -> float:
    """BYOL's EMA momentum: ``1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``, tau_base -> 1."""
    return 1.0 - (1.0 - tau_base) * _cosine(step, total_steps)


def bn_stat_weight_at(step: int, total_steps: int) -> float:
    """Momentum-BN weight of the batch statistics: 1 -> 0 by cosine over training."""
    return _cosine(step, total_steps)


class TargetNetwork(nn.Module):
    """Encoder + projector; the target branch is always the full network."""

    def __init__(self, encoder: Supernet, projector: nn.Module):
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))


@register_method
class BYOL(Method):
    """Online network (encoder slimmed to the trained DN, projector, predictor) and the shared full target.

    The target projects both views once a step; every trained sub-network predicts those projections.
    This class trains the full network alone; ``DSPNet`` samples sub-networks on the same machinery.
    """

    name = "byol"

    def __init__(self, dns: tuple[DNSpec, ...], proj_hidden: int = 4096, proj_dim: int = 256, seed: int = 0,
                 tau_base: float = 0.996, momentum_bn: bool = False):
        super().__init__(dns, seed)
        self.tau_base, self.momentum_bn = tau_base, momentum_bn
        encoder = build_supernet(self.dns)
        self.online = TwoViewNetwork(encoder, MLP(encoder.feature_dim, proj_hidden, proj_dim),
                                     MLP(proj_dim, proj_hidden, proj_dim))
        self.target = TargetNetwork(copy.deepcopy(encoder), copy.deepcopy(self.online.projector))
        self.target.requires_grad_(False)

    @property
    def trained(self) -> nn.Module:
        return self.online

    # -- configuration ---------------------------------------------------------------------------
    @classmethod
    def add_config(cls, cfg) -> None:
        keys = {
            "PROJ_HIDDEN": 4096,  # projector / predictor hidden width (Linear-BN-ReLU-Linear)
            "PROJ_DIM": 256,  # projection / prediction output width
            "TAU_BASE": 0.996,  # EMA momentum tau at step 0, raised to 1 by cosine over training
            # target BN mixes batch and running statistics (Momentum^2 Teacher), batch weight 1 -> 0 by cosine;
            # the target then skips SYNC_BN's cross-rank statistics, as that method does
            "MOMENTUM_BN": True,
        }
        for key, value in keys.items():
            cfg.MODEL.setdefault(key, value)

    @classmethod
    def validate(cls, cfg, dns: tuple[DNSpec, ...]) -> None:
        if largest_dn(dns) not in dns:
            raise InvalidInputError(f"DN set {cfg.MODEL.DNS} has no largest member; the full target needs one")

    @classmethod
    def from_config(cls, cfg, dns: tuple[DNSpec, ...]) -> "BYOL":
        return cls(dns, cfg.MODEL.PROJ_HIDDEN, cfg.MODEL.PROJ_DIM, cfg.SEED, cfg.MODEL.TAU_BASE, cfg.MODEL.MOMENTUM_BN)

    @classmethod
    def signature(cls, cfg) -> dict:
        return {"proj": [cfg.MODEL.PROJ_HIDDEN, cfg.MODEL.PROJ_DIM]}

    def configure_norms(self, sync: bool) -> None:
        """Cross-rank batch statistics; the target does without them under momentum BN, which
        Momentum^2 Teacher introduced to avoid that communication (each rank mixes its own batch
        statistics with the running ones)."""
        configure_norms(self.online, sync=sync)
        configure_norms(self.target, sync=sync and not self.momentum_bn)

    def checkpoint_state(self) -> dict:
        return {"online": self.online.state_dict(), "target": self.target.state_dict()}

    def load_checkpoint_state(self, state: dict) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])

    # -- a step ----------------------------------------------------------------------------------
    def shared_targets(self, views, ctx: StepContext):
        self.set_target_bn_weight(bn_stat_weight_at(ctx.step, ctx.total_steps) if self.momentum_bn else None)
        return self.target_projections(*views)

    def subnet_loss(self, views, shared, ctx: StepContext):
        predictions, (rep1, rep2, proj1, _) = ctx.network(*views, with_features=True)
        return self.symmetric_loss(predictions, shared), (rep1, rep2, proj1)

    def after_step(self, ctx: StepContext) -> None:
        tau = tau_at(ctx.step, ctx.total_steps, self.tau_base)
        self.update_target(tau)
        ctx.record["tau"] = tau

    # -- BYOL's parts ----------------------------------------------------------------------------
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
