import dataclasses

import pytest

from dspnet_d2.dn import (DN_SETS, FAMILIES, DNSpec, dn_set, largest_dn, parse_dn, register_family, smallest_dn,
                          unregister_family)

ALL_DNS = sorted({dn for dns in DN_SETS.values() for dn in dns}, key=str)


@pytest.mark.parametrize("dn", ALL_DNS, ids=str)
def test_round_trip(dn):
    assert parse_dn(str(dn)) == dn
    assert str(parse_dn(str(dn))) == str(dn)


@pytest.mark.parametrize("text", ["mbv3_w0.5", "mbv3_w0.625", "mbv3_w1.0", "resnet_w1.25_d2343",
                                  "resnet_w1.0_d2222", "resnet_w1.5_d1111"])
def test_canonical_strings_print_unchanged(text):
    assert str(parse_dn(text)) == text


def test_aliases():
    assert parse_dn("resnet18") == DNSpec("resnet", 1.0, (2, 2, 2, 2))
    assert parse_dn("resnet34") == DNSpec("resnet", 1.0, (3, 4, 6, 3))
    assert str(parse_dn("resnet18")) == "resnet_w1.0_d2222"
    assert parse_dn("mbv3_w1") == parse_dn("mbv3_w1.0")


def test_predefined_sets():
    assert [dn.width for dn in DN_SETS["mbv3"]] == [0.5, 0.625, 0.75, 0.875, 1.0]
    assert [dn.width for dn in DN_SETS["mbv3_s3"]] == [0.5, 0.75, 1.0]
    assert len(DN_SETS["mbv3_s11"]) == 11 and DN_SETS["mbv3_s11"][1].width == 0.55
    resnets = DN_SETS["resnet"]
    assert len(resnets) == 9
    assert {dn.width for dn in resnets} == {1.0, 1.25, 1.5}
    assert {dn.depths for dn in resnets} == {(2, 2, 2, 2), (2, 3, 4, 3), (3, 4, 6, 3)}
    assert smallest_dn(resnets) == parse_dn("resnet18")
    assert largest_dn(resnets) == parse_dn("resnet_w1.5_d3463")
    assert largest_dn(DN_SETS["mbv3"]) == parse_dn("mbv3_w1.0")


def test_dn_set_forms():
    assert dn_set("resnet18") == (parse_dn("resnet18"),)
    assert dn_set(" mbv3_s3 ") == DN_SETS["mbv3_s3"]
    assert dn_set("mbv3") == DN_SETS["mbv3_s5"]  # a family's name is its default set
    both = (parse_dn("mbv3_w0.5"), parse_dn("mbv3_w1.0"))
    assert dn_set(["mbv3_w0.5", "mbv3_w1.0"]) == both
    assert dn_set("mbv3_w0.5, mbv3_w1.0,mbv3_w0.5") == both  # the comma form: each DN once, in order
    with pytest.raises(ValueError, match="one family"):
        dn_set(["mbv3_w0.5", "resnet18"])
    with pytest.raises(ValueError, match="one family"):
        dn_set("mbv3_w0.5,resnet18")
    with pytest.raises(ValueError, match="neither a DN set"):
        dn_set("mbv3_s7")
    with pytest.raises(ValueError, match="malformed"):
        dn_set("mbv3_w0.5,mbv3_s3")  # a list holds DNs, not sets


def test_every_set_comes_from_its_family():
    """DN_SETS is what the registered families declare, each family's name standing for its default set."""
    declared = {name: dn_set(list(dns)) for family in FAMILIES.values() for name, dns in family.sets.items()}
    defaults = {family.name: declared[family.default_set] for family in FAMILIES.values()}
    assert DN_SETS == {**declared, **defaults}
    for name, dns in declared.items():
        assert {dn.family for dn in dns} == {name.split("_")[0]}


BAD = {
    "vgg_w1.0": ("unknown DN family", None),
    "mbv3_w0.3": ("not on the mbv3 grid", "mbv3"),
    "mbv3_w1.25": ("not on the mbv3 grid", "mbv3"),
    "resnet_w2.0_d2222": ("not on the resnet grid", "resnet"),
    "resnet_w1.0_d3473": ("exceed", "resnet"),
    "resnet_w1.0_d4463": ("exceed", "resnet"),
    "resnet_w1.0_d0222": ("exceed", "resnet"),
    "resnet_w1.0_d222": ("stage depths", "resnet"),
    "resnet_w1.0": ("stage depths", "resnet"),
    "mbv3_w0.5_d2222": ("no depth part", "mbv3"),
    "mbv3-0.5": ("malformed", None),
    "mbv3_0.5": ("malformed", "mbv3"),
    "resnet_w1.0_dxyz": ("malformed", "resnet"),
    "": ("malformed", None),
}


@pytest.mark.parametrize("text", sorted(BAD))
def test_bad_specs_raise_with_valid_list(text):
    fragment, family = BAD[text]
    with pytest.raises(ValueError, match=fragment) as info:
        parse_dn(text)
    message = str(info.value)
    for fam in ([family] if family else FAMILIES):
        for dn in DN_SETS[fam]:
            assert str(dn) in message


def test_bad_type():
    with pytest.raises(TypeError):
        parse_dn(0.5)
    with pytest.raises(TypeError):  # parsed once, at the edge: a DNSpec is not parsed again
        parse_dn(parse_dn("resnet18"))


def test_register_family_refuses_clashes():
    mbv3 = FAMILIES["mbv3"]
    with pytest.raises(ValueError, match="registered already"):
        register_family(mbv3)
    with pytest.raises(ValueError, match="lowercase"):
        register_family(dataclasses.replace(mbv3, name="MBV3"))
    with pytest.raises(ValueError, match="another family holds"):
        register_family(dataclasses.replace(mbv3, name="mbv4"))  # its set names are mbv3's
    with pytest.raises(ValueError, match="default set"):
        register_family(dataclasses.replace(mbv3, name="mbv4", sets={"mbv4_s1": ("mbv4_w1.0",)}))
    with pytest.raises(ValueError, match="holds mbv3 DNs"):
        register_family(dataclasses.replace(mbv3, name="mbv4", sets={"mbv4_s1": ("mbv3_w1.0",)}, default_set="mbv4_s1"))
    assert "mbv4" not in FAMILIES and "mbv4_s1" not in DN_SETS
    register_family(dataclasses.replace(mbv3, name="mbv4", sets={"mbv4_s1": ("mbv4_w1.0",)}, default_set="mbv4_s1"))
    try:
        assert dn_set("mbv4") == (DNSpec("mbv4", 1.0),) and parse_dn("mbv4_w0.55").info.name == "mbv4"
    finally:
        unregister_family("mbv4")
    assert "mbv4" not in FAMILIES and "mbv4" not in DN_SETS and "mbv4_s1" not in DN_SETS
    with pytest.raises(ValueError, match="unknown DN family"):
        parse_dn("mbv4_w1.0")


def test_fits_in():
    assert parse_dn("resnet18").fits_in(parse_dn("resnet34"))
    assert not parse_dn("resnet34").fits_in(parse_dn("resnet_w1.5_d2222"))
    assert not parse_dn("mbv3_w1.0").fits_in(parse_dn("mbv3_w0.5"))
    assert not parse_dn("mbv3_w0.5").fits_in(parse_dn("resnet18"))
