"""The DNs to choose from: every DN of a pretraining or supervised checkpoint, the exported DNs of a folder,
or the DNs of a family / set name with random weights (latency only)."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from torch import nn

from ..dn import DNSpec, dn_set
from ..errors import InvalidInputError, MissingFileError
from ..export import load_dn_model
from ..families import build_static_dn
from ..weights import DN_FORMAT, read_source

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
        return [_exported(path) for path in files]
    if os.path.isfile(source):
        _, dns, kind = read_source(source, allow_torchvision=False)
        if kind == DN_FORMAT:
            return [_exported(source)]
        return [Candidate(dn, load_dn_model(source, dn)[0], source, shares_bn=True) for dn in dns]
    if os.sep in source or source.endswith((".pth", ".pt")):
        raise MissingFileError(f"{source} does not exist")
    try:
        dns = dn_set(source)
    except InvalidInputError as err:
        raise InvalidInputError(f"{source} is no file or folder here, and {err}") from None
    return [Candidate(dn, build_static_dn(dn, num_classes=NAME_CLASSES).eval(), None, shares_bn=False) for dn in dns]


def _exported(path: str) -> Candidate:
    _, _, kind = read_source(path, allow_torchvision=False)
    if kind != DN_FORMAT:
        raise InvalidInputError(f"{path} is a {kind} checkpoint, not an exported DN: give it as a source of its own")
    model, dn = load_dn_model(path)
    return Candidate(dn, model, path, shares_bn=False)
