"""Slimmable supernets and their layers (built from a DN set by ``dspnet_d2.build_supernet``)."""
from .base import FEATURE_NAMES, FEATURE_STRIDES, Supernet
from .mbv3 import SlimMobileNetV3
from .resnet import SlimResNet

__all__ = ["Supernet", "SlimMobileNetV3", "SlimResNet", "FEATURE_NAMES", "FEATURE_STRIDES"]
