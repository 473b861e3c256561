"""Encoders to evaluate, read from a pretraining checkpoint (any DN of its supernet) or an exported DN."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dspnet_d2.dn import DNSpec, dn_set, parse_dn
from dspnet_d2.export import export_dn
from dspnet_d2.models import build_static_dn
from dspnet_d2.slim import build_supernet

from ..checkpoint import FORMAT as PRETRAIN_FORMAT

DN_FORMAT = "dspnet-dn-v1"


@dataclass
class PretrainedWeights:
    path: str
    dns: tuple[DNSpec, ...]  # the DNs it was trained for ("all")
    encoder_state: dict  # supernet (pretraining checkpoint) or static DN (exported DN) weights
    exported: bool

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
        if dn.family != self.family:
            raise ValueError(f"DN {dn} is not of this checkpoint's family {self.family} ({self.path}); "
                             f"its DNs: {', '.join(map(str, self.dns))}")
        top = self.dns[0] if self.exported else build_supernet(self.dns).max_dn
        if (self.exported and dn != top) or not dn.fits_in(top):
            raise ValueError(f"DN {dn} is not in {self.path}, which holds {', '.join(map(str, self.dns))}")

    def encoder(self, dn: DNSpec) -> nn.Module:
        """The static network of ``dn`` with these weights (pooled features out)."""
        self.check(dn)
        if self.exported:
            model = build_static_dn(dn)
            model.load_state_dict(self.encoder_state, strict=True)
            return model
        supernet = build_supernet(self.dns)
        supernet.load_state_dict(self.encoder_state, strict=True)
        return export_dn(supernet, dn)


def read_pretrained(path: str) -> PretrainedWeights:
    """Read a dspnet checkpoint; anything else fails with a clear message."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, foreign objects, truncated files
        raise ValueError(f"{path} is not a dspnet checkpoint: {err}") from None
    kind = state.get("format") if isinstance(state, dict) else None
    if kind == PRETRAIN_FORMAT:
        prefix = "encoder."
        encoder = {k[len(prefix):]: v for k, v in state["online"].items() if k.startswith(prefix)}
        return PretrainedWeights(path, dn_set(state["signature"]["dns"]), encoder, exported=False)
    if kind == DN_FORMAT:
        return PretrainedWeights(path, (parse_dn(state["dn"]),), state["state_dict"], exported=True)
    raise ValueError(f"{path} is not a dspnet checkpoint (format {kind!r}; expected {PRETRAIN_FORMAT!r} "
                     f"or {DN_FORMAT!r})")
