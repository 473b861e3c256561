import subprocess
import sys

import pytest
from torchvision.models import mobilenet_v3_large, resnet18, resnet34

from dspnet_d2.complexity import count_flops, count_params, dn_complexity
from dspnet_d2.dn import parse_dn

BLOCK_DETECTRON2 = "import sys; sys.modules['detectron2'] = None; "


def test_core_imports_without_detectron2():
    code = BLOCK_DETECTRON2 + "import dspnet_d2, pretrain; from dspnet_d2 import build_supernet, slice_dn"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_detectron2_parts_say_how_to_install_it():
    """The four parts imported in turn in one process without detectron2 (one torch import instead of four; a
    failed import is not cached, so each raises its own ImportError): the last line a traceback would show."""
    modules = ["dspnet_d2.d2.backbone", "dspnet_d2.d2.checkpoint", "dspnet_d2.d2.train", "dspnet_d2.d2.visualize"]
    code = BLOCK_DETECTRON2 + f"""import importlib, traceback; import dspnet_d2.d2.config
for module in {modules!r}:
    try:
        importlib.import_module(module)
        print(module, "imported", sep="\\t")
    except ImportError as err:
        print(module, traceback.format_exception_only(err)[-1].strip(), sep="\\t")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    errors = dict(line.split("\t", 1) for line in result.stdout.splitlines())
    assert list(errors) == modules, result.stdout
    for module, error in errors.items():
        assert error.startswith("ImportError: " + module + " needs detectron2"), error
        assert "detectron2.readthedocs.io" in error, error


@pytest.mark.parametrize("dn,make_tv", [
    ("mbv3_w0.5", lambda: mobilenet_v3_large(width_mult=0.5)),
    ("mbv3_w1.0", lambda: mobilenet_v3_large()),
    ("resnet18", resnet18),
    ("resnet34", resnet34),
])
def test_complexity_matches_torchvision_models(dn, make_tv):
    tv_model = make_tv()
    dn = parse_dn(dn)
    ours = dn_complexity(dn, resolution=224, num_classes=1000)
    assert ours["params"] == count_params(tv_model)
    assert ours["flops"] == count_flops(tv_model, 224)
    headless = dn_complexity(dn, resolution=224)
    assert headless["params"] < ours["params"] and headless["flops"] < ours["flops"]


def test_known_sizes():
    assert dn_complexity(parse_dn("mbv3_w1.0"), num_classes=1000)["params"] == 5_483_032  # torchvision's table
    assert dn_complexity(parse_dn("resnet18"), num_classes=1000)["params"] == 11_689_512
    # sizes are counted at the evaluation resolution, 224 for both families (ResNet pretrains at 128)
    assert dn_complexity(parse_dn("resnet18"))["resolution"] == 224
    assert dn_complexity(parse_dn("resnet18"))["flops"] == dn_complexity(parse_dn("resnet18"), resolution=224)["flops"]


def test_dn_table_tool(tmp_path):
    csv_path = tmp_path / "table.csv"
    result = subprocess.run([sys.executable, "tools/dn_table.py", "--family", "mbv3_s3", "--csv", str(csv_path)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "| mbv3_w0.75 | 224 |" in result.stdout
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "dn,resolution,params,flops" and len(lines) == 4
    dn, res, params, flops = lines[3].split(",")
    assert dn == "mbv3_w1.0" and int(params) == dn_complexity(parse_dn("mbv3_w1.0"))["params"]
    assert int(flops) == dn_complexity(parse_dn("mbv3_w1.0"))["flops"]
