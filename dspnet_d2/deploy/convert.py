"""Weights to detectron2's pickle format, named as the DSPNet backbones name them (no detectron2 needed).

The detectron2 backbone wraps the DN's static torchvision network as ``bottom_up.body`` inside an
FPN, so every key is ``backbone.bottom_up.body.<torchvision key>``.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch

from ..dn import DNSpec, largest_dn
from ..families import build_static_dn, head_names
from ..weights import slice_for_dn

D2_PREFIX = "backbone.bottom_up.body."
_HEAD_PREFIXES = tuple(f"{name}." for name in head_names())  # classifiers are not part of the backbone

__all__ = ["D2_PREFIX", "dn_backbone_state", "supernet_backbone_state", "to_d2_model", "save_d2_pkl"]


def dn_backbone_state(weights: dict[str, torch.Tensor], dn: "str | DNSpec") -> dict[str, torch.Tensor]:
    """The DN's backbone weights: every key of its static network but the classifier, sliced to shape."""
    return slice_for_dn(weights, _backbone_only(build_static_dn(dn).state_dict()), dn)


def to_d2_model(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {D2_PREFIX + k: v.detach().cpu().numpy() for k, v in state.items()}


def save_d2_pkl(path: str, model: dict[str, np.ndarray], supernet: DNSpec | None = None) -> None:
    """detectron2's format: ``{"model", "__author__", "matching_heuristics"}`` (+ the supernet DN
    for a file that holds every DN, sliced at load time by ``DSPNetCheckpointer``)."""
    data = {"model": model, "__author__": "dspnet", "matching_heuristics": False}
    if supernet is not None:
        data["dspnet_supernet"] = str(supernet)
    with open(path, "wb") as f:
        pickle.dump(data, f)


def supernet_backbone_state(weights: dict[str, torch.Tensor], dns) -> tuple[dict[str, torch.Tensor], DNSpec]:
    """All DNs in one file: the supernet's weights (largest shapes), without any head."""
    return _backbone_only(weights), largest_dn(dns)


def _backbone_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
