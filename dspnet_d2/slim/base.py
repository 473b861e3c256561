"""What every slimmable supernet shares: the active DN, multi-scale features and the pooled vector."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..dn import DNSpec

FEATURE_NAMES = ("res2", "res3", "res4", "res5")
FEATURE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


class Supernet(nn.Module):
    """Base of the slimmable supernets.

    Subclasses build their layers at the size of ``max_dn`` and implement ``channels(dn)`` (the
    channel counts of a DN, keyed by feature name plus ``"pooled"``), ``_apply_dn(dn)`` (set every
    slim layer's active width/depth) and ``_stages()`` (the four stride-4/8/16/32 stages, in order); with ``num_classes`` also
    ``_classify(pooled)``.
    """

    family: str = ""

    def __init__(self, max_dn: DNSpec, num_classes: int | None):
        super().__init__()
        if max_dn.family != self.family:
            raise ValueError(f"{type(self).__name__} holds {self.family} DNs, got {max_dn}")
        self.max_dn = max_dn
        self.num_classes = num_classes
        self._active = max_dn

    # -- the active DN -------------------------------------------------------------------------
    @property
    def active(self) -> DNSpec:
        return self._active

    def check_dn(self, dn: DNSpec) -> DNSpec:
        """``dn``, checked to be a sub-network of this supernet."""
        if not dn.fits_in(self.max_dn):
            raise ValueError(f"DN {dn} is not a sub-network of this supernet ({self.max_dn})")
        return dn

    def set_active(self, dn: DNSpec) -> DNSpec:
        """Slim the supernet to ``dn`` in place; every later forward runs that DN."""
        dn = self.check_dn(dn)
        self._apply_dn(dn)
        self._active = dn
        return dn

    @property
    def feature_dim(self) -> int:
        """Width of the pooled feature vector of the active DN (the projector's input width)."""
        return self.channels(self._active)["pooled"]

    def feature_channels(self, dn: DNSpec | None = None) -> dict[str, int]:
        """Channels of res2..res5 for ``dn`` (default: the active DN)."""
        channels = self.channels(self.check_dn(dn) if dn is not None else self._active)
        return {name: channels[name] for name in FEATURE_NAMES}

    # -- forward ---------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        """Multi-scale features of the active DN: res2..res5 at strides 4/8/16/32."""
        out = OrderedDict()
        for name, stage in zip(FEATURE_NAMES, self._stages()):
            x = stage(x)
            out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector of the active DN (logits if the supernet has a classifier)."""
        for stage in self._stages():
            x = stage(x)
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self._classify(x) if self.num_classes is not None else x

    # -- to implement ------------------------------------------------------------------------
    def channels(self, dn: DNSpec) -> dict[str, int]:
        raise NotImplementedError

    def _apply_dn(self, dn: DNSpec) -> None:
        raise NotImplementedError

    def _stages(self):
        raise NotImplementedError

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def init_like_torchvision(module: nn.Module, linear_std: float | None = 0.01) -> None:
    """torchvision's initialisation: Kaiming fan-out convs, unit BN, N(0, 0.01) linears."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)
