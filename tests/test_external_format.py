"""The export-format seam proven from outside: a format defined here and registered with ``register_format``,
with no edit to the package, is written and checked by the DN export (library and command), offered among the
command's --format choices, and measured and exported by the DN selection."""
import runpy

import pytest
import torch
from conftest import randomize_bn_stats

from dspnet_d2 import build_static_dn, parse_dn
from dspnet_d2.deploy.commands import export_dn_file
from dspnet_d2.deploy.formats import ExportFormat, get_format, parity_error, register_format, unregister_format
from dspnet_d2.deploy.selection import Settings, runtimes
from dspnet_d2.deploy.selection.runners import deploy
from dspnet_d2.deploy.selection.selector import ExportRequest
from dspnet_d2.errors import InvalidInputError, cli_main
from dspnet_d2.weights import save_dn_file

ROOT = __file__.rsplit("/tests/", 1)[0]
RESOLUTION = 64
DN = parse_dn("mbv3_w0.5")


def _save(model, path, options):
    torch.save(model, path)  # the whole module pickled: no trace, any batch and size
    return path


def _load(path, device="cpu", threads=None):
    return torch.load(path, map_location=device, weights_only=False)


PICKLED = ExportFormat("pickled", ".pickled", _save, _load, any_shape=True)


@pytest.fixture
def pickled():
    register_format(PICKLED)
    yield PICKLED
    unregister_format(PICKLED.name)


@pytest.fixture
def dn_file(tmp_path):
    """A DN file of mbv3_w0.5 with a 10-class classifier and random BN statistics, and its model in eval mode."""
    torch.manual_seed(0)
    model = build_static_dn(DN, num_classes=10)
    with torch.no_grad():
        randomize_bn_stats(model)
    save_dn_file(str(tmp_path / "dn.pth"), DN, model.state_dict())
    return tmp_path / "dn.pth", model.eval()


def test_the_dn_export_writes_and_checks_a_registered_format(pickled, dn_file, tmp_path, capsys):
    source, model = dn_file
    output = tmp_path / f"m{pickled.suffix}"
    assert export_dn_file(str(source), str(output), "pickled", dynamic_size=True) == 0
    assert "as pickled (traced: any batch and size)" in capsys.readouterr().out  # its own load checked it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dn.pth", "m.pickled"]  # no temporary file left
    run = get_format("pickled").load(str(output))
    for shape in ((1, 3, RESOLUTION, RESOLUTION), (3, 3, 80, 96)):
        x = torch.randn(*shape)
        with torch.no_grad():
            assert parity_error(run(x), model(x)) < 1e-6


def test_the_export_command_offers_a_registered_format(pickled, dn_file, tmp_path, capsys):
    main = runpy.run_path(f"{ROOT}/tools/export_dn.py")["main"]
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "pickled" in capsys.readouterr().out
    source, _ = dn_file
    output = tmp_path / "cli.pickled"
    code = cli_main(lambda: main([str(source), "--format", "pickled", "--resolution", str(RESOLUTION),
                                  "-o", str(output)]))
    assert code == 0 and output.is_file(), capsys.readouterr().err


def test_a_format_unregistered_is_refused(dn_file, tmp_path):
    with pytest.raises(InvalidInputError, match="unknown format 'pickled'; choose one of onnx, torchscript, pt2"):
        export_dn_file(str(dn_file[0]), str(tmp_path / "m.pickled"), "pickled")
    assert "pickled" not in runtimes()


def test_the_selection_measures_and_exports_a_registered_format(pickled, dn_file, tmp_path):
    _, model = dn_file
    assert "pickled" in runtimes() and Settings("pickled", threads=1).resolved().runtime == "pickled"
    deployed = deploy(model, Settings("pickled", threads=1), str(tmp_path), str(DN), RESOLUTION)
    assert deployed.file.endswith(".pickled")
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        torch.testing.assert_close(deployed.run(x), model(x), atol=0, rtol=0)
    assert ExportRequest("pickled").output(str(DN), "out") == f"out/{DN}.pickled"
    with pytest.raises(InvalidInputError, match="--channels-last applies to the eager, torchscript, pt2 and pickled"):
        Settings("onnxruntime", channels_last=True).resolved()
