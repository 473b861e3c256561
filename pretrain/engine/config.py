"""The pretraining config: a yacs/fvcore CfgNode with every key commented (paper defaults).

The engine's keys are here; each registered method adds its own (``Method.add_config``, e.g. BYOL's
``MODEL.TAU_BASE`` in ``pretrain/methods/byol.py``), so a method's keys live in its file.
"""
from __future__ import annotations

from fvcore.common.config import CfgNode as CN

from dspnet_d2.dn import DNSpec
from dspnet_d2.errors import InvalidInputError

from ..data.augment import AUGMENT_BACKENDS
from ..methods import METHODS, get_method
from .recipe import add_run_config, check_crop_scale, load_recipe, validate_run_cfg

__all__ = ["get_cfg", "load_cfg", "validate_cfg", "KEYS_DOC"]

KEYS_DOC = "pretrain/engine/config.py and the method's file in pretrain/methods/"

_C = CN()
_C.RECIPE = ""  # recipe name, set from the config file's name; part of the checkpoint signature

_C.MODEL = CN()
_C.MODEL.METHOD = "dspnet"  # the pretraining method (pretrain/methods/): "dspnet", "byol", or one registered
_C.MODEL.DNS = "mbv3_s5"  # DN set name (mbv3_s3/s5/s11, resnet_s9), one DN (BYOL baseline) or "dn1,dn2,..."
_C.MODEL.SYNC_BN = True  # batch statistics over all ranks (the method's networks; see each method's keys)
# the method's own keys (MODEL.NUM_SUBNETS, MODEL.TAU_BASE, ...) are added by the registered methods: get_cfg

_C.DATA = CN()
_C.DATA.ROOT = "datasets/imagenet"  # ImageFolder root (iopath path) holding <SPLIT>/<class>/<image>
_C.DATA.SPLIT = "train"  # sub-folder used for pretraining
_C.DATA.CLASS_COUNT = 0  # use N class folders, spread evenly over the sorted names (0: all); a fixed subset
_C.DATA.CLASS_LIST = ""  # or those this file names, one folder name a line (e.g. ImageNet-100's list)
_C.DATA.RESOLUTION = 224  # crop size (224 for mbv3, 128 for resnet in the paper)
_C.DATA.CROP_SCALE = (0.08, 1.0)  # RandomResizedCrop scale range
_C.DATA.BLUR_PROB = (1.0, 0.1)  # Gaussian blur probability of view 1 / view 2 (BYOL)
_C.DATA.BLUR_SIGMA = (0.1, 2.0)  # Gaussian blur sigma range in pixels of the crop (BYOL, at 224 px)
_C.DATA.SOLARIZE_PROB = (0.0, 0.2)  # solarization probability of view 1 / view 2 (BYOL)
_C.DATA.COLOR_JITTER = (0.4, 0.4, 0.2, 0.1)  # brightness, contrast, saturation, hue strengths (BYOL)
_C.DATA.COLOR_JITTER_PROB = 0.8  # probability of applying the colour jitter to a view
_C.DATA.GRAYSCALE_PROB = 0.2  # probability of converting a view to greyscale
_C.DATA.NUM_WORKERS = 8  # data-loading processes per rank (kept alive across epochs)
_C.DATA.PREFETCH_FACTOR = 4  # batches each worker prepares ahead
# "opencv": JPEG draft decoding and OpenCV colour ops, 1.82x the images/s per core of "torchvision" (RESULTS.md),
# torchvision's PIL functionals, pixel for pixel the reference (tools/bench/aug_throughput.py)
_C.DATA.AUGMENT_BACKEND = "opencv"
_C.DATA.MEAN = (0.485, 0.456, 0.406)  # input normalisation (ImageNet, RGB)
_C.DATA.STD = (0.229, 0.224, 0.225)

_C.SOLVER = CN()
_C.SOLVER.BATCH_SIZE = 4096  # global batch over all ranks
_C.SOLVER.EPOCHS = 300  # training length
_C.SOLVER.BASE_LR = 0.2  # LARS lr per 256 images: lr = BASE_LR x BATCH_SIZE / 256
_C.SOLVER.WARMUP_EPOCHS = 10  # linear warm-up, then cosine decay to 0
_C.SOLVER.WEIGHT_DECAY = 1.5e-6  # on weights only (ndim > 1), added before the LARS trust ratio
_C.SOLVER.MOMENTUM = 0.9  # LARS momentum
_C.SOLVER.LARS_ETA = 0.001  # LARS trust coefficient

_C.AMP = CN()
_C.AMP.ENABLED = False  # mixed precision on GPU
_C.AMP.DTYPE = "bfloat16"  # "bfloat16" or "float16" (float16 uses a GradScaler)
_C.CHANNELS_LAST = False  # channels_last memory format (faster on GPU, and ~2x for MobileNetV3 on CPU/oneDNN)

_C.CHECKPOINT = CN()
_C.CHECKPOINT.PERIOD = 1000  # iterations between checkpoints (one is also written at every epoch end)
_C.CHECKPOINT.KEEP = 3  # checkpoints kept (the newest)
_C.CHECKPOINT.RESUME = True  # resume from the newest checkpoint in OUTPUT_DIR when there is one

_C.LOG_PERIOD = 20  # iterations between metric records (JSON lines + TensorBoard)
_C.EXPORT = True  # after training, write every DN's weights to OUTPUT_DIR/export/<dn>.pth
# batches of EVAL_VIEW images recalibrating each exported DN's BN statistics (all sub-networks share the
# supernet's running buffers, so no DN has its own until then); 0: export the shared statistics
_C.EXPORT_RECALIBRATION_BATCHES = 100

_C.EVAL_VIEW = CN()  # center crops of training images for the export's recalibration and the kNN monitor
_C.EVAL_VIEW.RESOLUTION = 0  # crop size; 0: the family's evaluation resolution (224)
_C.EVAL_VIEW.RESIZE_RATIO = 0.875  # resize the short side to RESOLUTION / RESIZE_RATIO, then center crop
_C.EVAL_VIEW.BATCH_SIZE = 256
_C.EVAL_VIEW.SEED = 0  # seed of the image samples (recalibration, kNN bank and queries), the same on every rank

_C.MONITOR = CN()  # the kNN monitor (collapse statistics are always logged: rep_std, proj_std, view_cos)
_C.MONITOR.KNN_PERIOD = 0  # epochs between kNN evaluations of every DN (and one at step 0); 0: off
_C.MONITOR.VAL_ROOT = ""  # held-out ImageFolder with the training classes; "": <DATA.ROOT>/val
_C.MONITOR.BANK_IMAGES = 4096  # training images in the kNN bank (a seeded sample)
_C.MONITOR.VAL_IMAGES = 2048  # held-out images classified (a seeded sample)
_C.MONITOR.K = 20  # neighbours (majority vote, as the kNN protocol)
# online linear probe: per DN, BN + a linear classifier on the detached pooled features of the sampled DN,
# trained on the folder's class labels with its own SGD; its top-1 over each epoch is logged as
# linear_probe/<dn> and drawn beside the kNN curves. The pretrained weights are the same with it or without
_C.MONITOR.LINEAR_PROBE = False
_C.MONITOR.LINEAR_PROBE_LR = 0.1  # the probe's constant SGD learning rate (momentum 0.9, no weight decay)
_C.OUTPUT_DIR = "output/pretrain"  # run directory: config.yaml, checkpoints, metrics, exports
_C.SEED = 0  # seeds init, data order, augmentations and sub-network sampling
_C.DEVICE = "auto"  # "auto" (cuda when present), "cuda" or "cpu"


add_run_config(_C)


def get_cfg() -> CN:
    """The defaults: the engine's keys and those of every registered method."""
    cfg = _C.clone()
    for method in METHODS.values():
        method.add_config(cfg)
    return cfg


def load_cfg(config_file: str | None = None, opts: list[str] | None = None) -> CN:
    """Default config, merged with ``config_file`` (``_BASE_`` allowed) and ``KEY VALUE`` overrides.

    Unknown keys are errors; the result is validated and frozen.
    """
    return load_recipe(get_cfg(), config_file, opts, KEYS_DOC, validate_cfg)


def validate_cfg(cfg: CN, dns: tuple[DNSpec, ...]) -> None:
    """Fail early, with a clear message, on values that would break the run later (``dns``: ``MODEL.DNS``
    parsed); the world size is checked where it is known (``ResumableRun.setup_process``)."""
    get_method(cfg.MODEL.METHOD).validate(cfg, dns)
    if cfg.SOLVER.BATCH_SIZE < 1:
        raise InvalidInputError(f"SOLVER.BATCH_SIZE={cfg.SOLVER.BATCH_SIZE} must be >= 1")
    if cfg.SOLVER.EPOCHS < 1:
        raise InvalidInputError("SOLVER.EPOCHS must be >= 1")
    if cfg.AMP.DTYPE not in ("bfloat16", "float16"):
        raise InvalidInputError(f"AMP.DTYPE must be bfloat16 or float16, got {cfg.AMP.DTYPE}")
    if cfg.DEVICE not in ("auto", "cuda", "cpu"):
        raise InvalidInputError(f"DEVICE must be auto, cuda or cpu, got {cfg.DEVICE}")
    brightness, contrast, saturation, hue = cfg.DATA.COLOR_JITTER
    if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise InvalidInputError(f"DATA.COLOR_JITTER needs 4 strengths >= 0 with hue <= 0.5, got {cfg.DATA.COLOR_JITTER}")
    for key in ("COLOR_JITTER_PROB", "GRAYSCALE_PROB"):
        if not 0 <= cfg.DATA[key] <= 1:
            raise InvalidInputError(f"DATA.{key} must lie in [0, 1], got {cfg.DATA[key]}")
    check_crop_scale(cfg.DATA.CROP_SCALE)
    if cfg.DATA.AUGMENT_BACKEND not in AUGMENT_BACKENDS:
        raise InvalidInputError(f"DATA.AUGMENT_BACKEND must be one of {AUGMENT_BACKENDS}, got {cfg.DATA.AUGMENT_BACKEND!r}")
    if cfg.DATA.NUM_WORKERS < 0 or cfg.DATA.PREFETCH_FACTOR < 1:
        raise InvalidInputError(f"DATA.NUM_WORKERS ({cfg.DATA.NUM_WORKERS}) must be >= 0 and DATA.PREFETCH_FACTOR "
                                f"({cfg.DATA.PREFETCH_FACTOR}) >= 1")
    if not 0 < cfg.DATA.BLUR_SIGMA[0] <= cfg.DATA.BLUR_SIGMA[1]:
        raise InvalidInputError(f"DATA.BLUR_SIGMA must satisfy 0 < low <= high, got {tuple(cfg.DATA.BLUR_SIGMA)}")
    if cfg.EXPORT_RECALIBRATION_BATCHES < 0 or cfg.MONITOR.KNN_PERIOD < 0:
        raise InvalidInputError(f"EXPORT_RECALIBRATION_BATCHES ({cfg.EXPORT_RECALIBRATION_BATCHES}) and "
                                f"MONITOR.KNN_PERIOD ({cfg.MONITOR.KNN_PERIOD}) must be >= 0")
    if min(cfg.EVAL_VIEW.BATCH_SIZE, cfg.MONITOR.BANK_IMAGES, cfg.MONITOR.VAL_IMAGES, cfg.MONITOR.K) < 1:
        raise InvalidInputError("EVAL_VIEW.BATCH_SIZE, MONITOR.BANK_IMAGES, MONITOR.VAL_IMAGES and MONITOR.K "
                                "must be >= 1")
    if not cfg.MONITOR.LINEAR_PROBE_LR > 0:
        raise InvalidInputError(f"MONITOR.LINEAR_PROBE_LR must be > 0, got {cfg.MONITOR.LINEAR_PROBE_LR}")
    validate_run_cfg(cfg)
