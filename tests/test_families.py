"""The family table: one ``Family`` per family, whose channels(dn) and stage split agree with the static
torchvision networks."""

import pytest
import torch

from dspnet_d2 import DN_SETS, FAMILIES, Family, build_static_dn, build_supernet, get_family, parse_dn
from dspnet_d2.slim import FEATURE_NAMES, FEATURE_STRIDES

ALL_DNS = [str(dn) for dn in DN_SETS["mbv3_s5"] + DN_SETS["resnet_s9"]]


def test_one_table_holds_every_fact_of_a_family():
    assert set(FAMILIES) == {"mbv3", "resnet"}
    for name, family in FAMILIES.items():
        assert isinstance(family, Family) and family.name == name and family.supernet.family == name
        assert get_family(name) is family
        assert all(dn.info is family for dn in DN_SETS[name])  # the DNs' grid is the family's
        assert family.supernet.__module__ == f"dspnet_d2.slim.{name}"  # one name per family everywhere
    with pytest.raises(ValueError, match="unknown DN family 'vgg'; known families: \\['mbv3', 'resnet'\\]"):
        get_family("vgg")


@pytest.mark.parametrize("dn", ALL_DNS)
def test_channels_and_taps_match_the_static_network(dn):
    dn = parse_dn(dn)
    family = dn.info
    model = build_static_dn(dn).eval()
    outputs = {}
    for feature, tap in zip(FEATURE_NAMES, family.taps(dn)):
        model.get_submodule(tap).register_forward_hook(lambda m, i, o, feature=feature: outputs.update({feature: o}))
    with torch.no_grad():
        pooled = model(torch.zeros(1, 3, 64, 64))
    expected = family.channels(dn)
    for feature in FEATURE_NAMES:
        assert outputs[feature].shape[1] == expected[feature], feature
        assert 64 // outputs[feature].shape[-1] == FEATURE_STRIDES[feature], feature
    assert pooled.shape[1] == expected["pooled"]
    # stem + stages name every module of the forward except pooling and the classifier
    named = set(family.stem) | {name for stage in family.stages(dn) for name in stage}
    top = {name.split(".")[0] for name in named}
    leftover = {name for name, _ in model.named_children() if name not in top} - {"avgpool", family.head}
    assert leftover == set()


def test_known_channels():
    assert [get_family("resnet").channels(parse_dn("resnet18"))[f] for f in FEATURE_NAMES] == [64, 128, 256, 512]
    assert [get_family("mbv3").channels(parse_dn("mbv3_w1.0"))[f] for f in FEATURE_NAMES] == [24, 40, 112, 960]
    assert get_family("resnet").channels(parse_dn("resnet_w1.5_d3463"))["res5"] == 768


@pytest.mark.parametrize("set_name", ["mbv3_s5", "resnet_s9"])
def test_build_supernet_uses_the_family_class(set_name):
    supernet = build_supernet(DN_SETS[set_name], num_classes=10)
    family = DN_SETS[set_name][0].info
    assert isinstance(supernet, family.supernet)
    assert hasattr(supernet, family.head)


def test_the_descriptor_says_which_regularizers_a_family_takes():
    from pretrain.supervised.config import load_supervised_cfg, regularizers

    cfg = load_supervised_cfg("configs/supervised/slimmable_mbv3_imagenet.yaml")
    assert regularizers(cfg, get_family("mbv3")) == {"dropout": 0.2, "drop_path": 0.2}
    assert regularizers(cfg, get_family("resnet")) == {}
    for name, family in FAMILIES.items():  # each listed name is a keyword of the supernet constructor
        top = DN_SETS[name][-1]
        family.supernet(top, num_classes=10, **{arg: 0.1 for arg in family.regularizers})
