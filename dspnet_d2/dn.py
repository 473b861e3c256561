"""DN specs: the one string that names a desired network (DN) everywhere.

Canonical form ``<family>_w<width>[_d<depths>]``: ``mbv3_w0.75``, ``resnet_w1.25_d2343``.
Aliases: ``resnet18`` = ``resnet_w1.0_d2222``, ``resnet34`` = ``resnet_w1.0_d3463``.
The same string is the CLI value, the detectron2 config value, the file-name part and the log tag.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from .errors import InvalidInputError

__all__ = ["DNSpec", "FamilyInfo", "FAMILIES", "DN_SETS", "parse_dn", "dn_set", "largest_dn", "smallest_dn"]


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    widths: tuple[float, ...]  # the width grid a DN of this family may use
    max_depths: tuple[int, ...] | None  # blocks per stage of the largest network; None: no depth slimming
    resolution: int  # pretraining input size of the paper's recipe
    default_set: str  # name of the paper's DN set in DN_SETS
    # evaluation (and FLOPs) input size: the paper pretrains ResNet DNs at 128 px "for faster training"
    # and compares them with methods that report at 224, so both families are evaluated at 224
    eval_resolution: int = 224


_MBV3_11 = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))
_MBV3_5 = (0.5, 0.625, 0.75, 0.875, 1.0)
_MBV3_3 = (0.5, 0.75, 1.0)
_RESNET_WIDTHS = (1.0, 1.25, 1.5)  # stage widths [64,128,256,512] x w = 64/80/96 base
_RESNET_DEPTHS = ((2, 2, 2, 2), (2, 3, 4, 3), (3, 4, 6, 3))

FAMILIES: dict[str, FamilyInfo] = {
    "mbv3": FamilyInfo("mbv3", tuple(sorted(set(_MBV3_11) | set(_MBV3_5))), None, 224, "mbv3_s5"),
    "resnet": FamilyInfo("resnet", _RESNET_WIDTHS, (3, 4, 6, 3), 128, "resnet_s9"),
}

ALIASES = {"resnet18": "resnet_w1.0_d2222", "resnet34": "resnet_w1.0_d3463"}

_PATTERN = re.compile(r"^(?P<family>[a-z][a-z0-9]*?)_w(?P<width>\d+(?:\.\d+)?)(?:_d(?P<depths>\d+))?$")


@dataclass(frozen=True, order=True)
class DNSpec:
    """A desired network: family, width multiplier and (for depth-slimmable families) blocks per stage."""

    family: str
    width: float
    depths: tuple[int, ...] | None = None

    def __post_init__(self):
        info = FAMILIES.get(self.family)
        if info is None:
            raise InvalidInputError(f"unknown DN family {self.family!r}; known families: {sorted(FAMILIES)}. "
                                    f"Valid DNs: {_valid_list()}")
        width = next((w for w in info.widths if abs(w - float(self.width)) < 1e-9), None)
        if width is None:
            raise InvalidInputError(f"width {self.width} is not on the {self.family} grid {list(info.widths)}. "
                                    f"Valid DNs of {self.family}: {_valid_list(self.family)}")
        object.__setattr__(self, "width", width)
        if info.max_depths is None:
            if self.depths is not None:
                raise InvalidInputError(f"{self.family} DNs have no depth part. Valid DNs of {self.family}: "
                                        f"{_valid_list(self.family)}")
            return
        if self.depths is None or len(self.depths) != len(info.max_depths):
            raise InvalidInputError(f"{self.family} DNs need {len(info.max_depths)} stage depths (e.g. _d2222). "
                                    f"Valid DNs of {self.family}: {_valid_list(self.family)}")
        depths = tuple(int(d) for d in self.depths)
        if any(d < 1 or d > m for d, m in zip(depths, info.max_depths)):
            raise InvalidInputError(f"depths {depths} exceed the {self.family} supernet's {info.max_depths} "
                                    f"(each stage needs 1..max blocks). Valid DNs of {self.family}: "
                                    f"{_valid_list(self.family)}")
        object.__setattr__(self, "depths", depths)

    @property
    def info(self) -> FamilyInfo:
        return FAMILIES[self.family]

    def __str__(self) -> str:
        text = f"{self.family}_w{self.width!r}"
        if self.depths is not None:
            text += "_d" + "".join(str(d) for d in self.depths)
        return text

    def fits_in(self, other: "DNSpec") -> bool:
        """True if this DN is a sub-network of ``other`` (same family, no wider, no deeper)."""
        if self.family != other.family or self.width > other.width:
            return False
        return self.depths is None or all(a <= b for a, b in zip(self.depths, other.depths))


def parse_dn(text: "str | DNSpec") -> DNSpec:
    """Parse a DN string (canonical form or alias); ``str(parse_dn(s))`` is the canonical form."""
    if isinstance(text, DNSpec):
        return text
    if not isinstance(text, str):
        raise TypeError(f"a DN is given as a string such as 'mbv3_w0.75', got {type(text).__name__}")
    raw = text.strip()
    canonical = ALIASES.get(raw.lower(), raw)
    match = _PATTERN.match(canonical)
    if match is None:
        family = raw.split("_", 1)[0]
        known = _valid_list(family) if family in FAMILIES else _valid_list()
        raise InvalidInputError(f"malformed DN {text!r}; expected '<family>_w<width>[_d<depths>]' "
                                f"or an alias {sorted(ALIASES)}. Valid DNs: {known}")
    depths = match.group("depths")
    return DNSpec(match.group("family"), float(match.group("width")),
                  tuple(int(c) for c in depths) if depths else None)


def _make_sets() -> dict[str, tuple[DNSpec, ...]]:
    sets = {
        "mbv3_s3": tuple(DNSpec("mbv3", w) for w in _MBV3_3),
        "mbv3_s5": tuple(DNSpec("mbv3", w) for w in _MBV3_5),
        "mbv3_s11": tuple(DNSpec("mbv3", w) for w in _MBV3_11),
        "resnet_s9": tuple(DNSpec("resnet", w, d) for w in _RESNET_WIDTHS for d in _RESNET_DEPTHS),
    }
    sets["mbv3"] = sets["mbv3_s5"]
    sets["resnet"] = sets["resnet_s9"]
    return sets


def _valid_list(family: str | None = None) -> str:
    names = {str(dn) for name, dns in DN_SETS.items() for dn in dns
             if family is None or dn.family == family}
    return ", ".join(sorted(names))


DN_SETS: dict[str, tuple[DNSpec, ...]] = {}
DN_SETS.update(_make_sets())


def dn_set(name_or_dns: "str | Iterable[str | DNSpec]") -> tuple[DNSpec, ...]:
    """A predefined DN set by name (``mbv3_s5``, ``resnet_s9``, ...), or a list of DN strings, as DNSpecs.

    A single DN string is a set of one (the individually pretrained BYOL baseline).
    """
    if isinstance(name_or_dns, str):
        if name_or_dns in DN_SETS:
            return DN_SETS[name_or_dns]
        try:
            return (parse_dn(name_or_dns),)
        except ValueError as err:
            raise InvalidInputError(f"{name_or_dns!r} is neither a DN set {sorted(DN_SETS)} nor a DN: {err}") from None
    dns = tuple(dict.fromkeys(parse_dn(d) for d in name_or_dns))
    if not dns:
        raise InvalidInputError("a DN set needs at least one DN")
    if len({d.family for d in dns}) != 1:
        raise InvalidInputError(f"a DN set must hold one family, got {sorted(str(d) for d in dns)}")
    return dns


def largest_dn(dns: Iterable[DNSpec]) -> DNSpec:
    """The supernet that holds every DN of ``dns``: widest width and deepest stages."""
    dns = tuple(dns)
    family = dns[0].family
    width = max(d.width for d in dns)
    if dns[0].depths is None:
        return DNSpec(family, width)
    return DNSpec(family, width, tuple(max(ds) for ds in zip(*(d.depths for d in dns))))


def smallest_dn(dns: Iterable[DNSpec]) -> DNSpec:
    """The DN of ``dns`` that every other one contains; raises if the set has no such minimum."""
    dns = tuple(dns)
    for cand in dns:
        if all(cand.fits_in(d) for d in dns):
            return cand
    raise InvalidInputError(f"DN set {[str(d) for d in dns]} has no smallest member")
