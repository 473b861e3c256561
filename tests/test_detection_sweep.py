"""tools/detection_sweep.py: two DNs of the demo, converted, trained and reported in one command."""
import pytest
from pretrain_utils import run_tool, tiny_cfg, tiny_data

from pretrain.engine.trainer import Trainer

pytest.importorskip("detectron2")


@pytest.mark.slow
def test_the_sweep_converts_trains_and_reports_every_dn(tmp_path, capsys, monkeypatch):
    data = tiny_data(tmp_path / "data")
    Trainer(tiny_cfg(data, tmp_path / "pre")).train()
    out = tmp_path / "sweep"
    args = [tmp_path / "pre" / "checkpoint_00000008.pth", "--dns", "mbv3_w0.5,mbv3_w1.0", "--config-file",
            "configs/detection/mask_rcnn_demo.yaml", "--data-root", data, "--demo-root", data, "-o", out,
            "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64"]
    result = run_tool("detection_sweep", args, capsys, monkeypatch)
    assert result.code == 0, result.out[-3000:] + result.err[-3000:]
    for dn in ("mbv3_w0.5", "mbv3_w1.0"):
        assert (out / "weights" / f"{dn}.pkl").exists() and (out / dn / "final_results.json").exists()
    table = (out / "report" / "detection.md").read_text()
    assert "| DSPNet | mbv3_w0.5 |" in table and "| DSPNet | mbv3_w1.0 |" in table
    assert "Missing" not in table
    again = run_tool("detection_sweep", args, capsys, monkeypatch)  # everything done: straight to the table
    assert again.code == 0 and "$ " not in again.out


def test_sweep_mistakes_are_one_error_line(tmp_path, capsys, monkeypatch):
    result = run_tool("detection_sweep", [tmp_path / "absent.pth", "--dns", "mbv3_s5", "--config-file",
                                          "configs/detection/mask_rcnn_demo.yaml", "-o", tmp_path], capsys, monkeypatch)
    assert result.code == 2 and "pretraining checkpoint" in result.err and len(result.err.splitlines()) == 1


@pytest.mark.rehearsal
def test_the_sweep_as_a_job_array_on_submitits_local_executor(tmp_path, capsys, monkeypatch):
    """--slurm: one job per DN (submitit's local executor here, a Slurm job array on a cluster), each task a rank
    of its training (given --resume), then the table."""
    pytest.importorskip("submitit")
    import os

    data = tiny_data(tmp_path / "data")
    Trainer(tiny_cfg(data, tmp_path / "pre")).train()
    out = tmp_path / "sweep"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = [tmp_path / "pre" / "checkpoint_00000008.pth", "--dns", "mbv3_w0.5,mbv3_w1.0", "--config-file",
            "configs/detection/mask_rcnn_demo.yaml", "--data-root", data, "--demo-root", data, "-o", out,
            "--slurm", "--local", "--nodes", "1", "--gpus-per-node", "1", "--time", "1",
            "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.IMS_PER_BATCH", "2",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MIN_SIZE_TEST", "64"]
    result = run_tool("detection_sweep", args, capsys, monkeypatch)
    assert result.code == 0, result.out[-3000:] + result.err[-3000:]
    assert "submitted 2 job(s)" in result.out
    table = (out / "report" / "detection.md").read_text()
    assert "| DSPNet | mbv3_w0.5 |" in table and "| DSPNet | mbv3_w1.0 |" in table and "Missing" not in table
