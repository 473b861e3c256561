"""The DNs to choose from: every DN of a pretraining or supervised checkpoint, the exported DNs of a folder,
or the DNs of a family / set name with random weights (latency only)."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from torch import nn

from ...dn import DNSpec, dn_set
from ...errors import InvalidInputError, MissingFileError
from ...families import build_static_dn
from ...weights import DN_FORMAT, read_weights

__all__ = ["Candidate", "open_sources", "NAME_CLASSES"]

NAME_CLASSES = 1000  # a DN named by its family or set is built with ImageNet's classifier, as torchvision's models


@dataclass
class Candidate:
    """A DN to measure: its static network (eval mode) and where its weights come from."""

    dn: DNSpec
    model: nn.Module
    path: str | None  # the weight file; None: random weights (a family or set name)
    shares_bn: bool  # a DN of a supernet checkpoint: its BN statistics are the supernet's shared ones


def open_sources(sources: "list[str] | str") -> list[Candidate]:
    """The candidates of every source, in order; a DN may come from one source only."""
    candidates = []
    for source in [sources] if isinstance(sources, str) else sources:
        candidates += _open(source)
    seen = {}
    for c in candidates:
        if str(c.dn) in seen:
            raise InvalidInputError(f"DN {c.dn} comes from two sources ({seen[str(c.dn)]} and {c.path or 'a name'}); "
                                    "give each DN once")
        seen[str(c.dn)] = c.path or "a name"
    return candidates


def _open(source: str) -> list[Candidate]:
    if os.path.isdir(source):
        files = sorted(glob.glob(os.path.join(source, "*.pth")))
        if not files:
            raise MissingFileError(f"{source} holds no exported DN (<dn>.pth)")
        return [_exported(read_weights(path)) for path in files]
    if os.path.isfile(source):
        weights = read_weights(source)  # read once for all its DNs
        if weights.kind == DN_FORMAT:
            return [_exported(weights)]
        return [Candidate(dn, weights.model(dn, classifier=True)[0], source, shares_bn=weights.shares_bn)
                for dn in weights.dns]
    if os.sep in source or source.endswith((".pth", ".pt")):
        raise MissingFileError(f"{source} does not exist")
    try:
        dns = dn_set(source)
    except InvalidInputError as err:
        raise InvalidInputError(f"{source} is no file or folder here, and {err}") from None
    return [Candidate(dn, build_static_dn(dn, num_classes=NAME_CLASSES).eval(), None, shares_bn=False) for dn in dns]


def _exported(weights) -> Candidate:
    if weights.kind != DN_FORMAT:
        raise InvalidInputError(f"{weights.path} is a {weights.kind} checkpoint, not an exported DN: give it as a "
                                f"source of its own")
    model, dn = weights.model(classifier=True)
    return Candidate(dn, model, weights.path, shares_bn=False)
