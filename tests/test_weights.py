"""One rule for which DN a weight file serves (``dn_in_source``), followed by every reader: export, conversion,
evaluation and the supervised start."""
import pytest
import torch

from dspnet_d2 import build_supernet, slice_dn
from dspnet_d2.dn import DN_SETS, parse_dn
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.weights import PRETRAIN_FORMAT, describe, dn_in_source, read_weights, save_dn_file
from pretrain.supervised.method import load_init
from pretrain_utils import run_tool

S3 = DN_SETS["mbv3_s3"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A supernet checkpoint of mbv3_s3, an exported mbv3_w0.75 and an exported full network."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    supernet = build_supernet(S3)
    torch.save({"format": PRETRAIN_FORMAT, "signature": {"dns": [str(d) for d in S3]},
                "online": {f"encoder.{k}": v for k, v in supernet.state_dict().items()}}, root / "supernet.pth")
    for dn in map(parse_dn, ("mbv3_w0.75", "mbv3_w1.0")):
        save_dn_file(str(root / f"{dn}.pth"), dn, slice_dn(supernet, dn).state_dict())
    return root


def test_a_supernet_serves_its_dns_and_a_single_dn_file_its_own_only():
    assert dn_in_source("s.pth", S3, parse_dn("mbv3_w0.5")) == parse_dn("mbv3_w0.5")
    assert dn_in_source("s.pth", S3, parse_dn("mbv3_w0.625")) == parse_dn("mbv3_w0.625")  # a sub-network of the largest
    with pytest.raises(InvalidInputError, match="choose one"):
        dn_in_source("s.pth", S3)
    with pytest.raises(InvalidInputError, match="not of this checkpoint's family"):
        dn_in_source("s.pth", S3, parse_dn("resnet18"))
    single = (parse_dn("mbv3_w0.75"),)
    assert dn_in_source("d.pth", single) == single[0] == dn_in_source("d.pth", single, parse_dn("mbv3_w0.75"))
    with pytest.raises(InvalidInputError, match="single network mbv3_w0.75"):
        dn_in_source("d.pth", single, parse_dn("mbv3_w0.5"))
    assert dn_in_source("d.pth", single, parse_dn("mbv3_w0.5"), slice_single=True) == parse_dn("mbv3_w0.5")
    with pytest.raises(InvalidInputError, match="is not in"):
        dn_in_source("d.pth", single, parse_dn("mbv3_w1.0"), slice_single=True)
    resnet18 = parse_dn("resnet18")
    assert dn_in_source("tv.pth", None, resnet18) == resnet18  # shapes are checked at build time
    with pytest.raises(InvalidInputError, match="name the DN"):
        dn_in_source("tv.pth", None)


def test_every_reader_refuses_a_slice_of_a_single_dn_file(files, capsys, monkeypatch):
    exported = str(files / "mbv3_w0.75.pth")
    model, dn = read_weights(exported).model()
    assert str(dn) == "mbv3_w0.75"
    with pytest.raises(InvalidInputError, match="single network mbv3_w0.75"):
        read_weights(exported).model(parse_dn("mbv3_w0.5"))
    result = run_tool("convert_to_d2", [exported, "--dn", "mbv3_w0.5", "-o", files / "x.pkl"], capsys, monkeypatch)
    assert result.code == 2 and "single network mbv3_w0.75" in result.err
    assert not (files / "x.pkl").exists()
    with pytest.raises(InvalidInputError, match="single network mbv3_w0.75"):
        read_weights(exported).select("mbv3_w0.5")
    # the supernet serves every DN, to every reader
    assert str(read_weights(str(files / "supernet.pth")).model(parse_dn("mbv3_w0.5"))[1]) == "mbv3_w0.5"
    supernet = read_weights(str(files / "supernet.pth"))
    assert supernet.select("all") == supernet.select("mbv3_s3") == S3
    assert supernet.select("mbv3_w1.0, mbv3_w0.625") == (parse_dn("mbv3_w1.0"), parse_dn("mbv3_w0.625"))


def test_the_supervised_start_slices_a_full_single_network_by_its_explicit_rule(files):
    model = build_supernet(S3, num_classes=4)
    assert load_init(model, str(files / "mbv3_w1.0.pth")) == "BYOL init"
    with pytest.raises(InvalidInputError, match="full network mbv3_w1.0"):
        load_init(build_supernet(S3, num_classes=4), str(files / "mbv3_w0.75.pth"))


def test_the_reader_follows_a_files_own_description_and_reads_older_files(files, tmp_path):
    legacy = read_weights(str(files / "supernet.pth"))  # written without a description: its format's layout
    assert legacy.kind == PRETRAIN_FORMAT and legacy.shares_bn and legacy.dns == S3
    # a checkpoint that keeps its encoder elsewhere says so, and the reader follows it
    moved = {"format": PRETRAIN_FORMAT, **describe(S3, "student", "backbone."), "config": "SEED: 3\n",
             "student": {f"backbone.{k}": v for k, v in legacy.weights.items()}}
    torch.save(moved, tmp_path / "moved.pth")
    served = read_weights(str(tmp_path / "moved.pth"))
    assert served.dns == S3 and served.record["config"] == "SEED: 3\n"
    assert all(torch.equal(served.weights[k], v) for k, v in legacy.weights.items())
    dn_file = torch.load(files / "mbv3_w0.75.pth", weights_only=True)  # exported DNs describe themselves too
    assert dn_file["dns"] == ["mbv3_w0.75"] and dn_file["encoder"] == {"entry": "state_dict", "prefix": ""}


def test_export_dn_reads_its_source_once(files, tmp_path, capsys, monkeypatch):
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    result = run_tool("export_dn", [files / "mbv3_w0.75.pth", "--format", "state_dict", "-o", tmp_path / "x.pth"],
                      capsys, monkeypatch)
    assert result.code == 0, result.err
    assert loads == [str(files / "mbv3_w0.75.pth")]
