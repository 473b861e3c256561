"""DN specs: the one string that names a desired network (DN) everywhere.

Canonical form ``<family>_w<width>[_d<depths>]``: ``mbv3_w0.75``, ``resnet_w1.25_d2343``.
Aliases: ``resnet18`` = ``resnet_w1.0_d2222``, ``resnet34`` = ``resnet_w1.0_d3463``.
The families, their grids, DN sets and aliases come from the one family table, ``FAMILIES`` (``register_family``).
The same string is the CLI value, the detectron2 config value, the file-name part and the log tag.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Protocol

from .errors import InvalidInputError

__all__ = ["DNSpec", "FamilyFacts", "FAMILIES", "DN_SETS", "ALIASES", "register_family", "unregister_family",
           "parse_dn", "dn_set", "largest_dn", "smallest_dn"]


class FamilyFacts(Protocol):
    """What the DN grammar reads of a family: the string-level facts of a ``dspnet_d2.families.Family``."""

    name: str
    widths: tuple[float, ...]  # the width grid a DN of this family may use
    max_depths: tuple[int, ...] | None  # blocks per stage of the largest network; None: no depth slimming
    sets: Mapping[str, tuple[str, ...]]  # named DN sets: set name -> its DN strings
    default_set: str  # the set the family's own name stands for (``mbv3`` = ``mbv3_s5``)
    aliases: Mapping[str, str]  # other names of some DNs (``resnet18`` = ``resnet_w1.0_d2222``)
    resolution: int  # pretraining input size of the paper's recipe
    eval_resolution: int  # evaluation (and FLOPs) input size


# The one family table: name -> Family. A family registers itself when its module is imported
# (``dspnet_d2.families`` imports every built-in one); DN_SETS and ALIASES gather what the families declare.
FAMILIES: dict[str, FamilyFacts] = {}
DN_SETS: dict[str, tuple["DNSpec", ...]] = {}
ALIASES: dict[str, str] = {}

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
    def info(self) -> FamilyFacts:
        """The registered family of this DN (a ``dspnet_d2.families.Family``)."""
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


def parse_dn(text: str) -> DNSpec:
    """Parse a DN string (canonical form or alias); ``str(parse_dn(s))`` is the canonical form."""
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


def dn_set(text: "str | Iterable[str]") -> tuple[DNSpec, ...]:
    """The DNs a user names, in the order given, each once, of one family: a DN set by name (``mbv3_s5``,
    ``resnet_s9``; a family's name is its default set), one DN (a set of one: the individually pretrained
    BYOL baseline), several as ``"dn1,dn2,..."``, or a list of DN strings (a config list, a file's record).

    The one reading of a DN-set value, for every command-line option, config key and file.
    """
    if isinstance(text, str):
        name = text.strip()
        if name in DN_SETS:
            return DN_SETS[name]
        if "," not in name:
            try:
                return (parse_dn(name),)
            except ValueError as err:
                raise InvalidInputError(f"{text!r} is neither a DN set {sorted(DN_SETS)} nor a DN: {err}") from None
        text = name.split(",")
    dns = tuple(dict.fromkeys(parse_dn(d) for d in text))
    if not dns:
        raise InvalidInputError("a DN set needs at least one DN")
    _one_family(dns)
    return dns


def _one_family(dns: tuple[DNSpec, ...]) -> None:
    if len({d.family for d in dns}) != 1:
        raise InvalidInputError(f"a DN set must hold one family, got {sorted(str(d) for d in dns)}")


def _valid_list(family: str | None = None) -> str:
    names = {str(dn) for name, dns in DN_SETS.items() for dn in dns
             if family is None or dn.family == family}
    return ", ".join(sorted(names))


def register_family(family: FamilyFacts) -> None:
    """Add a family to the one table: its DNs parse from then on, and its DN sets and aliases join
    ``DN_SETS`` and ``ALIASES`` (the family's own name standing for its ``default_set``).

    The built-in families register themselves in their ``dspnet_d2.families`` module; a family defined
    elsewhere registers the same way, with no edit to this package.
    """
    name = family.name
    if not re.fullmatch(r"[a-z][a-z0-9]*", name):
        raise InvalidInputError(f"a family name is lowercase letters and digits (it starts a DN string), got {name!r}")
    if name in FAMILIES:
        raise InvalidInputError(f"a family named {name!r} is registered already")
    taken = (set(family.sets) | {name}) & set(DN_SETS) or set(family.aliases) & set(ALIASES)
    if taken:
        raise InvalidInputError(f"family {name!r} declares names another family holds: {sorted(taken)}")
    if family.default_set not in family.sets:
        raise InvalidInputError(f"family {name!r}: its default set {family.default_set!r} is not one of its "
                                f"sets {sorted(family.sets)}")
    FAMILIES[name] = family
    try:  # the sets are checked against the grid just registered
        aliases = {alias.lower(): str(parse_dn(dn)) for alias, dn in family.aliases.items()}
        sets = {set_name: dn_set(list(dns)) for set_name, dns in family.sets.items()}
        for set_name, dns in sets.items():
            if dns[0].family != name:
                raise InvalidInputError(f"family {name!r}: its set {set_name!r} holds {dns[0].family} DNs")
    except ValueError:
        del FAMILIES[name]
        raise
    DN_SETS.update(sets)
    DN_SETS[name] = sets[family.default_set]
    ALIASES.update(aliases)


def unregister_family(name: str) -> None:
    """Remove a family registered by ``register_family``, with its DN sets and aliases."""
    family = FAMILIES.pop(name)
    for set_name in (*family.sets, name):
        DN_SETS.pop(set_name, None)
    for alias in family.aliases:
        ALIASES.pop(alias.lower(), None)


def largest_dn(dns: Iterable[DNSpec]) -> DNSpec:
    """The supernet that holds every DN of ``dns``: widest width and deepest stages."""
    dns = tuple(dns)
    _one_family(dns)
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
