"""Encoders to evaluate, read from a pretraining checkpoint (any DN of its supernet) or an exported DN."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fvcore.common.config import CfgNode

from dspnet_d2.weights import dn_in_source, read_source_weights, static_dn
from dspnet_d2.dn import DNSpec, dn_set
from dspnet_d2.errors import InvalidInputError

from ..checkpoint import load_checkpoint
from ..method import build_method


@dataclass
class PretrainedWeights:
    path: str
    dns: tuple[DNSpec, ...]  # the DNs it was trained for ("all")
    encoder_state: dict  # supernet (pretraining checkpoint) or static DN (exported DN) weights

    @property
    def family(self) -> str:
        return self.dns[0].family

    def select(self, dns_text: str) -> tuple[DNSpec, ...]:
        """``all`` or a comma list, each checked against this checkpoint before any work starts."""
        if dns_text.strip() == "all":
            return self.dns
        wanted = dn_set([d.strip() for d in dns_text.split(",")])
        for dn in wanted:
            self.check(dn)
        return wanted

    def check(self, dn: DNSpec) -> None:
        dn_in_source(self.path, self.dns, dn)

    def encoder(self, dn: DNSpec) -> nn.Module:
        """The static network of ``dn`` with these weights (leading slices, exactly as ``export_dn``)."""
        self.check(dn)
        return static_dn(self.encoder_state, dn)


def read_pretrained(path: str) -> PretrainedWeights:
    """Read a dspnet checkpoint; anything else fails with a clear message."""
    weights, dns = read_source_weights(path, allow_torchvision=False)
    return PretrainedWeights(path, dns, weights)


def read_initial_weights(pretrained: PretrainedWeights) -> PretrainedWeights:
    """The weights the pretraining run of ``pretrained`` started from: its supernet at step 0, rebuilt
    from the run's config (DN set, head sizes, SEED) exactly as the run built it."""
    try:
        cfg = CfgNode.load_cfg(load_checkpoint(pretrained.path)["config"])
    except (ValueError, KeyError) as err:
        raise InvalidInputError(f"INITIAL_WEIGHTS needs a pretraining checkpoint, which records its run's config; "
                                f"{pretrained.path} is not one (an exported DN holds trained weights only): "
                                f"{err}") from None
    encoder = build_method(cfg).online.encoder  # the trainer's own construction: same seed, same order
    return PretrainedWeights(f"{pretrained.path} (step 0)", pretrained.dns, encoder.state_dict())
