"""Static (non-slimmable) networks of a DN, built only from torch/torchvision layers.

These are what ``export_dn`` returns and what the detectron2 backbones wrap: a plain torchvision
``MobileNetV3`` for every MobileNetV3 DN, a torchvision ``ResNet`` (BasicBlock) for every ResNet DN.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn
from torchvision.models import ResNet, mobilenet_v3_large
from torchvision.models.resnet import BasicBlock

from .dn import DNSpec, parse_dn
from .slim.mobilenetv3 import BN_EPS, BN_MOMENTUM
from .slim.resnet import stage_widths

__all__ = ["BasicResNet", "build_static_dn"]


class BasicResNet(ResNet):
    """torchvision's ResNet with BasicBlocks at any stage widths (ResNet-18/34 at width 1.0).

    Same module names, init and forward as ``torchvision.models.resnet18``; only the widths differ.
    """

    def __init__(self, widths: tuple[int, ...], depths: tuple[int, ...], num_classes: int = 1000,
                 norm_layer: Callable[..., nn.Module] | None = None):
        nn.Module.__init__(self)
        self._norm_layer = norm_layer or nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = widths[0], 1, 1, 64
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(BasicBlock, widths[0], depths[0])
        self.layer2 = self._make_layer(BasicBlock, widths[1], depths[1], stride=2)
        self.layer3 = self._make_layer(BasicBlock, widths[2], depths[2], stride=2)
        self.layer4 = self._make_layer(BasicBlock, widths[3], depths[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def build_static_dn(dn: "str | DNSpec", num_classes: int | None = None,
                    norm_layer: Callable[..., nn.Module] | None = None) -> nn.Module:
    """The plain network of ``dn``; ``num_classes=None`` replaces the classifier by ``nn.Identity``
    so the output is the pooled feature vector."""
    dn = parse_dn(dn)
    classes = num_classes if num_classes is not None else 1000
    if dn.family == "mbv3":
        if norm_layer is None:
            norm_layer = partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
        model = mobilenet_v3_large(width_mult=dn.width, num_classes=classes, norm_layer=norm_layer)
        if num_classes is None:
            model.classifier = nn.Identity()
    elif dn.family == "resnet":
        if dn.width == 1.0:  # torchvision's own class (resnet18/34 and other depths at base width)
            model = ResNet(BasicBlock, list(dn.depths), num_classes=classes, norm_layer=norm_layer)
        else:
            model = BasicResNet(stage_widths(dn.width), dn.depths, classes, norm_layer)
        if num_classes is None:
            model.fc = nn.Identity()
    else:  # pragma: no cover - DNSpec validates families
        raise ValueError(f"no static network for family {dn.family}")
    return model
