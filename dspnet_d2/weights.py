"""Weight files: their formats, how to read any of them, how to write a DN, and a DN's static network
from a state (the leading slices of a supernet's or a larger DN's tensors).

Every place that reads or writes weights goes through here: ``export_dn``, the pretraining engine's
export, the evaluation's readers and the detectron2 conversion.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from .dn import DNSpec, dn_set, largest_dn, parse_dn
from .errors import InvalidInputError
from .families import build_static_dn

PRETRAIN_FORMAT = "dspnet-pretrain-v1"  # pretraining checkpoints (pretrain/engine.py)
DN_FORMAT = "dspnet-dn-v1"  # one exported DN (OUTPUT_DIR/export/<dn>.pth)
SUPERVISED_FORMAT = "dspnet-supervised-v1"  # slimmable supervised training checkpoints (pretrain/supervised)
TORCHVISION_FORMAT = "torchvision"  # a plain torchvision state_dict (read only)

__all__ = ["PRETRAIN_FORMAT", "DN_FORMAT", "SUPERVISED_FORMAT", "TORCHVISION_FORMAT", "save_atomic", "save_dn_file", "read_source",
           "read_source_weights", "dn_in_source", "slice_state_dict", "slice_for_dn", "static_dn"]


def save_atomic(obj, path: str) -> None:
    """Write to a temporary file, then rename: a killed writer never leaves a half file behind."""
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_dn_file(path: str, dn: "str | DNSpec", state_dict: dict[str, torch.Tensor], **metadata) -> None:
    """One DN's weights (``DN_FORMAT``, tensors and plain values only, so ``weights_only`` loads read it)."""
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    save_atomic({"format": DN_FORMAT, "dn": str(parse_dn(dn)), **metadata, "state_dict": state}, path)


def read_source(path: str, allow_torchvision: bool = True
                ) -> tuple[dict[str, torch.Tensor], tuple[DNSpec, ...] | None, str]:
    """Encoder weights (torchvision key names), the DNs they cover and the file's format, from a
    pretraining checkpoint (the online supernet, whose BN buffers every DN shares), an exported DN,
    a slimmable supervised checkpoint (its supernet, classifier included), or (``allow_torchvision``) a torchvision state_dict (``mobilenet_v3_large``, ``resnet18/34``: DNs
    unknown, returned as None)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, foreign objects, truncated files
        raise InvalidInputError(f"{path} is not a dspnet checkpoint: {err}") from None
    kind = state.get("format") if isinstance(state, dict) else None
    if kind == PRETRAIN_FORMAT:
        prefix = "encoder."
        weights = {k[len(prefix):]: v for k, v in state["online"].items() if k.startswith(prefix)}
        return weights, dn_set(state["signature"]["dns"]), kind
    if kind == DN_FORMAT:
        return state["state_dict"], (parse_dn(state["dn"]),), kind
    if kind == SUPERVISED_FORMAT:
        return state["model"], dn_set(state["signature"]["dns"]), kind
    if allow_torchvision and isinstance(state, dict):
        state = state.get("state_dict", state)
        if state and all(isinstance(v, torch.Tensor) for v in state.values()):
            return dict(state), None, TORCHVISION_FORMAT
    expected = f"{PRETRAIN_FORMAT!r} or {DN_FORMAT!r}" + (" or a torchvision state_dict" if allow_torchvision else "")
    raise InvalidInputError(f"{path} is not a dspnet checkpoint (format {kind!r}; expected {expected})")


def read_source_weights(path: str, allow_torchvision: bool = True
                        ) -> tuple[dict[str, torch.Tensor], tuple[DNSpec, ...] | None]:
    """``read_source`` without the format."""
    weights, dns, _ = read_source(path, allow_torchvision)
    return weights, dns


def dn_in_source(source: str, dns: "tuple[DNSpec, ...] | None", dn: "str | DNSpec | None" = None,
                 slice_single: bool = False) -> DNSpec:
    """The DN that weights holding ``dns`` (``read_source``) serve for the request ``dn``: the one rule of
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
    dn = parse_dn(dn)
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


def slice_state_dict(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """For every key of ``target``, the leading slice of ``source[key]`` with ``target``'s shape, cloned.

    Raises ``KeyError`` for a key the source lacks and ``ValueError`` for a source tensor smaller than
    the target (a DN that is not a sub-network of the source).
    """
    out = {}
    for key, ref in target.items():
        if key not in source:
            raise KeyError(f"weights for {key!r} are missing from the source state_dict")
        src = source[key]
        if src.dim() != ref.dim() or any(s < r for s, r in zip(src.shape, ref.shape)):
            raise ValueError(f"{key}: source shape {tuple(src.shape)} cannot be sliced to {tuple(ref.shape)}")
        out[key] = src[tuple(slice(0, n) for n in ref.shape)].clone()
    return out


def static_dn(weights: dict[str, torch.Tensor], dn: "str | DNSpec", num_classes: int | None = None) -> nn.Module:
    """The DN's plain network (``num_classes=None``: without classifier) holding the leading slices of
    ``weights``; weights of another network (a key missing, a tensor too small) are an ``InvalidInputError``."""
    model = build_static_dn(dn, num_classes=num_classes)
    model.load_state_dict(slice_for_dn(weights, model.state_dict(), dn), strict=True)
    return model


def slice_for_dn(weights: dict[str, torch.Tensor], target: dict[str, torch.Tensor], dn) -> dict[str, torch.Tensor]:
    """``slice_state_dict`` for a DN, with the user's mistake (weights of another network) reported as such."""
    try:
        return slice_state_dict(weights, target)
    except (KeyError, ValueError) as err:
        raise InvalidInputError(f"the weights do not hold DN {dn}: {err.args[0]}") from None
