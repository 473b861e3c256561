"""The BasicBlock ResNet family: ResNet-18 ... ResNet-34 x1.5 (width x depth)."""
from __future__ import annotations

from typing import Callable

from torch import nn
from torchvision.models import ResNet
from torchvision.models.resnet import BasicBlock

from ..dn import DNSpec, register_family
from ..slim.resnet import SlimResNet, dn_channels, stage_widths
from .base import Family

__all__ = ["RESNET", "BasicResNet"]


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


def _build_static(dn: DNSpec, num_classes=None, norm_layer=None) -> nn.Module:
    classes = 1000 if num_classes is None else num_classes
    if dn.width == 1.0:  # torchvision's own class (resnet18/34 and other depths at base width)
        model = ResNet(BasicBlock, list(dn.depths), num_classes=classes, norm_layer=norm_layer)
    else:
        model = BasicResNet(stage_widths(dn.width), dn.depths, classes, norm_layer)
    if num_classes is None:
        model.fc = nn.Identity()
    return model


def _stages(dn: DNSpec) -> tuple[tuple[str, ...], ...]:
    """layer1..layer4 (the static network of a DN holds exactly its blocks)."""
    return tuple((f"layer{i}",) for i in range(1, 5))


_WIDTHS = (1.0, 1.25, 1.5)  # stage widths [64,128,256,512] x w = 64/80/96 base
_DEPTHS = ("2222", "2343", "3463")  # the paper's nine DNs: each width at each depth

RESNET = Family(
    name="resnet", widths=_WIDTHS, max_depths=(3, 4, 6, 3),
    sets={"resnet_s9": tuple(f"resnet_w{w!r}_d{d}" for w in _WIDTHS for d in _DEPTHS)}, default_set="resnet_s9",
    aliases={"resnet18": "resnet_w1.0_d2222", "resnet34": "resnet_w1.0_d3463"}, resolution=128, supernet=SlimResNet,
    build_static=_build_static, channels=dn_channels, stem=("conv1", "bn1", "relu", "maxpool"), stages=_stages,
    head="fc", norm_eps=1e-5, norm_momentum=0.1)
register_family(RESNET)
