"""Weight files: their formats, how to read any of them, how to write a DN, and a DN's static network
from a state (the leading slices of a supernet's or a larger DN's tensors).

Every place that reads or writes weights goes through here: the pretraining engine's export, the evaluation's
readers and the detectron2 conversion.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
from torch import nn

from .dn import DNSpec, dn_set, largest_dn
from .errors import InvalidInputError
from .families import build_static_dn, get_family
from .slim.slicing import slice_state_dict

PRETRAIN_FORMAT = "dspnet-pretrain-v1"  # pretraining checkpoints (pretrain/engine/trainer.py)
DN_FORMAT = "dspnet-dn-v1"  # one exported DN (OUTPUT_DIR/export/<dn>.pth)
SUPERVISED_FORMAT = "dspnet-supervised-v1"  # slimmable supervised training checkpoints (pretrain/supervised)
TORCHVISION_FORMAT = "torchvision"  # a plain torchvision state_dict (read only)

__all__ = ["PRETRAIN_FORMAT", "DN_FORMAT", "SUPERVISED_FORMAT", "TORCHVISION_FORMAT", "save_atomic", "save_dn_file",
           "describe", "WeightFile", "read_weights", "dn_in_source", "slice_for_dn", "static_dn"]


def save_atomic(obj, path: str) -> None:
    """Write to a temporary file, then rename: a killed writer never leaves a half file behind."""
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def describe(dns: tuple[DNSpec, ...], entry: str, prefix: str = "") -> dict:
    """A checkpoint's description of itself, written at its top level by the trainer that owns its layout:
    its DN set, and where its encoder's torchvision-keyed weights are (``state[entry]``, keys ``prefix + name``).
    ``read_weights`` follows it and knows no trainer's internals."""
    return {"dns": [str(dn) for dn in dns], "encoder": {"entry": entry, "prefix": prefix}}


def save_dn_file(path: str, dn: DNSpec, state_dict: dict[str, torch.Tensor], **metadata) -> None:
    """One DN's weights (``DN_FORMAT``, tensors and plain values only, so ``weights_only`` loads read it)."""
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    save_atomic({"format": DN_FORMAT, "dn": str(dn), **describe((dn,), "state_dict"), **metadata,
                 "state_dict": state}, path)


# checkpoints written before they described themselves: where each format kept its encoder
_LEGACY_LAYOUTS = {PRETRAIN_FORMAT: ("online", "encoder."), DN_FORMAT: ("state_dict", ""), SUPERVISED_FORMAT: ("model", "")}


def _legacy_description(state: dict) -> dict:
    """The description an older checkpoint of a known format would have written (``describe``)."""
    entry, prefix = _LEGACY_LAYOUTS[state["format"]]
    dns = [state["dn"]] if state["format"] == DN_FORMAT else state["signature"]["dns"]
    return describe(dn_set(dns), entry, prefix)


@dataclass
class WeightFile:
    """A weight file, read once: its encoder weights (torchvision keys, a supernet's or one DN's, with the
    classifier when it has one), the DNs they serve, and the file's other top-level entries without tensors
    (config, signature, BN recalibration record, ...)."""
    path: str
    kind: str  # the file's format: PRETRAIN_FORMAT, DN_FORMAT, SUPERVISED_FORMAT or TORCHVISION_FORMAT
    dns: "tuple[DNSpec, ...] | None"  # None: a torchvision state_dict (the caller names the DN)
    weights: dict[str, torch.Tensor]
    record: dict = field(default_factory=dict, repr=False)

    @property
    def family(self) -> str:
        return self.dns[0].family

    @property
    def shares_bn(self) -> bool:
        """Every DN shares the supernet's BN buffers (a training checkpoint): a DN taken out of it needs
        statistics of its own (recalibration); an exported DN carries its own."""
        return self.kind in (PRETRAIN_FORMAT, SUPERVISED_FORMAT)

    def dn(self, requested: DNSpec | None = None, slice_single: bool = False) -> DNSpec:
        """The DN this file serves for ``requested`` (``dn_in_source``: the one rule)."""
        return dn_in_source(self.path, self.dns, requested, slice_single)

    def select(self, text: str) -> tuple[DNSpec, ...]:
        """A command line's choice of DNs: ``all`` (the file's DNs) or a DN-set value (``dn_set``), each DN checked
        against the file."""
        if text.strip() == "all":
            return self.dns
        return tuple(self.dn(d) for d in dn_set(text))

    def num_classes(self) -> int | None:
        """The classifier's output size, or None for an encoder without classifier."""
        if self.dns is None:
            return None
        head = get_family(self.family).head
        weights = sorted((k for k in self.weights if k.startswith(head + ".") and k.endswith(".weight")),
                         key=lambda k: [int(p) if p.isdigit() else p for p in k.split(".")])
        return self.weights[weights[-1]].shape[0] if weights else None

    def model(self, dn: DNSpec | None = None, classifier: bool = False) -> tuple[nn.Module, DNSpec]:
        """The static network of ``dn`` (default: the file's own DN), in eval mode, with the file's classifier
        when it has one and ``classifier`` is true."""
        dn = self.dn(dn)
        return static_dn(self.weights, dn, self.num_classes() if classifier else None).eval(), dn


def _holds_tensors(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_holds_tensors(v) for v in value.values())
    return isinstance(value, (list, tuple)) and any(_holds_tensors(v) for v in value)


def read_weights(path: str, allow_torchvision: bool = False) -> WeightFile:
    """Read any weight file of the package (pretraining or supervised checkpoint, exported DN) through the
    description at its top level (``describe``; older files through ``_legacy_description``), or with
    ``allow_torchvision`` a plain torchvision state_dict (``mobilenet_v3_large``, ``resnet18/34``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, foreign objects, truncated files
        raise InvalidInputError(f"{path} is not a dspnet checkpoint: {err}") from None
    kind = state.get("format") if isinstance(state, dict) else None
    if kind in _LEGACY_LAYOUTS:
        description = {k: state[k] for k in ("dns", "encoder")} if "encoder" in state else _legacy_description(state)
        entry, prefix = description["encoder"]["entry"], description["encoder"]["prefix"]
        weights = {k[len(prefix):]: v for k, v in state[entry].items() if k.startswith(prefix)}
        # the metadata only: a training checkpoint's target network and optimizer state are not kept alive
        record = {k: v for k, v in state.items() if k != entry and not _holds_tensors(v)}
        return WeightFile(path, kind, dn_set(description["dns"]), weights, record)
    if allow_torchvision and isinstance(state, dict):
        state = state.get("state_dict", state)
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return WeightFile(path, TORCHVISION_FORMAT, None, dict(state))
    expected = f"{PRETRAIN_FORMAT!r}, {SUPERVISED_FORMAT!r} or {DN_FORMAT!r}" + (
        " or a torchvision state_dict" if allow_torchvision else "")
    raise InvalidInputError(f"{path} is not a dspnet checkpoint (format {kind!r}; expected {expected})")


def dn_in_source(source: str, dns: "tuple[DNSpec, ...] | None", dn: DNSpec | None = None,
                 slice_single: bool = False) -> DNSpec:
    """The DN that weights holding ``dns`` (``WeightFile.dns``) serve for the request ``dn``: the one rule of
    every reader (export, conversion, evaluation, the supervised start).

    - A supernet checkpoint (several DNs) serves each of its DNs, and any sub-network of its largest one
      (the leading slices of every tensor).
    - A single-DN file (an exported DN, a BYOL checkpoint) serves its own DN only: its BN statistics are
      that network's, and a slice of it would carry another network's. ``slice_single`` allows its
      sub-networks too, where slicing the full network is the method (the supervised BYOL+S-Net start).
    - Weights of unknown DNs (a torchvision state_dict, ``dns`` None) serve the requested DN; the shapes
      are checked when the DN is built.

    ``dn`` None asks for the file's own DN, which only a single-DN file has.
    """
    listed = ", ".join(map(str, dns or ()))
    if dn is None:
        if dns is None or len(dns) != 1:
            raise InvalidInputError(f"{source} holds " + (f"several DNs ({listed}): choose one" if dns else
                                                           "weights of no recorded DN: name the DN"))
        return dns[0]
    if dns is None:
        return dn
    if dn.family != dns[0].family:
        raise InvalidInputError(f"DN {dn} is not in {source}: it is not of this checkpoint's family "
                                f"{dns[0].family} (its DNs: {listed})")
    if len(dns) == 1 and not slice_single:
        if dn != dns[0]:
            raise InvalidInputError(f"DN {dn} is not in {source}, a file of the single network {dns[0]}: slicing it "
                                    f"would give {dn} another network's BN statistics (export {dn} from the "
                                    f"supernet checkpoint instead)")
    elif not dn.fits_in(largest_dn(dns)):
        raise InvalidInputError(f"DN {dn} is not in {source} (its DNs: {listed})")
    return dn


def static_dn(weights: dict[str, torch.Tensor], dn: DNSpec, num_classes: int | None = None) -> nn.Module:
    """The DN's plain network (``num_classes=None``: without classifier) holding the leading slices of
    ``weights``; weights of another network (a key missing, a tensor too small) are an ``InvalidInputError``."""
    model = build_static_dn(dn, num_classes=num_classes)
    model.load_state_dict(slice_for_dn(weights, model.state_dict(), dn), strict=True)
    return model


def slice_for_dn(weights: dict[str, torch.Tensor], target: dict[str, torch.Tensor], dn: DNSpec
                 ) -> dict[str, torch.Tensor]:
    """``slice_state_dict`` for a DN, with the user's mistake (weights of another network) reported as such."""
    try:
        return slice_state_dict(weights, target)
    except (KeyError, ValueError) as err:
        raise InvalidInputError(f"the weights do not hold DN {dn}: {err.args[0]}") from None
