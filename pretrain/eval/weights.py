"""The weights an evaluation compares: a checkpoint's (``read_weights``) and those its run started from."""
from __future__ import annotations

from fvcore.common.config import CfgNode

from dspnet_d2.errors import InvalidInputError
from dspnet_d2.weights import PRETRAIN_FORMAT, WeightFile

from ..engine.config import get_cfg
from ..methods import build_method


def read_initial_weights(pretrained: WeightFile) -> WeightFile:
    """The weights the pretraining run of ``pretrained`` started from: its supernet at step 0, rebuilt
    from the run's config (DN set, head sizes, SEED) exactly as the run built it."""
    if pretrained.kind != PRETRAIN_FORMAT or "config" not in pretrained.record:
        raise InvalidInputError(f"INITIAL_WEIGHTS needs a pretraining checkpoint, which records its run's config; "
                                f"{pretrained.path} is not one (an exported DN holds trained weights only)")
    # the trainer's construction, from the run's config as its checkpoint recorded it (on today's defaults, so
    # a checkpoint written before a key existed reads as that key's default)
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode.load_cfg(pretrained.record["config"]))
    encoder = build_method(cfg, pretrained.dns).encoder
    return WeightFile(f"{pretrained.path} (step 0)", pretrained.kind, pretrained.dns, encoder.state_dict())
