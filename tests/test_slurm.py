"""tools/submit.py: what a multi-node submission asks Slurm for, and a real two-task job under submitit's
local executor that is told to stop at its time limit, requeued and resumed to the end."""
import os
import re
import signal
import sys
import time

import pytest
from pretrain_utils import run_tool, tiny_command_args, tiny_data

from pretrain.engine.slurm import ClusterCommand, default_folder, slurm_parameters, submit

submitit = pytest.importorskip("submitit")


def test_a_multi_node_submission_asks_for_every_gpu_the_time_limit_signal_and_requeue(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string  # what SlurmExecutor writes (it needs srun to exist)

    script = _make_sbatch_string("COMMAND", tmp_path, **slurm_parameters(4, 8, 24, partition="gpu", signal_delay_s=120))
    for flag in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--time=1440", "--partition=gpu",
                 "--signal=USR2@120", "--requeue", "--cpus-per-task=10", "--open-mode=append"):
        assert f"#SBATCH {flag}\n" in script, flag
    assert "srun" in script and "COMMAND" in script


def test_the_logs_go_to_the_commands_output_dir():
    recipe = ["python", "-m", "pretrain", "--config-file", "configs/pretrain/dspnet_mbv3_imagenet.yaml"]
    assert default_folder(recipe) == "output/dspnet_mbv3_imagenet/submitit"  # from the file (through _BASE_ too)
    assert default_folder(recipe + ["OUTPUT_DIR", "runs/a"]) == "runs/a/submitit"
    assert default_folder(["python", "-m", "pretrain.eval", "PRETRAINED", "x.pth"]) is None


@pytest.mark.parametrize("args,fragment", [
    (["--time", "1"], "no command to submit"),
    (["--time", "1", "--", "torchrun", "--nproc_per_node", "8", "-m", "pretrain"], "without torchrun"),
    (["--time", "1", "--", "python", "-m", "pretrain.eval", "DNS", "all"], "give --folder"),
    (["--time", "1", "--local", "--nodes", "2", "--", "python", "-m", "pretrain", "OUTPUT_DIR", "o"], "--nodes must be 1"),
    (["--time", "0", "--", "python", "-m", "pretrain", "OUTPUT_DIR", "o"], "--time > 0"),
    (["--time", "1", "--", "python", "-m", "pretrain", "--config-file", "nowhere.yaml"], "does not exist"),
    (["--time", "1", "--", "python", "-m", "pretrain", "OUTPUT_DIR", "o"], "no Slurm here"),
])
def test_mistakes_are_one_error_line(args, fragment, capsys, monkeypatch):
    result = run_tool("submit", args, capsys, monkeypatch)
    assert result.code == 2 and fragment in result.err and result.err.startswith("error:")
    assert len(result.err.splitlines()) == 1


def test_the_job_pickle_leaves_the_running_child_out():
    import pickle

    command = ClusterCommand(["python", "-m", "pretrain"])
    command._child = object()  # not picklable as a module attribute of a running task would be
    assert pickle.loads(pickle.dumps(command)).command == ["python", "-m", "pretrain"]


def _tasks(controller_pid: int) -> list[int]:
    with open(f"/proc/{controller_pid}/task/{controller_pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


@pytest.mark.rehearsal
def test_a_local_two_task_job_stops_at_the_time_limit_signal_is_requeued_and_resumes(tmp_path, monkeypatch):
    data_root = tiny_data(tmp_path / "data")
    out = tmp_path / "run"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    job = submit([sys.executable, "-m", "pretrain", *tiny_command_args(data_root, out)], nodes=1, gpus_per_node=2,
                 hours=1, local=True)
    deadline = time.time() + 300
    while not ((out / "metrics.jsonl").exists() and '"step": 5,' in (out / "metrics.jsonl").read_text()):
        assert time.time() < deadline and job.state == "RUNNING", job.state
        time.sleep(0.05)
    for task in _tasks(int(job.job_id)):  # what Slurm sends every task signal_delay seconds before the limit
        os.kill(task, signal.SIGUSR2)
    assert job.results() == ["finished", "finished"]
    log = (out / "log.txt").read_text()
    assert "stopped by SIGTERM after step" in log and "resumed from" in log
    assert (out / "checkpoint_00000012.pth").exists()
    task_log = "".join(path.read_text() for path in (out / "submitit").glob("*_0_log.*"))  # rank 0's out and err
    assert "Requeued job" in task_log


def test_a_detection_command_is_one_process_per_task_and_resumes_when_requeued():
    from pretrain.engine.slurm import prepare_command

    command = ["python", "tools/train_net.py", "--config-file", "c.yaml", "OUTPUT_DIR", "o"]
    assert prepare_command(command) == ["python", "tools/train_net.py", "--resume", "--config-file", "c.yaml",
                                        "OUTPUT_DIR", "o"]
    assert prepare_command(command[:2] + ["--resume"]) == command[:2] + ["--resume"]
    assert prepare_command(["python", "-m", "pretrain", "OUTPUT_DIR", "o"]) == ["python", "-m", "pretrain", "OUTPUT_DIR",
                                                                               "o"]
    with pytest.raises(ValueError, match="drop --num-gpus"):
        prepare_command(["python", "tools/train_net.py", "--num-gpus", "8"])


@pytest.mark.rehearsal
def test_a_local_two_task_detection_job_stops_is_requeued_and_resumes(tmp_path, monkeypatch):
    """tools/train_net.py as a two-task job (each task one rank, gloo): told to stop at its time limit after a
    periodic checkpoint, requeued, and resumed by the same command (which submit gave --resume) to the end."""
    pytest.importorskip("detectron2")
    from dspnet_d2.demo.make_demo_data import make_demo_dataset

    coco = make_demo_dataset(tmp_path / "coco", image_size=32, train_per_class=2, val_per_class=1,
                             coco_train_images=6, coco_val_images=1)
    out = tmp_path / "det"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    job = submit([sys.executable, "tools/train_net.py", "--config-file", "configs/detection/mask_rcnn_demo.yaml",
                  "--demo-root", str(coco), "SOLVER.MAX_ITER", "12", "SOLVER.STEPS", "(8,)", "SOLVER.WARMUP_ITERS", "2",
                  "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "3", "OUTPUT_DIR", str(out)],
                 nodes=1, gpus_per_node=2, hours=1, local=True)
    deadline = time.time() + 300
    while not (out / "model_0000002.pth").exists():
        assert time.time() < deadline and job.state == "RUNNING", job.state
        time.sleep(0.05)
    for task in _tasks(int(job.job_id)):
        os.kill(task, signal.SIGUSR2)
    assert job.results() == ["finished", "finished"]
    task_log = "".join(path.read_text() for path in (out / "submitit").glob("*_0_log.*"))
    starts = [int(i) for i in re.findall(r"Starting training from iteration (\d+)", task_log)]
    assert "Requeued job" in task_log and starts[0] == 0 and starts[-1] >= 3, starts  # resumed after a checkpoint
    assert (out / "model_final.pth").exists() and (out / "final_results.json").exists()
