import pytest

from dspnet_d2.dn import DN_SETS, FAMILIES, DNSpec, dn_set, largest_dn, parse_dn, smallest_dn

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
    assert dn_set(["mbv3_w0.5", "mbv3_w1.0"]) == (parse_dn("mbv3_w0.5"), parse_dn("mbv3_w1.0"))
    with pytest.raises(ValueError, match="one family"):
        dn_set(["mbv3_w0.5", "resnet18"])
    with pytest.raises(ValueError, match="neither a DN set"):
        dn_set("mbv3_s7")


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


def test_fits_in():
    assert parse_dn("resnet18").fits_in(parse_dn("resnet34"))
    assert not parse_dn("resnet34").fits_in(parse_dn("resnet_w1.5_d2222"))
    assert not parse_dn("mbv3_w1.0").fits_in(parse_dn("mbv3_w0.5"))
    assert not parse_dn("mbv3_w0.5").fits_in(parse_dn("resnet18"))
