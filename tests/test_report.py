"""tools/detection_report.py on hand-made run folders (no detectron2 needed), run in this process."""
import json

from pretrain_utils import run_tool


def _run_dir(path, dn, results=None, metrics=None):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"MODEL:\n  DSPNET:\n    DN: {dn}\n")
    if results is not None:
        (path / "final_results.json").write_text(json.dumps({"dn": dn, "results": results}))
    if metrics is not None:
        (path / "metrics.json").write_text("\n".join(json.dumps(m) for m in metrics) + "\n")


def _coco(ap):
    return {task: {"AP": ap, "AP50": ap + 20, "AP75": ap + 2} for task in ("bbox", "segm")}


def test_report_table_csv_plot_and_missing_runs(tmp_path, capsys, monkeypatch):
    _run_dir(tmp_path / "a", "mbv3_w0.5", results=_coco(30.0))
    _run_dir(tmp_path / "b", "mbv3_w1.0", metrics=[{"iteration": 10, "total_loss": 1.0},
                                                   {f"{t}/{n}": 35.0 for t in ("bbox", "segm")
                                                    for n in ("AP", "AP50", "AP75")}])
    _run_dir(tmp_path / "c", "mbv3_w0.75", metrics=[{"iteration": 10, "total_loss": 1.0}])  # unfinished
    _run_dir(tmp_path / "d", "mbv3_w0.5", results=_coco(28.0))
    # COCOEvaluator's result for a model without a single detection: NaN bbox AP, no segm
    _run_dir(tmp_path / "e", "mbv3_w1.0", results={"bbox": {"AP": float("nan"), "AP50": float("nan")}})
    out = tmp_path / "report"
    runs = [f"DSPNet={tmp_path / 'a'}", f"DSPNet={tmp_path / 'b'}", f"DSPNet={tmp_path / 'c'}", f"BYOL={tmp_path / 'd'}",
            f"BYOL={tmp_path / 'e'}", tmp_path / "nothing"]
    result = run_tool("detection_report", [*runs, "-o", out], capsys, monkeypatch)
    assert result.code == 0, result.err
    table = (out / "detection.md").read_text()
    assert "| DSPNet | mbv3_w0.5 | 1.73 |" not in table  # backbone only: no classifier
    assert "| DSPNet | mbv3_w0.5 |" in table and "| 30.0 | 50.0 | 32.0 | 30.0 | 50.0 | 32.0 |" in table
    assert "| DSPNet | mbv3_w1.0 |" in table and "| BYOL | mbv3_w0.5 |" in table
    assert "| BYOL | mbv3_w1.0 (no detections) | 2.97 | 224 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |" in table
    assert "Missing or unfinished runs:" in table
    assert f"{tmp_path / 'c'} (no final COCO metrics)" in table and f"{tmp_path / 'nothing'} (no config)" in table
    lines = (out / "detection.csv").read_text().splitlines()
    assert lines[0].startswith("series,dn,params,flops,bbox/AP") and len(lines) == 5
    assert (out / "detection.png").read_bytes()[:4] == b"\x89PNG"


def test_report_expands_a_pattern_after_the_series_name(tmp_path, capsys, monkeypatch):
    """``DSPNet=output/detection/dspnet_*``: the shell leaves the pattern alone after ``=``; the tool expands it."""
    for dn in ("mbv3_w0.5", "mbv3_w1.0"):
        _run_dir(tmp_path / f"dspnet_{dn}", dn, results=_coco(30.0))
    _run_dir(tmp_path / "byol_mbv3_w0.5", "mbv3_w0.5", results=_coco(25.0))
    out = tmp_path / "report"
    result = run_tool("detection_report", [f"DSPNet={tmp_path}/dspnet_*", f"BYOL={tmp_path}/byol_*",
                                           f"none={tmp_path}/absent_*", "-o", out], capsys, monkeypatch)
    assert result.code == 0, result.err
    table = (out / "detection.md").read_text()
    assert "| DSPNet | mbv3_w0.5 |" in table and "| DSPNet | mbv3_w1.0 |" in table and "| BYOL | mbv3_w0.5 |" in table
    assert "(no config)" in table and "absent_*" in table and "dspnet_*" not in table
