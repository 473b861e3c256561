"""``DSPNetCheckpointer``: detectron2's checkpointer that also reads a supernet .pkl holding every DN.

detectron2 skips (with a log line) any tensor whose shape differs from the model's. A supernet file
(written by ``tools/convert_to_d2.py --supernet``) instead has every backbone tensor sliced to the
selected DN's leading channels, and the blocks that DN does not have are dropped, before loading. The file's
tensors refuse to be unpickled by any other reader (``SupernetTensors``): detectron2's own checkpointer fails
with a message that says what to do, instead of loading a smaller DN as mostly random weights.
"""
from __future__ import annotations

import logging

from . import require_detectron2

require_detectron2("dspnet_d2.d2.checkpoint")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.utils.file_io import PathManager  # noqa: E402

from ..deploy.convert import D2_PREFIX, read_d2_pkl  # noqa: E402
from ..slim.slicing import slice_state_dict  # noqa: E402

logger = logging.getLogger(__name__)


class DSPNetCheckpointer(DetectionCheckpointer):
    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            with PathManager.open(filename, "rb") as f:
                data = read_d2_pkl(f)
            if isinstance(data, dict) and data.get("dspnet_supernet"):
                self.logger.info("Reading the DSPNet supernet .pkl %s", filename)
                return data
        return super()._load_file(filename)

    def _load_model(self, checkpoint):
        if checkpoint.get("dspnet_supernet"):
            self._convert_ndarray_to_tensor(checkpoint["model"])
            checkpoint["model"] = slice_supernet_state(checkpoint["model"], self.model.state_dict())
            logger.info("sliced the backbone out of supernet %s", checkpoint["dspnet_supernet"])
        return super()._load_model(checkpoint)


def slice_supernet_state(source: dict, model_state: dict) -> dict:
    """Leading slices of the backbone tensors with the model's shapes; deeper blocks are dropped."""
    shared = [k for k in source if k in model_state]
    sliced = slice_state_dict({k: source[k] for k in shared}, {k: model_state[k] for k in shared})
    # keys outside the backbone stay, so detectron2 reports them; backbone keys the model lacks are
    # blocks beyond the selected DN's depth
    sliced.update({k: v for k, v in source.items() if k not in model_state and not k.startswith(D2_PREFIX)})
    return sliced
