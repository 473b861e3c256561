"""detectron2 LazyConfigs with a DN backbone: detectron2's own model-zoo pieces (``common/models/mask_rcnn_fpn.py``,
``common/data/coco.py``, ...) with ``DSPNetBackbone`` as the FPN's bottom-up network, the DN one key
(``model.backbone.bottom_up.dn``). ``configs/detection/lazy/`` holds the configs; ``python -m
dspnet_d2.d2.lazy_train`` trains them, as does detectron2's ``tools/lazyconfig_train_net.py``."""
from __future__ import annotations

import os

from . import require_detectron2

require_detectron2(__name__)

import detectron2  # noqa: E402
from detectron2.config import LazyCall as L  # noqa: E402
from detectron2.config import LazyConfig  # noqa: E402

from ..errors import MissingFileError  # noqa: E402
from .backbone import DSPNetBackbone  # noqa: E402

__all__ = ["model_zoo_config", "dn_mask_rcnn_fpn"]

# the pretrained networks expect RGB with torchvision's mean and std
PIXEL_MEAN, PIXEL_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def model_zoo_config(relative: str):
    """A LazyConfig file of detectron2's model zoo (``common/...``), read from the installed detectron2 (without
    ``detectron2.model_zoo``, whose import needs setuptools' ``pkg_resources``)."""
    path = os.path.join(os.path.dirname(detectron2.__file__), "model_zoo", "configs", relative)
    if not os.path.isfile(path):
        raise MissingFileError(f"detectron2's model-zoo config {relative} is not in this install ({path}); "
                               "install detectron2 from its source tree, which ships configs/")
    return LazyConfig.load(path)


def dn_mask_rcnn_fpn(dn: str = "mbv3_w0.5", norm: str = "SyncBN"):
    """detectron2's Mask R-CNN FPN with the DN's static network as the bottom-up network, ``norm`` in it and in
    the FPN (the paper: SyncBN, every layer trained), RGB input with torchvision's normalisation."""
    model = model_zoo_config("common/models/mask_rcnn_fpn.py").model
    model.backbone.bottom_up = L(DSPNetBackbone)(dn=dn, norm=norm, freeze_at=0)
    model.backbone.in_features = ["res2", "res3", "res4", "res5"]
    model.backbone.norm = norm
    model.pixel_mean, model.pixel_std, model.input_format = PIXEL_MEAN, PIXEL_STD, "RGB"
    return model
