"""The pipeline's config: each stage's command configuration, every key commented."""
from __future__ import annotations

import os

from fvcore.common.config import CfgNode as CN

from dspnet_d2.errors import InvalidInputError, MissingFileError

from ..engine.recipe import merge_cfg

__all__ = ["load_pipeline_cfg", "STAGES", "SERIES", "INITS", "CHEAP_STAGES", "STATE_FILE"]

SERIES = {"dspnet": "DSPNet", "random": "random init"}  # DETECTION.INITS -> the series' name in tables

_C = CN()
_C.OUTPUT_DIR = "output/pipeline"  # every stage writes under it; pipeline_state.json records the stages
_C.DEMO_DATA = ""  # generate the embedded demo data at this root first ("" = the datasets exist)

_C.PRETRAIN = CN()
_C.PRETRAIN.CONFIG_FILE = "configs/pretrain/demo.yaml"  # the pretraining recipe (python -m pretrain)
_C.PRETRAIN.OPTS = []  # its KEY VALUE overrides; its OUTPUT_DIR is <OUTPUT_DIR>/pretrain
_C.PRETRAIN.LAUNCHER = ""  # replaces "python" in front of "-m pretrain", e.g. "torchrun --nproc_per_node 8"

_C.KNN = CN()
_C.KNN.CONFIG_FILE = "configs/eval/demo_knn.yaml"  # the kNN protocol (python -m pretrain.eval), DNS all
_C.KNN.OPTS = []  # its KEY VALUE overrides; its OUTPUT_DIR is <OUTPUT_DIR>/knn
_C.KNN.LAUNCHER = ""  # as PRETRAIN.LAUNCHER

_C.DETECTION = CN()
_C.DETECTION.CONFIG_FILE = "configs/detection/mask_rcnn_demo.yaml"  # python -m dspnet_d2.d2.train_net's config
_C.DETECTION.DNS = []  # DNs to train Mask R-CNN for; [] = the smallest and the largest pretrained DN
_C.DETECTION.INITS = ["dspnet", "random"]  # dspnet: the converted supernet .pkl; random: no weights
_C.DETECTION.OPTS = []  # KEY VALUE overrides of every run; each run's OUTPUT_DIR is detection/<init>_<dn>
_C.DETECTION.NUM_GPUS = 1  # python -m dspnet_d2.d2.train_net --num-gpus
_C.DETECTION.DEMO_ROOT = "datasets/demo"  # python -m dspnet_d2.d2.train_net --demo-root (the demo COCO datasets)

_C.PICTURES = CN()
_C.PICTURES.DATASET = "dspnet_demo_val"  # a registered detectron2 dataset (coco_2017_val for COCO)
_C.PICTURES.NUM_IMAGES = 4  # its first images, one row each
_C.PICTURES.SCORE_THRESHOLD = 0.5  # predictions below it are not drawn

STAGES = {  # name -> what it does, in order
    "pretrain": "DSPNet pretraining",
    "knn": "kNN top-1 of every DN (pretrained, initial weights, random inits)",
    "convert": "the supernet to one detectron2 .pkl",
    "detection": "Mask R-CNN per DN, from DSPNet weights and from random init",
    "ap_table": "the AP^bb / AP^mk table and plot",
    "pictures": "predictions on val images, side by side",
    "report": "report.md",
}
INITS = tuple(SERIES)
CHEAP_STAGES = ("ap_table", "pictures")  # redone, not refused, when their configuration changed
STATE_FILE = "pipeline_state.json"


def load_pipeline_cfg(config_file: str, opts) -> CN:
    cfg = merge_cfg(_C.clone(), config_file, opts, "pretrain/pipeline/config.py")
    for key in ("PRETRAIN", "KNN", "DETECTION"):
        if len(cfg[key].OPTS) % 2:
            raise InvalidInputError(f"{key}.OPTS must be KEY VALUE pairs, got {list(cfg[key].OPTS)}")
        if not os.path.isfile(cfg[key].CONFIG_FILE):
            raise MissingFileError(f"{key}.CONFIG_FILE {cfg[key].CONFIG_FILE!r} does not exist")
    bad = [i for i in cfg.DETECTION.INITS if i not in INITS]
    if bad or not cfg.DETECTION.INITS:
        raise InvalidInputError(f"DETECTION.INITS must be some of {list(INITS)}, got {list(cfg.DETECTION.INITS)}")
    if cfg.PICTURES.NUM_IMAGES < 0:
        raise InvalidInputError(f"PICTURES.NUM_IMAGES must be >= 0, got {cfg.PICTURES.NUM_IMAGES}")
    cfg.freeze()
    return cfg
