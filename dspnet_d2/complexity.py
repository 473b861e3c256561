"""Parameters and FLOPs of a DN (fvcore's counting: one fused multiply-add = one FLOP); the table of a DN set is
``dspnet_d2.dn_table``."""
from __future__ import annotations

import torch
from torch import nn

from .dn import DNSpec
from .families import build_static_dn

__all__ = ["count_params", "count_flops", "dn_complexity"]


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, resolution: int) -> int:
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        analysis = FlopCountAnalysis(model, torch.zeros(1, 3, resolution, resolution))
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analysis.total())
    finally:
        model.train(was_training)


def dn_complexity(dn: DNSpec, resolution: int | None = None, num_classes: int | None = None) -> dict:
    """``{"dn", "resolution", "params", "flops"}`` of the static network of ``dn``.

    ``num_classes=None`` counts the feature extractor only (what is transferred); ``1000`` adds the
    ImageNet classifier, matching torchvision's published model sizes.
    """
    resolution = resolution or dn.info.eval_resolution
    model = build_static_dn(dn, num_classes=num_classes)
    return {"dn": str(dn), "resolution": resolution, "params": count_params(model),
            "flops": count_flops(model, resolution)}
