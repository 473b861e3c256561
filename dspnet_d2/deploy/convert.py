"""Weights to detectron2's pickle format, named as the DSPNet backbones name them (no detectron2 needed).

The detectron2 backbone wraps the DN's static torchvision network as ``bottom_up.body`` inside an
FPN, so every key is ``backbone.bottom_up.body.<torchvision key>``.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch

from ..dn import DNSpec, largest_dn
from ..errors import InvalidInputError
from ..families import build_static_dn
from ..weights import slice_for_dn

D2_PREFIX = "backbone.bottom_up.body."

__all__ = ["D2_PREFIX", "dn_backbone_state", "supernet_backbone_state", "to_d2_model", "save_d2_pkl", "read_d2_pkl",
           "SupernetTensors"]


def dn_backbone_state(weights: dict[str, torch.Tensor], dn: DNSpec) -> dict[str, torch.Tensor]:
    """The DN's backbone weights: every key of its static network but the classifier, sliced to shape."""
    return slice_for_dn(weights, _backbone_only(build_static_dn(dn).state_dict(), dn), dn)


def to_d2_model(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {D2_PREFIX + k: v.detach().cpu().numpy() for k, v in state.items()}


def save_d2_pkl(path: str, model: dict[str, np.ndarray], supernet: DNSpec | None = None) -> None:
    """detectron2's format: ``{"model", "__author__", "matching_heuristics"}`` (+ the supernet DN
    for a file that holds every DN, sliced at load time by ``DSPNetCheckpointer``: its tensors are a
    ``SupernetTensors``, which no other reader unpickles)."""
    data = {"model": SupernetTensors(model) if supernet is not None else model, "__author__": "dspnet",
            "matching_heuristics": False}
    if supernet is not None:
        data["dspnet_supernet"] = str(supernet)
    with open(path, "wb") as f:
        pickle.dump(data, f)


class SupernetTensors(dict):
    """The backbone tensors of every DN (the supernet's shapes) in a .pkl. Unpickling them outside
    ``read_d2_pkl`` (as detectron2's own ``DetectionCheckpointer`` does) raises: a stock checkpointer would skip
    every tensor whose shape differs from the chosen DN's with one log line, and a smaller DN would train from
    mostly random weights."""

    def __reduce__(self):
        return _refuse_supernet_tensors, (dict(self),)


def _refuse_supernet_tensors(tensors: dict):
    raise InvalidInputError(
        "this .pkl holds every DN of a DSPNet supernet, which detectron2's own DetectionCheckpointer would load "
        "as mostly random weights (it skips every tensor whose shape differs from the DN's). Load it with "
        "dspnet_d2.d2.checkpoint.DSPNetCheckpointer (tools/train_net.py does; in your own trainer, use it in "
        "place of DetectionCheckpointer), or write the one DN's .pkl: tools/convert_to_d2.py CHECKPOINT --dn DN")


class _SupernetUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == __name__ and name == "_refuse_supernet_tensors":
            return dict
        return super().find_class(module, name)


def read_d2_pkl(file) -> dict:
    """A detectron2 .pkl (an open binary file), a supernet's included (its tensors as a plain dict)."""
    return _SupernetUnpickler(file, encoding="latin1").load()


def supernet_backbone_state(weights: dict[str, torch.Tensor], dns: tuple[DNSpec, ...]
                            ) -> tuple[dict[str, torch.Tensor], DNSpec]:
    """All DNs in one file: the supernet's weights (largest shapes), without the classifier."""
    top = largest_dn(dns)
    return _backbone_only(weights, top), top


def _backbone_only(state: dict[str, torch.Tensor], dn: DNSpec) -> dict[str, torch.Tensor]:
    """``state`` without the DN's classifier (not part of the backbone)."""
    head = dn.info.head + "."
    return {k: v for k, v in state.items() if not k.startswith(head)}
