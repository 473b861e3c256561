"""``add_dspnet_config``: the MODEL.DSPNET node of a detectron2 config (no detectron2 import needed)."""
from __future__ import annotations


def add_dspnet_config(cfg) -> None:
    """Add ``MODEL.DSPNET`` to a detectron2 (or fvcore) CfgNode."""
    node = type(cfg)()
    node.DN = "resnet18"  # the DN (e.g. "mbv3_w0.75", "resnet18", "resnet_w1.25_d2343"); with
    # MODEL.BACKBONE.NAME "build_dspnet_fpn_backbone" (the base config's) the only key to change per DN
    node.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stride 4/8/16/32 outputs given to the FPN
    node.NORM = "SyncBN"  # detectron2 norm name (BN, SyncBN, FrozenBN, GN); pretrained SSL nets need trainable BN
    node.FREEZE_AT = 0  # 0: train every layer (the paper); 1: freeze the stem; k: stem and stages res2..res{k}
    cfg.MODEL.DSPNET = node
