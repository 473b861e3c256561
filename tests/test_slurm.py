"""tools/submit.py: what a multi-node submission asks Slurm for, and a real two-task job under submitit's
local executor that is told to stop at its time limit, requeued and resumed to the end."""
import os
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
