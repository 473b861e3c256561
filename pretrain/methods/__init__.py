"""Pretraining methods beside one engine: a base (``base.Method``), one file per method, a registry."""
from .base import COLLAPSE_STATS, MLP, Method, StepContext, TwoViewNetwork, collapse_stats
from .byol import BYOL, byol_loss
from .dspnet import DSPNet, sample_subnets
from .registry import METHODS, build_method, get_method, register_method, unregister_method

__all__ = ["Method", "StepContext", "MLP", "TwoViewNetwork", "collapse_stats", "COLLAPSE_STATS", "BYOL", "byol_loss",
           "DSPNet", "sample_subnets", "METHODS", "register_method", "unregister_method", "get_method", "build_method"]
