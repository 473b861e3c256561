"""README's first command, end to end: demo data + the demo recipe on CPU."""
import json
import os
import subprocess
import sys

import pytest
import torch

from dspnet_d2 import DN_SETS, build_static_dn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=3600):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo exactly as README runs it (only the paths differ)."""
    root = tmp_path_factory.mktemp("demo")
    data, out = root / "demo", root / "out"
    _run("tools/make_demo_data.py", "--root", str(data))
    _run("-m", "pretrain", "--config-file", "configs/pretrain/demo.yaml", "DATA.ROOT", str(data), "OUTPUT_DIR", str(out))
    return data, out


@pytest.mark.slow
def test_demo_recipe_end_to_end(demo_run):
    _, out = demo_run
    assert (out / "config.yaml").exists() and (out / "metrics.jsonl").exists()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    first, last = json.loads(lines[0]), json.loads(lines[-1])
    assert last["loss/mbv3_w1.0"] < first["loss/mbv3_w1.0"]  # it learns
    for dn in DN_SETS["mbv3_s5"]:
        saved = torch.load(out / "export" / f"{dn}.pth", weights_only=True)
        build_static_dn(dn).load_state_dict(saved["state_dict"], strict=True)

