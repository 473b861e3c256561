"""The slimmable supervised training config (the paper's Appendix B): every key commented.

Defaults are timm's MobileNetV3-Large ImageNet recipe (``mobilenetv3_large_100``) with the epochs cut
from 600 to 300 as the paper does; configs/supervised/ holds it and torchvision's ResNet recipe.
"""
from __future__ import annotations

from fvcore.common.config import CfgNode as CN

from dspnet_d2.errors import InvalidInputError
from dspnet_d2.families import get_family

from dspnet_d2.dn import DNSpec

from ..engine.recipe import add_run_config, check_crop_scale, load_recipe, validate_run_cfg

_C = CN()
_C.RECIPE = ""  # recipe name, set from the config file's name; part of the checkpoint signature
# starting weights of the supernet's encoder (the classifier always starts fresh):
#   "none": random init; a DSPNet pretraining checkpoint: its online encoder (every DN);
#   a BYOL checkpoint or an exported DN: the full-width network only (the paper's BYOL+S-Net)
_C.INIT = "none"

_C.MODEL = CN()
_C.MODEL.DNS = "mbv3_s5"  # the DN set, as the pretraining's MODEL.DNS
_C.MODEL.NUM_SUBNETS = 4  # n: sandwich rule (largest on labels, smallest and n-2 random by inplace distillation)
_C.MODEL.DROPOUT = 0.2  # dropout before the last classifier layer (families whose descriptor lists "dropout")
_C.MODEL.DROP_PATH = 0.2  # stochastic depth of the last block, linear from 0 over blocks (those listing "drop_path")
_C.MODEL.LABEL_SMOOTHING = 0.1  # of the largest network's label loss
_C.MODEL.EMA_DECAY = 0.9999  # EMA of the weights (evaluated and exported; 0: off), torch.optim.swa_utils
_C.MODEL.SYNC_BN = False  # batch statistics over all ranks (timm's recipe trains without)

_C.DATA = CN()
_C.DATA.ROOT = "datasets/imagenet"  # ImageFolder root holding <TRAIN_SPLIT>/ and <VAL_SPLIT>/
_C.DATA.TRAIN_SPLIT = "train"
_C.DATA.VAL_SPLIT = "val"
_C.DATA.RESOLUTION = 0  # training and evaluation crop; 0: the family's evaluation resolution (224)
_C.DATA.RESIZE_RATIO = 0.875  # evaluation: resize the short side to RESOLUTION / RESIZE_RATIO, center crop
_C.DATA.CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop scale range
_C.DATA.RAND_AUGMENT_OPS = 2  # RandAugment operations per image (0: off); timm's rand-m9-mstd0.5:
_C.DATA.RAND_AUGMENT_MAGNITUDE = 9.0  # magnitude on timm's 0..10 scale
_C.DATA.RAND_AUGMENT_MAGNITUDE_STD = 0.5  # Gaussian noise on the magnitude, drawn per image
_C.DATA.RANDOM_ERASING = 0.2  # probability; per-pixel normal values (timm's "pixel" mode)
_C.DATA.NUM_WORKERS = 8
_C.DATA.MEAN = (0.485, 0.456, 0.406)
_C.DATA.STD = (0.229, 0.224, 0.225)

_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "rmsprop"  # "rmsprop" (TF-style settings, see RMSPROP_EPS) or "sgd"
_C.SOLVER.BATCH_SIZE = 512  # global batch over all ranks
_C.SOLVER.BASE_LR = 0.064  # lr for BASE_BATCH images; scaled linearly to BATCH_SIZE
_C.SOLVER.BASE_BATCH = 1024  # timm's lr .064 is for 2 processes x 512 images (the MobileNetV3 recipe's header)
_C.SOLVER.EPOCHS = 300
_C.SOLVER.SCHEDULE = "step"  # "step": x DECAY_RATE every DECAY_EPOCHS (counted in whole epochs, as timm); "cosine"
_C.SOLVER.DECAY_EPOCHS = 2.4
_C.SOLVER.DECAY_RATE = 0.973
_C.SOLVER.WARMUP_EPOCHS = 5  # linear warm-up from WARMUP_LR (timm train.py's default length)
_C.SOLVER.WARMUP_LR = 1e-6
_C.SOLVER.WEIGHT_DECAY = 1e-5  # on weights (ndim > 1); on biases and norms too with WEIGHT_DECAY_NORM_AND_BIAS
# False: timm's default filter (no decay on biases and norm parameters); True: torchvision's reference
_C.SOLVER.WEIGHT_DECAY_NORM_AND_BIAS = False
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.RMSPROP_ALPHA = 0.9
# torch's RMSprop adds eps outside the square root, TensorFlow's inside: eps = sqrt(1e-3) emulates timm's
# rmsproptf with --opt-eps 1e-3, as torchvision's own MobileNetV3 reference recipe does
_C.SOLVER.RMSPROP_EPS = 0.0316

_C.AMP = CN()
_C.AMP.ENABLED = True  # mixed precision on GPU (ignored on CPU)
_C.AMP.DTYPE = "float16"  # "bfloat16" or "float16" (float16 uses a GradScaler, as timm's --amp)

_C.CHECKPOINT = CN()
_C.CHECKPOINT.PERIOD = 1000  # iterations between checkpoints (one is also written at every epoch end)
_C.CHECKPOINT.KEEP = 3
_C.CHECKPOINT.RESUME = True  # resume from the newest checkpoint in OUTPUT_DIR

_C.EVAL_PERIOD = 10  # epochs between evaluations of every DN on the val split (0: only at the end)
_C.EVAL_BATCH_SIZE = 256
_C.BN_RECALIBRATION = CN()  # per-DN BN statistics before each evaluation and export
_C.BN_RECALIBRATION.BATCHES = 100  # of EVAL_BATCH_SIZE center-cropped training images (0: off)
_C.BN_RECALIBRATION.SEED = 0
_C.LOG_PERIOD = 20
_C.EXPORT = True  # after training, OUTPUT_DIR/export/<dn>.pth: each DN with its classifier (torchvision keys)
_C.OUTPUT_DIR = "output/supervised"
_C.SEED = 0
_C.DEVICE = "auto"
add_run_config(_C)  # CHECKPOINT.SIGNALS, DIST.TIMEOUT_MINUTES, LOGGER.*: see pretrain/engine/recipe.py


# config key -> the supernet constructor's argument (a family supports those its descriptor lists)
REGULARIZER_KEYS = {"DROPOUT": "dropout", "DROP_PATH": "drop_path"}


def regularizers(cfg: CN, family) -> dict[str, float]:
    """The supernet constructor's regulariser arguments for ``family`` from the config."""
    return {arg: cfg.MODEL[key] for key, arg in REGULARIZER_KEYS.items() if arg in family.regularizers}


def get_cfg() -> CN:
    return _C.clone()


def load_supervised_cfg(config_file: str | None = None, opts: list[str] | None = None) -> CN:
    return load_recipe(get_cfg(), config_file, opts, "pretrain/supervised/config.py", validate_supervised_cfg)


def validate_supervised_cfg(cfg: CN, dns: tuple[DNSpec, ...]) -> None:
    n = cfg.MODEL.NUM_SUBNETS
    if n < 1 or (n >= 2 and len(dns) < 2) or (n > 2 and len(dns) < 3):
        raise InvalidInputError(f"MODEL.NUM_SUBNETS={n} does not fit the DN set {cfg.MODEL.DNS} ({len(dns)} DNs): "
                                f"1 trains the largest only, 2 needs 2 DNs, more needs a DN between the extremes")
    family = get_family(dns[0].family)
    unsupported = [key for key, value in REGULARIZER_KEYS.items() if cfg.MODEL[key] and value not in family.regularizers]
    if unsupported:
        raise InvalidInputError(f"MODEL.{' and MODEL.'.join(unsupported)} do not apply to the {family.name} family; "
                                f"set them to 0 for {cfg.MODEL.DNS}")
    if cfg.SOLVER.OPTIMIZER not in ("rmsprop", "sgd") or cfg.SOLVER.SCHEDULE not in ("step", "cosine"):
        raise InvalidInputError(f"SOLVER.OPTIMIZER must be rmsprop or sgd and SOLVER.SCHEDULE step or cosine, got "
                                f"{cfg.SOLVER.OPTIMIZER} / {cfg.SOLVER.SCHEDULE}")
    if cfg.SOLVER.BATCH_SIZE < 1:
        raise InvalidInputError(f"SOLVER.BATCH_SIZE={cfg.SOLVER.BATCH_SIZE} must be >= 1")
    if cfg.SOLVER.EPOCHS < 1 or cfg.SOLVER.WARMUP_EPOCHS < 0 or cfg.SOLVER.DECAY_EPOCHS <= 0:
        raise InvalidInputError("SOLVER.EPOCHS must be >= 1, WARMUP_EPOCHS >= 0 and DECAY_EPOCHS > 0")
    if not 0 <= cfg.MODEL.EMA_DECAY < 1 or not 0 <= cfg.MODEL.LABEL_SMOOTHING < 1:
        raise InvalidInputError("MODEL.EMA_DECAY and MODEL.LABEL_SMOOTHING must lie in [0, 1)")
    if not 0 <= cfg.DATA.RANDOM_ERASING <= 1 or not 0 <= cfg.DATA.RAND_AUGMENT_MAGNITUDE <= 10:
        raise InvalidInputError("DATA.RANDOM_ERASING must lie in [0, 1] and DATA.RAND_AUGMENT_MAGNITUDE in [0, 10]")
    if cfg.AMP.DTYPE not in ("bfloat16", "float16") or cfg.DEVICE not in ("auto", "cuda", "cpu"):
        raise InvalidInputError("AMP.DTYPE must be bfloat16 or float16 and DEVICE auto, cuda or cpu")
    if min(cfg.EVAL_BATCH_SIZE, cfg.LOG_PERIOD, cfg.CHECKPOINT.PERIOD) < 1 or cfg.BN_RECALIBRATION.BATCHES < 0:
        raise InvalidInputError("EVAL_BATCH_SIZE, LOG_PERIOD and CHECKPOINT.PERIOD must be >= 1, "
                                "BN_RECALIBRATION.BATCHES >= 0")
    check_crop_scale(cfg.DATA.CROP_SCALE)
    validate_run_cfg(cfg)
