"""DSPNet: BYOL whose online network is a sub-network sampled each step by the sandwich rule, against the
one full target shared by all of them; the losses of the sampled sub-networks are summed."""
from __future__ import annotations

import random

from dspnet_d2.dn import DNSpec, largest_dn, smallest_dn
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.runtime.seeding import derive_seed

from .base import StepContext
from .byol import BYOL
from .registry import register_method

__all__ = ["DSPNet", "sample_subnets"]


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


@register_method
class DSPNet(BYOL):
    """BYOL's networks and target; each step trains ``num_subnets`` sub-networks (the sandwich rule), after
    ``full_only_epochs`` epochs of the full network alone. ``num_subnets=1`` is BYOL."""

    name = "dspnet"

    def __init__(self, dns: tuple[DNSpec, ...], num_subnets: int = 4, proj_hidden: int = 4096, proj_dim: int = 256,
                 seed: int = 0, tau_base: float = 0.996, momentum_bn: bool = False, full_only_epochs: int = 0):
        super().__init__(dns, proj_hidden, proj_dim, seed, tau_base, momentum_bn)
        self.num_subnets, self.full_only_epochs = num_subnets, full_only_epochs

    @classmethod
    def add_config(cls, cfg) -> None:
        super().add_config(cfg)
        # n: sub-networks per step (sandwich rule: smallest + largest + n-2 random); 1 = BYOL
        cfg.MODEL.setdefault("NUM_SUBNETS", 4)
        cfg.MODEL.setdefault("FULL_ONLY_EPOCHS", 10)  # first epochs train the full network only

    @classmethod
    def validate(cls, cfg, dns: tuple[DNSpec, ...]) -> None:
        super().validate(cfg, dns)
        n, text = cfg.MODEL.NUM_SUBNETS, cfg.MODEL.DNS
        if n < 1:
            raise InvalidInputError(f"MODEL.NUM_SUBNETS={n} must be >= 1")
        if n >= 2 and len(dns) < 2:
            raise InvalidInputError(f"MODEL.NUM_SUBNETS={n} must be 1 for the single DN {text} (BYOL)")
        if n > 2 and len(dns) < 3:  # n > |DNs| repeats the middle draws, which needs a middle DN
            raise InvalidInputError(f"MODEL.NUM_SUBNETS={n} needs a DN between the smallest and the largest of "
                                    f"{text}; use 1 or 2")
        if n >= 2:
            smallest_dn(dns)  # raises if the set has no smallest member

    @classmethod
    def from_config(cls, cfg, dns: tuple[DNSpec, ...]) -> "DSPNet":
        model = cfg.MODEL
        return cls(dns, model.NUM_SUBNETS, model.PROJ_HIDDEN, model.PROJ_DIM, cfg.SEED, model.TAU_BASE,
                   model.MOMENTUM_BN, model.FULL_ONLY_EPOCHS)

    @classmethod
    def signature(cls, cfg) -> dict:
        return {"num_subnets": cfg.MODEL.NUM_SUBNETS, **super().signature(cfg)}

    def subnets(self, ctx: StepContext) -> list[DNSpec]:
        return sample_subnets(self.dns, self.num_subnets, ctx.step, self.seed,
                              full_only=ctx.epoch < self.full_only_epochs)
