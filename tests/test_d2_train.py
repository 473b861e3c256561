"""tools/train_net.py on the demo COCO data, then tools/detection_report.py (needs detectron2; slow)."""
import json
import subprocess
import sys

import pytest
from pretrain_utils import run_tool

pytest.importorskip("detectron2")

ROOT = __file__.rsplit("/tests/", 1)[0]


@pytest.mark.slow
def test_demo_detection_trains_evaluates_and_reports(tmp_path, capsys, monkeypatch):
    out = tmp_path / "det"
    result = subprocess.run([sys.executable, "tools/train_net.py", "--config-file", "configs/detection/mask_rcnn_demo.yaml",
                             "--demo-root", str(tmp_path / "demo"), "SOLVER.MAX_ITER", "30", "SOLVER.STEPS", "(20,)",
                             "SOLVER.WARMUP_ITERS", "5", "OUTPUT_DIR", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = [json.loads(line)["total_loss"] for line in (out / "metrics.json").read_text().splitlines()
              if '"total_loss"' in line]
    assert len(losses) >= 2 and losses[-1] < losses[0]  # it learns on the demo data
    final = json.loads((out / "final_results.json").read_text())
    assert final["dn"] == "mbv3_w0.5"
    for task in ("bbox", "segm"):
        assert 0.0 <= final["results"][task]["AP"] <= 100.0
    report = run_tool("detection_report", [f"demo={out}", "-o", tmp_path / "report"], capsys, monkeypatch)
    assert report.code == 0, report.err
    assert "| demo | mbv3_w0.5 |" in (tmp_path / "report" / "detection.md").read_text()
