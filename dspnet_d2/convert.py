"""Weights to detectron2's pickle format, named as the DSPNet backbones name them (no detectron2 needed).

The detectron2 backbone wraps the DN's static torchvision network as ``bottom_up.body`` inside an
FPN, so every key is ``backbone.bottom_up.body.<torchvision key>``.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch

from .dn import DNSpec, dn_set, largest_dn, parse_dn
from .errors import InvalidInputError
from .export import slice_state_dict
from .models import build_static_dn

D2_PREFIX = "backbone.bottom_up.body."
PRETRAIN_FORMAT = "dspnet-pretrain-v1"  # pretraining checkpoints (pretrain/engine.py)
DN_FORMAT = "dspnet-dn-v1"  # one exported DN (OUTPUT_DIR/export/<dn>.pth)
_HEAD_PREFIXES = ("classifier.", "fc.")  # classification heads are not part of the backbone

__all__ = ["D2_PREFIX", "PRETRAIN_FORMAT", "DN_FORMAT", "read_source_weights", "read_source", "static_dn",
           "dn_backbone_state", "supernet_backbone_state", "to_d2_model", "save_d2_pkl"]


def read_source_weights(path: str, allow_torchvision: bool = True
                        ) -> tuple[dict[str, torch.Tensor], tuple[DNSpec, ...] | None]:
    """Encoder weights (torchvision key names) and the DNs they cover, from a pretraining checkpoint
    (the online supernet), an exported DN, or (``allow_torchvision``) a torchvision state_dict
    (``mobilenet_v3_large``, ``resnet18/34``: DNs unknown, returned as None)."""
    weights, dns, _ = read_source(path, allow_torchvision)
    return weights, dns


def read_source(path: str, allow_torchvision: bool = True
                ) -> tuple[dict[str, torch.Tensor], tuple[DNSpec, ...] | None, str]:
    """``read_source_weights`` and the file's format: ``PRETRAIN_FORMAT`` (whose BN buffers every DN
    shares), ``DN_FORMAT`` or ``"torchvision"``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, foreign objects, truncated files
        raise InvalidInputError(f"{path} is not a dspnet checkpoint: {err}") from None
    kind = state.get("format") if isinstance(state, dict) else None
    if kind == PRETRAIN_FORMAT:
        prefix = "encoder."
        weights = {k[len(prefix):]: v for k, v in state["online"].items() if k.startswith(prefix)}
        return weights, dn_set(state["signature"]["dns"]), kind
    if kind == DN_FORMAT:
        return state["state_dict"], (parse_dn(state["dn"]),), kind
    if allow_torchvision and isinstance(state, dict):
        state = state.get("state_dict", state)
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return dict(state), None, "torchvision"
    expected = f"{PRETRAIN_FORMAT!r} or {DN_FORMAT!r}" + (" or a torchvision state_dict" if allow_torchvision else "")
    raise InvalidInputError(f"{path} is not a dspnet checkpoint (format {kind!r}; expected {expected})")


def dn_backbone_state(weights: dict[str, torch.Tensor], dn: "str | DNSpec") -> dict[str, torch.Tensor]:
    """The DN's backbone weights: every key of its static network but the classifier, sliced to shape."""
    return _slice_for(weights, _backbone_only(build_static_dn(dn).state_dict()), dn)


def _slice_for(weights: dict[str, torch.Tensor], target: dict[str, torch.Tensor], dn) -> dict[str, torch.Tensor]:
    try:
        return slice_state_dict(weights, target)
    except (KeyError, ValueError) as err:  # a torchvision file of another architecture than the DN's
        raise InvalidInputError(f"the weights do not hold DN {dn}: {err.args[0]}") from None


def static_dn(weights: dict[str, torch.Tensor], dn: "str | DNSpec") -> torch.nn.Module:
    """The DN's plain network (no classifier) holding the leading slices of ``weights``, as ``export_dn``."""
    model = build_static_dn(dn)
    model.load_state_dict(_slice_for(weights, model.state_dict(), dn), strict=True)
    return model


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
