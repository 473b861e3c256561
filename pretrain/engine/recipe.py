"""What every recipe config shares: merging a YAML file and overrides, the cluster keys, the DN set parsed
once when the config is loaded, and the command line of a recipe command."""
from __future__ import annotations

import argparse
import os

import yaml
from fvcore.common.config import CfgNode as CN

from dspnet_d2.dn import DNSpec, dn_set
from dspnet_d2.errors import InvalidInputError, MissingFileError
from dspnet_d2.runtime.stopping import parse_signals

from .plugins import import_plugins

__all__ = ["merge_cfg", "load_recipe", "parse_recipe_args", "add_run_config", "validate_run_cfg", "check_crop_scale",
           "recipe_dns", "attach_dns"]


def add_run_config(cfg: CN) -> CN:
    """The keys every trainer shares for running on a cluster: stop signals, hang timeout, W&B mirror."""
    # signals that stop the run after the current step with its checkpoint and exit status 75 (a scheduler
    # requeues on it; the same command resumes); () leaves every signal's default action
    cfg.CHECKPOINT.SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
    cfg.DIST = CN()
    # minutes a collective may wait for the other ranks (and rank 0 alone may work: kNN monitor, checkpoint
    # write) before the run ends naming the rank and the step; torchrun --max-restarts then resumes
    cfg.DIST.TIMEOUT_MINUTES = 10.0
    cfg.LOGGER = CN()  # metrics always go to OUTPUT_DIR/metrics.jsonl and TensorBoard (tb/)
    cfg.LOGGER.WANDB = False  # also to Weights & Biases (pip install "dspnet[wandb]"); rank 0 only
    cfg.LOGGER.WANDB_PROJECT = "dspnet"  # W&B project
    cfg.LOGGER.WANDB_NAME = ""  # W&B run name; "": the recipe name (RECIPE)
    cfg.LOGGER.WANDB_OFFLINE = False  # write the W&B run under OUTPUT_DIR/wandb only (wandb sync uploads it later)
    return cfg


def validate_run_cfg(cfg: CN) -> None:
    """The keys of ``add_run_config``."""
    parse_signals(cfg.CHECKPOINT.SIGNALS)
    if not cfg.DIST.TIMEOUT_MINUTES > 0:
        raise InvalidInputError(f"DIST.TIMEOUT_MINUTES must be > 0, got {cfg.DIST.TIMEOUT_MINUTES}")
    if cfg.LOGGER.WANDB:
        from .wandb_logger import import_wandb

        import_wandb()  # on every rank, before anything runs: a missing package is one error line


def check_crop_scale(scale) -> None:
    """``DATA.CROP_SCALE`` (pretraining and eval configs): a RandomResizedCrop area range."""
    low, high = scale
    if not 0 < low <= high <= 1:
        raise InvalidInputError(f"DATA.CROP_SCALE must satisfy 0 < low <= high <= 1, got {tuple(scale)}")


def merge_cfg(cfg: CN, config_file: str | None, opts: list[str] | None, keys_doc: str) -> CN:
    """Merge a YAML file (``_BASE_`` allowed) and ``KEY VALUE`` overrides; unknown keys are ValueErrors."""
    if opts and len(opts) % 2:
        raise InvalidInputError(f"overrides come as KEY VALUE pairs, got an odd list: {opts}")
    try:  # yacs reports unknown keys as KeyError (files) or AssertionError (lists), bad values as ValueError
        if config_file:
            cfg.merge_from_file(config_file)
        if opts:
            cfg.merge_from_list(list(opts))
    except (KeyError, AssertionError, ValueError, yaml.YAMLError) as err:  # also a mistyped value, bad YAML
        raise InvalidInputError(f"bad config key or value ({err}); see {keys_doc} for the valid keys") from None
    return cfg


def attach_dns(cfg: CN, dns: tuple[DNSpec, ...]) -> None:
    """Keep the parsed ``MODEL.DNS`` on ``cfg`` beside its keys: what runs below the config reads these
    ``DNSpec``s instead of parsing the string again (``dump()`` still writes the string only)."""
    object.__setattr__(cfg, "dns", dns)  # an attribute, not a key: yacs would turn a key into YAML


def recipe_dns(cfg: CN) -> tuple[DNSpec, ...]:
    """The DN set of a loaded recipe; a config read back from a file (a checkpoint's) is parsed here."""
    dns = cfg.__dict__.get("dns")
    return dns if dns is not None else dn_set(cfg.MODEL.DNS)


def load_recipe(defaults: CN, config_file: str | None, opts: list[str] | None, keys_doc: str, validate) -> CN:
    """``defaults`` merged with ``config_file`` and overrides, RECIPE named after the file, its DN set parsed
    once (``recipe_dns``), validated (``validate(cfg, dns)``), frozen."""
    cfg = merge_cfg(defaults, config_file, opts, keys_doc)
    if config_file and not cfg.RECIPE:
        cfg.RECIPE = os.path.splitext(os.path.basename(config_file))[0]
    dns = dn_set(cfg.MODEL.DNS)
    validate(cfg, dns)
    cfg.freeze()
    attach_dns(cfg, dns)
    return cfg


def parse_recipe_args(argv, prog: str, doc: str, folder: str, example: str) -> argparse.Namespace:
    """``[--import FILE_OR_MODULE] --config-file FILE [KEY VALUE ...]``: the imports done (before the recipe
    is loaded, so a method they register is known), the file checked to exist (else the loader fails with a
    bare FileNotFoundError)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="FILE_OR_MODULE",
                        help="a Python file or module to import first: one that registers a method of your own "
                             "(pretrain.methods.register_method); may repeat; give it before --config-file")
    parser.add_argument("--config-file", required=True, help=f"a recipe under {folder}")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help=f"KEY VALUE overrides, e.g. {example}")
    args = parser.parse_args(argv)
    import_plugins(args.imports)
    if not os.path.isfile(args.config_file):
        raise MissingFileError(f"config file {args.config_file!r} does not exist")
    return args
