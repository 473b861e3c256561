"""Conversion to detectron2's .pkl: key names and shapes (no detectron2 needed)."""
import pickle

import pytest
import torch
from pretrain_utils import run_tool, tiny_data
from torchvision.models import mobilenet_v3_large, resnet18

from dspnet_d2 import DN_SETS, build_static_dn, build_supernet, parse_dn, slice_dn
from dspnet_d2.deploy.convert import D2_PREFIX, dn_backbone_state, read_d2_pkl
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.images import ImageFolderIO
from dspnet_d2.recalibration import recalibrate_on_images
from dspnet_d2.weights import read_weights


@pytest.fixture
def convert(capsys, monkeypatch):
    """``python tools/convert_to_d2.py ARGS``, run in this process: its result (exit code, stdout, stderr)."""
    return lambda *args: run_tool("convert_to_d2", args, capsys, monkeypatch)


def _ok(result):
    assert result.code == 0, result.err
    return result.out


@pytest.fixture(scope="module")
def pretrain_ckpt(tmp_path_factory):
    """A minimal dspnet pretraining checkpoint of the mbv3_s3 supernet."""
    torch.manual_seed(0)
    net = build_supernet(DN_SETS["mbv3_s3"])
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_00000001.pth"
    torch.save({"format": "dspnet-pretrain-v1", "signature": {"dns": ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"]},
                "online": {f"encoder.{k}": v for k, v in net.state_dict().items()}}, path)
    return path, net


@pytest.mark.parametrize("dn", ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"])
def test_dn_pkl_has_backbone_keys_and_shapes(pretrain_ckpt, tmp_path, dn, convert):
    path, net = pretrain_ckpt
    out = tmp_path / f"{dn}.pkl"
    _ok(convert(path, "--dn", dn, "--no-bn-recalibration", "-o", out))  # the supernet's shared statistics
    data = pickle.load(open(out, "rb"))
    assert data["__author__"] == "dspnet" and data["matching_heuristics"] is False
    expected = {k: v for k, v in slice_dn(net, parse_dn(dn)).state_dict().items() if not k.startswith("classifier")}
    assert set(data["model"]) == {D2_PREFIX + k for k in expected}
    for key, value in expected.items():
        assert torch.equal(torch.from_numpy(data["model"][D2_PREFIX + key]), value), key


def test_supernet_pkl_and_exported_dn_source(pretrain_ckpt, tmp_path, convert):
    path, net = pretrain_ckpt
    _ok(convert(path, "--supernet", "-o", tmp_path / "all.pkl"))
    with pytest.raises(ValueError, match="DSPNetCheckpointer"):  # what detectron2's own checkpointer does
        pickle.load(open(tmp_path / "all.pkl", "rb"))
    data = read_d2_pkl(open(tmp_path / "all.pkl", "rb"))
    assert data["dspnet_supernet"] == "mbv3_w1.0"
    assert data["model"][D2_PREFIX + "features.16.0.weight"].shape == (960, 160, 1, 1)
    exported = tmp_path / "mbv3_w0.5.pth"
    torch.save({"format": "dspnet-dn-v1", "dn": "mbv3_w0.5",
                "state_dict": slice_dn(net, parse_dn("mbv3_w0.5")).state_dict()}, exported)
    _ok(convert(exported, "-o", tmp_path / "dn.pkl"))  # the DN comes from the file
    _ok(convert(path, "--dn", "mbv3_w0.5", "--no-bn-recalibration", "-o", tmp_path / "dn2.pkl"))
    a, b = pickle.load(open(tmp_path / "dn.pkl", "rb")), pickle.load(open(tmp_path / "dn2.pkl", "rb"))
    assert a["model"].keys() == b["model"].keys()
    assert all((a["model"][k] == b["model"][k]).all() for k in a["model"])


@pytest.mark.parametrize("dn,make", [("mbv3_w1.0", mobilenet_v3_large), ("resnet18", resnet18)])
def test_torchvision_state_dicts_are_accepted(tmp_path, dn, make, convert):
    source = tmp_path / "tv.pth"
    torch.save(make().state_dict(), source)
    _ok(convert(source, "--dn", dn, "-o", tmp_path / "tv.pkl"))
    model = pickle.load(open(tmp_path / "tv.pkl", "rb"))["model"]
    static = {k for k in build_static_dn(parse_dn(dn)).state_dict() if not k.startswith(("classifier", "fc"))}
    assert set(model) == {D2_PREFIX + k for k in static}


def test_bad_sources_and_dns_fail_clearly(pretrain_ckpt, tmp_path, convert):
    path, _ = pretrain_ckpt
    result = convert(path, "--dn", "resnet18", "-o", tmp_path / "x.pkl")
    assert result.code == 2 and "not in" in result.err
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(InvalidInputError, match="is not a dspnet checkpoint"):
        read_weights(str(tmp_path / "junk.pth"))
    with pytest.raises(ValueError, match="cannot be sliced"):
        dn_backbone_state(build_static_dn(parse_dn("mbv3_w0.5")).state_dict(), parse_dn("mbv3_w1.0"))


def test_per_dn_pkl_of_a_pretraining_checkpoint_gets_its_own_bn_statistics(pretrain_ckpt, tmp_path, convert):
    path, net = pretrain_ckpt
    data = tiny_data(tmp_path / "data")
    failed = convert(path, "--dn", "mbv3_w0.5", "-o", tmp_path / "x.pkl")
    assert failed.code == 2 and "--data-root" in failed.err and not (tmp_path / "x.pkl").exists()
    out = _ok(convert(path, "--dn", "mbv3_w0.5", "--data-root", data, "--resolution", "32", "--resize-ratio", "1",
                      "--batches", "2", "--batch-size", "16", "-o", tmp_path / "own.pkl"))
    assert "BN recalibrated on 32 images at 32 px (seed 0)" in out
    model = pickle.load(open(tmp_path / "own.pkl", "rb"))["model"]
    fresh = slice_dn(net, parse_dn("mbv3_w0.5"))  # the same DN, recalibrated here on the same seeded sample
    recalibrate_on_images(fresh, ImageFolderIO(str(data / "train")), resolution=32, batch_size=16, num_batches=2,
                          seed=0, resize_ratio=1.0)
    shared = slice_dn(net, parse_dn("mbv3_w0.5")).state_dict()
    for key, value in fresh.state_dict().items():
        if not key.startswith("classifier"):
            assert torch.equal(torch.from_numpy(model[D2_PREFIX + key]), value), key
    assert not torch.equal(torch.from_numpy(model[D2_PREFIX + "features.0.1.running_mean"]),
                           shared["features.0.1.running_mean"])
