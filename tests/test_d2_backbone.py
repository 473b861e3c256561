"""detectron2 integration: backbones from config, weight loading, feature equality (needs detectron2)."""

import pytest
import torch

detectron2 = pytest.importorskip("detectron2")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_backbone, build_model  # noqa: E402

from dspnet_d2 import DN_SETS, add_dspnet_config, build_supernet, parse_dn, slice_dn  # noqa: E402
from dspnet_d2.d2.checkpoint import DSPNetCheckpointer  # noqa: E402
from dspnet_d2.deploy.convert import dn_backbone_state, save_d2_pkl, to_d2_model  # noqa: E402

ALL_DNS = [str(dn) for dn in DN_SETS["mbv3_s5"] + DN_SETS["resnet_s9"]]


def _cfg(dn, norm="BN"):
    cfg = get_cfg()
    add_dspnet_config(cfg)
    cfg.merge_from_file(f"configs/detection/mask_rcnn_{parse_dn(dn)}_FPN_2x_syncbn.yaml")
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.DSPNET.NORM", norm, "MODEL.FPN.NORM", ""])
    return cfg


@pytest.fixture(scope="module")
def supernets():
    torch.manual_seed(0)
    nets = {"mbv3": build_supernet(DN_SETS["mbv3_s5"]), "resnet": build_supernet(DN_SETS["resnet_s9"])}
    for net in nets.values():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return nets


@pytest.mark.parametrize("dn", ALL_DNS)
def test_backbone_shapes_load_and_features(supernets, tmp_path, dn):
    cfg = _cfg(dn)
    backbone = build_backbone(cfg)
    bottom_up = backbone.bottom_up
    x = torch.randn(2, 3, 128, 128)
    bottom_up.eval()
    with torch.no_grad():
        outs = bottom_up(x)
    for name, spec in bottom_up.output_shape().items():
        assert outs[name].shape[1] == spec.channels and 128 // outs[name].shape[-1] == spec.stride
    # converted weights load with nothing missing and nothing unused
    dn = parse_dn(dn)
    supernet = supernets[dn.family]
    exported = slice_dn(supernet, dn).eval()
    pkl = tmp_path / "dn.pkl"
    save_d2_pkl(str(pkl), to_d2_model(dn_backbone_state(supernet.state_dict(), dn)))
    model = torch.nn.Module()
    model.backbone = backbone
    incompatible = DSPNetCheckpointer(model)._load_model(DSPNetCheckpointer(model)._load_file(str(pkl)))
    backbone_missing = [k for k in incompatible.missing_keys if k.startswith("backbone.bottom_up")]
    assert backbone_missing == [] and incompatible.unexpected_keys == [] and incompatible.incorrect_shapes == []
    loaded = backbone.bottom_up.body.state_dict()
    for key, value in exported.state_dict().items():
        if not key.startswith(("classifier", "fc")):
            assert torch.equal(loaded[key], value), key  # the weights are the source DN's
    # the converted backbone is the exported DN: same features at every stride
    bottom_up.eval()
    with torch.no_grad():
        ours = bottom_up(x)
        pooled = exported(x)
    assert torch.allclose(ours["res5"].mean((2, 3)), pooled, atol=1e-5)
    # one weight file for every DN: slicing the supernet .pkl gives the same backbone weights
    full = tmp_path / "all.pkl"
    save_d2_pkl(str(full), to_d2_model(supernet.state_dict()), supernet=supernet.max_dn)
    other = torch.nn.Module()
    other.backbone = build_backbone(cfg)
    checkpointer = DSPNetCheckpointer(other)
    incompatible = checkpointer._load_model(checkpointer._load_file(str(full)))
    assert [k for k in incompatible.missing_keys if k.startswith("backbone.bottom_up")] == []
    assert incompatible.unexpected_keys == []
    mine, theirs = model.backbone.bottom_up.state_dict(), other.backbone.bottom_up.state_dict()
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), key
    # detectron2's own checkpointer would skip every tensor of another shape: it refuses the supernet file loudly
    with pytest.raises(ValueError, match="DSPNetCheckpointer"):
        DetectionCheckpointer(other).load(str(full))


def test_wrong_family_builder_and_bad_features():
    cfg = _cfg("resnet18")
    cfg.MODEL.BACKBONE.NAME = "build_dspnet_mbv3_fpn_backbone"
    with pytest.raises(ValueError, match="resnet DN"):  # an old per-family name refuses the other family
        build_backbone(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_dspnet_resnet_fpn_backbone"  # ... and still builds its own
    assert build_backbone(cfg).bottom_up.dn == parse_dn("resnet18")
    cfg = _cfg("resnet18")
    cfg.MODEL.DSPNET.OUT_FEATURES = ["res6"]
    with pytest.raises(ValueError, match="res6"):
        build_backbone(cfg)


def test_freeze_at_freezes_stem_and_stages():
    cfg = _cfg("mbv3_w0.5")
    cfg.MODEL.DSPNET.FREEZE_AT = 2
    body = build_backbone(cfg).bottom_up.body
    assert not any(p.requires_grad for p in body.features[:4].parameters())
    assert all(p.requires_grad for p in body.features[4:].parameters())
    cfg.MODEL.DSPNET.FREEZE_AT = 0
    assert all(p.requires_grad for p in build_backbone(cfg).parameters())


def test_mask_rcnn_trains_on_cpu_and_loss_decreases():
    from detectron2.structures import BitMasks, Boxes, Instances

    cfg = _cfg("mbv3_w0.5")
    cfg.merge_from_list(["MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.FPN.OUT_CHANNELS", "64"])
    torch.manual_seed(0)
    model = build_model(cfg)
    model.train()
    image = torch.zeros(3, 128, 128)
    image[:, 32:80, 40:96] = 255
    masks = torch.zeros(1, 128, 128, dtype=torch.bool)
    masks[0, 32:80, 40:96] = True
    instances = Instances((128, 128), gt_boxes=Boxes(torch.tensor([[40.0, 32.0, 96.0, 80.0]])),
                          gt_classes=torch.tensor([1]), gt_masks=BitMasks(masks))
    batch = [{"image": image, "instances": instances, "height": 128, "width": 128}] * 2
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    losses = []
    from detectron2.utils.events import EventStorage

    for i in range(8):
        with EventStorage(i):
            loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and min(losses[-3:]) < losses[0]
