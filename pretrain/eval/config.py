"""Evaluation config: one CfgNode for every protocol (linear, kNN, semi-supervised)."""
from __future__ import annotations

import os

from fvcore.common.config import CfgNode as CN

from dspnet_d2.errors import InvalidInputError, MissingFileError

from ..engine.recipe import check_crop_scale, merge_cfg

PROTOCOLS = ("knn", "linear", "semisup_finetune", "semisup_linear")

_C = CN()
_C.PROTOCOL = "linear"  # knn | linear | semisup_finetune | semisup_linear
_C.PRETRAINED = ""  # DSPNet/BYOL pretraining checkpoint, or an exported DN file (export/<dn>.pth)
_C.DNS = "all"  # "all" (the checkpoint's DN set) or comma-separated DNs
_C.BASELINES = []  # individually pretrained BYOL checkpoints (one DN each): a second series in tables/plots
_C.RANDOM_INIT = False  # also evaluate randomly initialised encoders of the same DNs (a reference series)
# random inits (seeds SEED, SEED+1, ...) averaged per DN: one init's kNN varies by several points
_C.RANDOM_INIT_SEEDS = 1
# also evaluate the weights the PRETRAINED run started from (its supernet at step 0, rebuilt from the
# checkpoint's config and SEED): the paired reference, free of the spread between random inits
_C.INITIAL_WEIGHTS = False

_C.DATA = CN()
_C.DATA.ROOT = "datasets/imagenet"  # ImageFolder root (iopath) with <TRAIN_SPLIT>/ and <VAL_SPLIT>/
_C.DATA.TRAIN_SPLIT = "train"
_C.DATA.VAL_SPLIT = "val"
_C.DATA.CLASS_COUNT = 0  # both splits: N class folders spread evenly over the sorted names (0: all), as pretraining
_C.DATA.CLASS_LIST = ""  # or those this file names, one folder name a line
_C.DATA.RESOLUTION = 0  # crop size; 0: the family's evaluation resolution (224 for mbv3 and resnet)
# train-time RandomResizedCrop scale of the classifier protocols (linear, semi-supervised); torchvision's default
_C.DATA.CROP_SCALE = (0.08, 1.0)
_C.DATA.RESIZE_RATIO = 0.875  # eval: resize the short side to RESOLUTION / RESIZE_RATIO, then center crop
_C.DATA.NUM_WORKERS = 8  # data-loading processes per rank
_C.DATA.MEAN = (0.485, 0.456, 0.406)
_C.DATA.STD = (0.229, 0.224, 0.225)

_C.BN_RECALIBRATION = CN()
_C.BN_RECALIBRATION.ENABLED = True  # recompute the DN's BN statistics on training images before evaluating
# batches of TRAIN.BATCH_SIZE center-cropped training images, drawn at random over the whole training set
_C.BN_RECALIBRATION.BATCHES = 200
_C.BN_RECALIBRATION.SEED = 0  # seed of that sample (the same on every rank; recorded in results.json)

_C.KNN = CN()
_C.KNN.K = 20  # neighbours
_C.KNN.WEIGHTING = "majority"  # "majority" (the paper) or "temperature" (votes weighted exp(sim / T))
_C.KNN.TEMPERATURE = 0.07

_C.TRAIN = CN()
_C.TRAIN.EPOCHS = 80  # classifier training epochs
_C.TRAIN.BATCH_SIZE = 256  # global batch
_C.TRAIN.LR = 0.2  # classifier learning rate (SGD)
_C.TRAIN.BACKBONE_LR = 0.0  # 0: frozen encoder (eval mode, no BN updates); > 0: fine-tune the whole network
_C.TRAIN.MOMENTUM = 0.9
_C.TRAIN.WEIGHT_DECAY = 0.0
_C.TRAIN.SCHEDULE = "cosine"  # "cosine" or "step" (x GAMMA at STEP_EPOCHS)
_C.TRAIN.STEP_EPOCHS = (12, 16)
_C.TRAIN.GAMMA = 0.2
_C.TRAIN.HEAD_BN = True  # BN (no affine) before the linear classifier, as the paper's linear evaluation

_C.SUBSET = CN()
_C.SUBSET.PERCENT = 0.0  # labelled fraction of the training set in %, e.g. 1 or 10; 0: all labels
_C.SUBSET.LIST_FILE = ""  # one image file name per line (the ImageNet 1%/10% split format)
_C.SUBSET.SEED = 0  # seed of the class-balanced draw when no list file is given

_C.OUTPUT_DIR = "output/eval"
_C.SEED = 0
_C.DEVICE = "auto"


def get_eval_cfg() -> CN:
    return _C.clone()


def load_eval_cfg(config_file: str | None = None, opts: list[str] | None = None) -> CN:
    cfg = merge_cfg(get_eval_cfg(), config_file, opts, "pretrain/eval/config.py")
    if cfg.PROTOCOL not in PROTOCOLS:
        raise InvalidInputError(f"PROTOCOL must be one of {PROTOCOLS}, got {cfg.PROTOCOL!r}")
    if not cfg.PRETRAINED and not cfg.BASELINES:
        raise InvalidInputError("set PRETRAINED (and/or BASELINES) to the checkpoint(s) to evaluate")
    for path in [cfg.PRETRAINED] * bool(cfg.PRETRAINED) + list(cfg.BASELINES):
        if not os.path.isfile(path):
            raise MissingFileError(f"checkpoint {path!r} does not exist")
    check_crop_scale(cfg.DATA.CROP_SCALE)
    if cfg.RANDOM_INIT_SEEDS < 1:
        raise InvalidInputError(f"RANDOM_INIT_SEEDS must be >= 1, got {cfg.RANDOM_INIT_SEEDS}")
    if cfg.KNN.WEIGHTING not in ("majority", "temperature"):
        raise InvalidInputError(f"KNN.WEIGHTING must be majority or temperature, got {cfg.KNN.WEIGHTING!r}")
    if cfg.TRAIN.SCHEDULE not in ("cosine", "step"):
        raise InvalidInputError(f"TRAIN.SCHEDULE must be cosine or step, got {cfg.TRAIN.SCHEDULE!r}")
    if not 0 <= cfg.SUBSET.PERCENT <= 100:
        raise InvalidInputError(f"SUBSET.PERCENT must be in [0, 100], got {cfg.SUBSET.PERCENT}")
    if cfg.PROTOCOL.startswith("semisup") and not (cfg.SUBSET.PERCENT or cfg.SUBSET.LIST_FILE):
        raise InvalidInputError("semi-supervised protocols need SUBSET.PERCENT or SUBSET.LIST_FILE")
    cfg.freeze()
    return cfg
