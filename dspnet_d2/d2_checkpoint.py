"""``DSPNetCheckpointer``: detectron2's checkpointer that also reads a supernet .pkl holding every DN.

detectron2 skips (with a log line) any tensor whose shape differs from the model's. A supernet file
(written by ``tools/convert_to_d2.py --supernet``) instead has every backbone tensor sliced to the
selected DN's leading channels, and the blocks that DN does not have are dropped, before loading.
"""
from __future__ import annotations

import logging

from detectron2.checkpoint import DetectionCheckpointer

from .convert import D2_PREFIX

logger = logging.getLogger(__name__)


class DSPNetCheckpointer(DetectionCheckpointer):
    def _load_model(self, checkpoint):
        if checkpoint.get("dspnet_supernet"):
            self._convert_ndarray_to_tensor(checkpoint["model"])
            checkpoint["model"] = slice_supernet_state(checkpoint["model"], self.model.state_dict())
            logger.info("sliced the backbone out of supernet %s", checkpoint["dspnet_supernet"])
        return super()._load_model(checkpoint)


def slice_supernet_state(source: dict, model_state: dict) -> dict:
    """Leading slices of the backbone tensors with the model's shapes; deeper blocks are dropped."""
    sliced = {}
    for key, value in source.items():
        if key not in model_state:
            if not key.startswith(D2_PREFIX):
                sliced[key] = value  # let detectron2 report it
            continue  # a block beyond the selected DN's depth
        target = model_state[key]
        if value.dim() != target.dim() or any(v < t for v, t in zip(value.shape, target.shape)):
            raise ValueError(f"{key}: supernet shape {tuple(value.shape)} cannot hold the model's {tuple(target.shape)}")
        sliced[key] = value[tuple(slice(0, n) for n in target.shape)].clone() if value.dim() else value
    return sliced
