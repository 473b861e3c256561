"""The methods by name: ``MODEL.METHOD`` picks one; ``register_method`` adds one from anywhere."""
from __future__ import annotations

import torch

from dspnet_d2.dn import DNSpec
from dspnet_d2.errors import InvalidInputError

from .base import Method

__all__ = ["METHODS", "register_method", "unregister_method", "get_method", "build_method"]

METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Register a ``Method`` subclass under its ``name`` (a class decorator). Its config keys join the
    pretraining defaults the next time a config is loaded."""
    if not cls.name:
        raise InvalidInputError(f"{cls.__name__} needs a name to be registered under")
    if METHODS.get(cls.name, cls) is not cls:
        raise InvalidInputError(f"a method named {cls.name!r} is registered already ({METHODS[cls.name].__name__})")
    METHODS[cls.name] = cls
    return cls


def unregister_method(name: str) -> None:
    METHODS.pop(name, None)


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        raise InvalidInputError(f"unknown MODEL.METHOD {name!r}; registered methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build_method(cfg, dns: tuple[DNSpec, ...]) -> Method:
    """The run's method at step 0: seeded by ``cfg.SEED`` only, so a checkpoint's config rebuilds the exact
    weights its run started from (the evaluation's paired "initial weights" reference)."""
    torch.manual_seed(cfg.SEED)
    return get_method(cfg.MODEL.METHOD).from_config(cfg, dns)
