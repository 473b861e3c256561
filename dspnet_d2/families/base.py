"""``Family``: everything the package knows about one family of networks, in one place.

The string-level facts (width grid, depth limits, DN sets and aliases, resolutions) that DN strings are
checked against, and the model-level ones: the slimmable supernet class, the static torchvision builder,
how the static network splits into stem and FPN stages, its norm arguments, the name of its classifier
and the channels of any DN as a pure function (no forward pass needed). ``register_family`` enters it
into the one family table (``dspnet_d2.dn.FAMILIES``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import nn

from ..dn import DNSpec

__all__ = ["Family", "StaticBuilder"]

# (dn, num_classes, norm_layer) -> the DN's plain torchvision network; num_classes=None: classifier
# replaced by nn.Identity (the output is the pooled feature vector)
StaticBuilder = Callable[[DNSpec, "int | None", "Callable[..., nn.Module] | None"], nn.Module]


@dataclass(frozen=True, eq=False, kw_only=True)
class Family:
    name: str  # the first part of every DN string of the family
    # -- the DN grammar's facts
    widths: tuple[float, ...]  # the width grid a DN of this family may use
    max_depths: tuple[int, ...] | None = None  # blocks per stage of the largest network; None: no depth slimming
    sets: Mapping[str, tuple[str, ...]]  # named DN sets (set name -> DN strings), e.g. the paper's
    default_set: str  # the set the family's name stands for (``mbv3`` = ``mbv3_s5``)
    aliases: Mapping[str, str] = field(default_factory=dict)  # other names of some DNs
    resolution: int  # pretraining input size of the paper's recipe
    # evaluation (and FLOPs) input size: the paper pretrains ResNet DNs at 128 px "for faster training"
    # and compares them with methods that report at 224, so both families are evaluated at 224
    eval_resolution: int = 224
    # -- the networks
    supernet: type  # the slimmable supernet class (a ``dspnet_d2.slim.Supernet``)
    build_static: StaticBuilder
    channels: Callable[[DNSpec], dict[str, int]]  # res2..res5, "pooled", "stem" (+ family extras)
    stem: tuple[str, ...]  # module names of the static network's stem (frozen first by FREEZE_AT)
    # module names of res2..res5 in the static network of a DN, stem excluded, in forward order;
    # the output of each stage's last module is that stride's FPN tap
    stages: Callable[[DNSpec], tuple[tuple[str, ...], ...]]
    head: str  # the classifier module's name, in the static network and in the supernet
    norm_eps: float  # the BN arguments the DNs are pretrained with (and detectron2's norms get)
    norm_momentum: float
    # regularisers the supernet constructor takes (keyword arguments, e.g. "dropout", "drop_path"):
    # what the supervised recipes may switch on for this family
    regularizers: tuple[str, ...] = ()

    def taps(self, dn: DNSpec) -> tuple[str, ...]:
        """The module whose output is each of res2..res5."""
        return tuple(stage[-1] for stage in self.stages(dn))
