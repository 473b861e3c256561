"""Deployable DNs: ONNX (ONNX Runtime parity) and TorchScript (reloaded in a fresh process) for the smallest
and largest DN of each family; every DN under ``-m deploy_sweep``; tools/export_dn.py."""
import runpy
import subprocess
import sys

import pytest
import torch
import torchvision
from conftest import randomize_bn_stats

from dspnet_d2 import build_supernet, parse_dn, slice_dn
from dspnet_d2.deploy.formats import check_deployed, export_onnx, export_torchscript, parity_error, run_onnx
from dspnet_d2.dn import DN_SETS
from dspnet_d2.errors import cli_main
from dspnet_d2.weights import read_weights, save_dn_file

ROOT = __file__.rsplit("/tests/", 1)[0]
ATOL = RTOL = 1e-4
EDGE_DNS = ["mbv3_w0.5", "mbv3_w1.0", "resnet_w1.0_d2222", "resnet_w1.5_d3463"]
ALL_DNS = [str(dn) for name in ("mbv3_s5", "resnet_s9") for dn in DN_SETS[name]]
RESOLUTION = 64  # strides up to 32: every stage sees a 2x2 map or more


def deployable(dn: str, num_classes: int = 10) -> torch.nn.Module:
    """An exported DN with a classifier and random, non-trivial BN statistics, in eval mode."""
    torch.manual_seed(0)
    dn = parse_dn(dn)
    supernet = build_supernet(DN_SETS[dn.family], num_classes=num_classes)
    with torch.no_grad():
        randomize_bn_stats(supernet)
    return slice_dn(supernet, dn).eval()


def demo_images(count: int = 3) -> torch.Tensor:
    """Normalised demo images (the embedded shapes, generated in memory), upsampled to RESOLUTION."""
    from dspnet_d2.demo.make_demo_data import CLASSES, classification_sample

    images = [torch.from_numpy(classification_sample(CLASSES[i], i, "val")[0].copy()).permute(2, 0, 1).float() / 255
              for i in range(count)]
    batch = torch.nn.functional.interpolate(torch.stack(images), size=RESOLUTION, mode="bilinear")
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return (batch - mean) / std


def check_onnx(dn, tmp_path):
    pytest.importorskip("onnxruntime", reason="the deploy extra: pip install -e '.[deploy]'")
    model = deployable(dn)
    path = export_onnx(model, str(tmp_path / f"{dn}.onnx"), RESOLUTION, dynamic_batch=True)
    for images in (torch.randn(1, 3, RESOLUTION, RESOLUTION), torch.randn(4, 3, RESOLUTION, RESOLUTION), demo_images()):
        with torch.no_grad():
            expected = model(images)
        got = run_onnx(path, images)
        assert got.shape == expected.shape == (len(images), 10)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


# a fresh process, nothing imported from this package: each TorchScript file loaded and run on its inputs, one
# verdict line per file
RELOAD_TORCHSCRIPT = """\
import sys, torch
for path, io_path in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        io = torch.load(io_path)
        out = torch.jit.load(path)(io["images"])
        torch.testing.assert_close(out, io["expected"], atol=1e-5, rtol=1e-5)
        print(path, "same", tuple(out.shape))
    except Exception as err:
        print(path, "failed:", " ".join(str(err).split()))
"""


def export_torchscript_case(dn, folder) -> tuple[str, str]:
    """DN ``dn`` as a TorchScript file, and a file of inputs with the PyTorch model's outputs."""
    model = deployable(dn)
    path = export_torchscript(model, str(folder / f"{dn}.pt"), RESOLUTION)
    images = torch.cat([torch.randn(2, 3, RESOLUTION, RESOLUTION), demo_images()])
    with torch.no_grad():
        expected = model(images)
    torch.save({"images": images, "expected": expected}, folder / f"{dn}.io.pt")
    return path, str(folder / f"{dn}.io.pt")


def reload_torchscript(cases: list[tuple[str, str]]) -> dict[str, str]:
    """Each case of ``export_torchscript_case`` run in one fresh process: {file: its verdict}."""
    result = subprocess.run([sys.executable, "-c", RELOAD_TORCHSCRIPT, *[f for case in cases for f in case]],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def check_torchscript(dn, tmp_path):
    path, io_path = export_torchscript_case(dn, tmp_path)
    assert reload_torchscript([(path, io_path)]) == {path: "same (5, 10)"}


@pytest.fixture(scope="module")
def torchscript_of_edge_dns(tmp_path_factory):
    """The edge DNs as TorchScript files, reloaded in one fresh process (one torch import, not one per DN):
    {dn: (file, verdict)}."""
    folder = tmp_path_factory.mktemp("torchscript")
    cases = {dn: export_torchscript_case(dn, folder) for dn in EDGE_DNS}
    verdicts = reload_torchscript(list(cases.values()))
    return {dn: (path, verdicts.get(path)) for dn, (path, _) in cases.items()}


@pytest.mark.parametrize("dn", EDGE_DNS)
def test_onnx_equals_pytorch_under_onnxruntime(dn, tmp_path):
    check_onnx(dn, tmp_path)


@pytest.mark.parametrize("dn", EDGE_DNS)
def test_torchscript_reloaded_in_a_fresh_process_equals_pytorch(dn, torchscript_of_edge_dns):
    path, verdict = torchscript_of_edge_dns[dn]
    assert verdict == "same (5, 10)", (path, verdict)


@pytest.mark.deploy_sweep
@pytest.mark.parametrize("dn", ALL_DNS)
def test_every_dn_exports_to_onnx_and_torchscript(dn, tmp_path):
    check_onnx(dn, tmp_path)
    check_torchscript(dn, tmp_path)


def test_read_weights_keeps_the_classifier_of_a_file_that_has_one(tmp_path):
    model = deployable("mbv3_w0.75", num_classes=7)
    save_dn_file(str(tmp_path / "dn.pth"), parse_dn("mbv3_w0.75"), model.state_dict())
    loaded, dn = read_weights(str(tmp_path / "dn.pth")).model(classifier=True)
    assert str(dn) == "mbv3_w0.75" and not loaded.training
    images = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), atol=0, rtol=0)
    encoder, _ = read_weights(str(tmp_path / "dn.pth")).model()
    assert encoder(images).shape == (2, 720)  # 960 x 0.75: the pooled features
    torchvision.models.mobilenet_v3_large(width_mult=0.75, num_classes=7).load_state_dict(loaded.state_dict())


def run_export(args, capsys):
    main = runpy.run_path(f"{ROOT}/tools/export_dn.py")["main"]  # the tool's module, not run as __main__
    code = cli_main(lambda: main([str(a) for a in args]))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2", "state_dict"])
def test_export_dn_command_writes_a_checked_file(fmt, tmp_path, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the deploy extra: pip install -e '.[deploy]'")
    model = deployable("resnet18", num_classes=5)
    save_dn_file(str(tmp_path / "resnet18.pth"), parse_dn("resnet18"), model.state_dict())
    out = tmp_path / f"resnet18.{fmt}"
    code, stdout, err = run_export([tmp_path / "resnet18.pth", "--format", fmt, "--resolution", RESOLUTION,
                                    "--dynamic-batch", "-o", out], capsys)
    assert code == 0, err
    images = torch.randn(3, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        expected = model(images)
    if fmt == "onnx":
        assert "max |onnx - PyTorch|" in stdout
        torch.testing.assert_close(run_onnx(str(out), images), expected, atol=ATOL, rtol=RTOL)
    elif fmt == "torchscript":
        torch.testing.assert_close(torch.jit.load(str(out))(images), expected, atol=1e-5, rtol=1e-5)
    elif fmt == "pt2":
        torch.testing.assert_close(torch.export.load(str(out)).module()(images), expected, atol=1e-5, rtol=1e-5)
    else:
        state = torch.load(out, weights_only=True)["state_dict"]
        tv = torchvision.models.resnet18(num_classes=5).eval()
        tv.load_state_dict(state, strict=True)
        torch.testing.assert_close(tv(images), expected, atol=0, rtol=0)


def test_export_dn_command_refuses_what_it_cannot_do(tmp_path, capsys, monkeypatch):
    save_dn_file(str(tmp_path / "w.pth"), parse_dn("mbv3_w0.5"), deployable("mbv3_w0.5").state_dict())
    code, _, err = run_export([tmp_path / "w.pth", "--dn", "mbv3_w1.0", "--format", "onnx", "-o", tmp_path / "x"], capsys)
    assert code == 2 and "DN mbv3_w1.0 is not in" in err
    code, _, err = run_export([tmp_path / "nowhere.pth", "--format", "onnx", "-o", tmp_path / "x"], capsys)
    assert code == 2 and err.startswith("error:")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the deploy extra not installed
    code, _, err = run_export([tmp_path / "w.pth", "--format", "onnx", "-o", tmp_path / "x"], capsys)
    assert code == 2 and 'pip install -e ".[deploy]"' in err


def test_a_dn_of_a_supernet_checkpoint_gets_its_own_bn_statistics(tmp_path, capsys):
    from dspnet_d2.demo.make_demo_data import make_demo_dataset
    from dspnet_d2.images import ImageFolderIO
    from dspnet_d2.recalibration import recalibrate_on_images
    from dspnet_d2.weights import PRETRAIN_FORMAT

    torch.manual_seed(0)
    supernet = build_supernet(DN_SETS["mbv3_s5"])
    with torch.no_grad():
        randomize_bn_stats(supernet)
    checkpoint = {"format": PRETRAIN_FORMAT, "signature": {"dns": [str(d) for d in DN_SETS["mbv3_s5"]]},
                  "online": {f"encoder.{k}": v for k, v in supernet.state_dict().items()}}
    torch.save(checkpoint, tmp_path / "checkpoint.pth")
    args = [tmp_path / "checkpoint.pth", "--dn", "mbv3_w0.5", "--format", "state_dict", "-o", tmp_path / "dn.pth"]
    with pytest.raises(SystemExit):  # the shared statistics would be wrong for the DN: it must say which to use
        run_export(args, capsys)
    assert "needs --data-root" in capsys.readouterr().err
    data = make_demo_dataset(tmp_path / "data", train_per_class=4, val_per_class=1, coco_train_images=1,
                             coco_val_images=1)
    code, _, err = run_export(args + ["--data-root", data, "--resolution", 32, "--batches", 1, "--batch-size", 32], capsys)
    assert code == 0, err
    written = torch.load(tmp_path / "dn.pth", weights_only=True)
    reference = slice_dn(supernet, parse_dn("mbv3_w0.5"))
    info = recalibrate_on_images(reference, ImageFolderIO(str(data / "train")), 32, 32, 1, 0)
    assert written["bn_recalibration"] == info
    sliced = slice_dn(supernet, parse_dn("mbv3_w0.5")).state_dict()
    for key, value in reference.state_dict().items():
        assert torch.equal(written["state_dict"][key], value), key
    assert not torch.equal(written["state_dict"]["features.1.block.0.1.running_mean"],
                           sliced["features.1.block.0.1.running_mean"])


def trained_scale(dn: str = "resnet18", gain: float = 2.3) -> torch.nn.Module:
    """A DN encoder whose pooled features reach ~1e4-1e5, as a trained DN's do (random BN statistics stay
    near 1): every BN's scale multiplied by ``gain``."""
    torch.manual_seed(0)
    supernet = build_supernet(DN_SETS["resnet_s9"])
    with torch.no_grad():
        randomize_bn_stats(supernet)
        for m in supernet.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.mul_(gain)
    return slice_dn(supernet, parse_dn(dn)).eval()


def test_parity_is_judged_against_each_images_output_scale():
    expected = torch.tensor([[2e4, 1e-3, 5.0], [0.5, -0.2, 0.1]])
    got = expected + torch.tensor([[0.1, 0.1, -0.1], [1e-5, 0.0, 0.0]])
    assert not torch.allclose(got, expected, atol=1e-4, rtol=1e-4)  # an element-wise check fails small outputs
    assert parity_error(got, expected) == pytest.approx(max(0.1 / 2e4, 1e-5 / 1.0), rel=1e-2)
    assert parity_error(expected + 0.01, expected) == pytest.approx(0.01, rel=1e-3)  # scale < 1: absolute
    with pytest.raises(ValueError, match="shape"):
        parity_error(got[:1], expected)


def test_onnx_of_a_trained_scale_dn_takes_any_batch_and_on_request_any_size(tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the deploy extra: pip install -e '.[deploy]'")
    model = trained_scale()
    images = torch.randn(5, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        assert model(images).abs().max() > 1e4
    save_dn_file(str(tmp_path / "dn.pth"), parse_dn("resnet18"), model.state_dict())
    code, out, err = run_export([tmp_path / "dn.pth", "--format", "onnx", "--resolution", RESOLUTION,
                                 "-o", tmp_path / "fixed.onnx"], capsys)
    assert code == 0, err
    assert f"any x 3 x {RESOLUTION} x {RESOLUTION}" in out and "checked at batches [1, 3]" in out
    for batch in (1, 5):  # any batch by default
        assert parity_error(run_onnx(str(tmp_path / "fixed.onnx"), images[:batch]), model(images[:batch])) < 1e-4
    with pytest.raises(Exception, match="dimensions"):  # only R x R without --dynamic-size
        run_onnx(str(tmp_path / "fixed.onnx"), torch.randn(1, 3, 80, 96))
    code, out, err = run_export([tmp_path / "dn.pth", "--format", "onnx", "--resolution", RESOLUTION, "--dynamic-size",
                                 "-o", tmp_path / "any.onnx"], capsys)
    assert code == 0, err
    assert f"sizes {RESOLUTION}x{RESOLUTION}, 83x101" in out
    for shape in ((2, 3, 97, 131), (1, 3, 224, 160)):
        x = torch.randn(*shape)
        with torch.no_grad():
            assert parity_error(run_onnx(str(tmp_path / "any.onnx"), x), model(x)) < 1e-4


def test_static_batch_and_dynamic_size_of_a_pt2_program(tmp_path, capsys):
    model = deployable("mbv3_w0.5")
    save_dn_file(str(tmp_path / "dn.pth"), parse_dn("mbv3_w0.5"), model.state_dict())
    code, out, err = run_export([tmp_path / "dn.pth", "--format", "pt2", "--resolution", RESOLUTION, "--dynamic-size",
                                 "-o", tmp_path / "m.pt2"], capsys)
    assert code == 0 and "checked at batches [1, 3]" in out, err
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = torch.randn(4, 3, 70, 90)
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), atol=1e-5, rtol=1e-5)
    code, _, err = run_export([tmp_path / "dn.pth", "--format", "pt2", "--resolution", 32, "--dynamic-size",
                               "-o", tmp_path / "small.pt2"], capsys)
    assert code == 2 and "give a resolution >= 64, not 32" in err  # traced below the range it would serve
    code, out, err = run_export([tmp_path / "dn.pth", "--format", "pt2", "--resolution", RESOLUTION, "--static-batch",
                                 "-o", tmp_path / "s.pt2"], capsys)
    assert code == 0 and "checked at batches [2]" in out, err
    with pytest.raises(Exception):
        torch.export.load(str(tmp_path / "s.pt2")).module()(torch.randn(3, 3, RESOLUTION, RESOLUTION))


def test_the_parity_check_fails_a_file_of_another_network(tmp_path):
    model = trained_scale()
    path = export_torchscript(model, str(tmp_path / "m.pt"), RESOLUTION)
    check_deployed(model, path, "torchscript", [(RESOLUTION, RESOLUTION)])
    with torch.no_grad():
        model.fc.weight.mul_(1.001) if hasattr(model.fc, "weight") else model.layer4[-1].bn2.weight.mul_(1.001)
    with pytest.raises(RuntimeError, match="differs from the PyTorch model"):
        check_deployed(model, path, "torchscript", [(RESOLUTION, RESOLUTION)])


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An ImageFolder root of 16 demo images: the parity check takes 8 of them."""
    from dspnet_d2.demo.make_demo_data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("images") / "data", train_per_class=2, val_per_class=1,
                             coco_train_images=1, coco_val_images=1)


@pytest.mark.parametrize("fmt,batch", [("onnx", None), ("onnx", 1), ("pt2", 3)])
def test_a_static_batch_file_is_checked_at_its_own_batch_on_real_images(fmt, batch, image_folder, tmp_path, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the deploy extra: pip install -e '.[deploy]'")
    model = deployable("mbv3_w0.5")
    save_dn_file(str(tmp_path / "dn.pth"), parse_dn("mbv3_w0.5"), model.state_dict())
    out = tmp_path / f"m.{fmt}"
    static = ["--static-batch"] + ([batch] if batch else [])  # no value: batch 2, as before it took one
    code, stdout, err = run_export([tmp_path / "dn.pth", "--format", fmt, "--resolution", RESOLUTION, *static,
                                    "--data-root", image_folder, "--no-bn-recalibration", "-o", out], capsys)
    batch = batch or 2
    assert code == 0, err
    assert f"({batch} x 3 x {RESOLUTION} x {RESOLUTION})" in stdout and f"checked at batches [{batch}]" in stdout
    assert f"and 8 images of {image_folder}" in stdout  # 8 is no multiple of 3: the last batch filled up
    run = run_onnx if fmt == "onnx" else (lambda path, x: torch.export.load(path).module()(x))
    images = torch.randn(batch + 1, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        assert parity_error(run(str(out), images[:batch]), model(images[:batch])) < 1e-4
        with pytest.raises(Exception):  # the file's own batch only
            run(str(out), images)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dn.pth", out.name]  # no temporary file left


def test_a_file_that_fails_its_check_is_not_kept(tmp_path, capsys, monkeypatch):
    import copy

    from test_cli_errors import assert_one_error_line

    import dspnet_d2.deploy.formats

    save_dn_file(str(tmp_path / "dn.pth"), parse_dn("mbv3_w0.5"), deployable("mbv3_w0.5").state_dict())
    write_program = dspnet_d2.deploy.formats.export_program

    def another_network(model, path, *args, **kwargs):  # the file of weights 1% off in the last layer
        other = copy.deepcopy(model)
        with torch.no_grad():
            other.classifier[-1].weight.mul_(1.01)
        return write_program(other, path, *args, **kwargs)

    monkeypatch.setattr(dspnet_d2.deploy.formats, "export_program", another_network)  # what the pt2 format calls
    out = tmp_path / "m.pt2"
    out.write_bytes(b"an earlier file")
    code, _, err = run_export([tmp_path / "dn.pth", "--format", "pt2", "--resolution", RESOLUTION, "--static-batch", 1,
                               "-o", out], capsys)
    assert_one_error_line(code, err, f"{out} not written: ")
    assert "differs from the PyTorch model on a batch of (1, 3, 64, 64)" in err
    assert out.read_bytes() == b"an earlier file"  # only a file that passed takes the name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dn.pth", "m.pt2"]
    with pytest.raises(SystemExit):  # a usage error
        run_export([tmp_path / "dn.pth", "--format", "pt2", "--static-batch", 0, "-o", out], capsys)
    assert "--static-batch takes a batch size of 1 or more, not 0" in capsys.readouterr().err
