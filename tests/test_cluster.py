"""The cluster rehearsed on one machine, in the shipped conditions: the demo recipe's 2 loader workers per rank,
stop signals delivered as torchrun and Slurm deliver them, two torchrun agents for two nodes.

Each stop ends in the checkpoint of the step the run stopped at (mid-epoch, so it can only come from the signal),
exit status 75 from the trainer and no traceback but torchrun's own; the same command then resumes to exactly
the weights of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from pretrain_utils import ROOT, assert_equal_states, descendants, running, tiny_command_args, tiny_data

from pretrain.engine.preemption import EXIT_PREEMPTED

WORKERS = "2"  # configs/pretrain/demo.yaml's DATA.NUM_WORKERS
pytestmark = pytest.mark.rehearsal


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("demo"))


def _env():
    # the same float math in every run; OpenBLAS threads as a GPU node starts them (one per core) at import numpy
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="4", PYTHONPATH=str(ROOT))


def _args(data_root, output_dir, *overrides):
    return tiny_command_args(data_root, output_dir, "DATA.NUM_WORKERS", WORKERS, *overrides)


def _torchrun(*launcher):
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "pretrain"]


START_METHODS = ("fork", "forkserver", "spawn")  # Python 3.14 starts loader workers with forkserver on Linux


def _with_start_method(method, launcher=()):
    """``python -m pretrain`` (under torchrun's ``launcher`` if given) after a user's
    ``multiprocessing.set_start_method(method)``."""
    wrapper = [str(ROOT / "tests" / "start_method_main.py"), method, "pretrain"]
    if launcher:
        return [sys.executable, "-m", "torch.distributed.run", *launcher, *wrapper]
    return [sys.executable, *wrapper]


STANDALONE = ("--standalone", "--nproc_per_node=2")


def _run(command, log_path, check=True) -> subprocess.CompletedProcess:
    with open(log_path, "w") as log:
        result = subprocess.run(command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, timeout=600)
    if check:
        assert result.returncode == 0, log_path.read_text()[-4000:]
    return result


@pytest.fixture(scope="module")
def straight(data_root, tmp_path_factory):
    """Uninterrupted runs on 1 and on 2 ranks: {ranks: output folder}."""
    folders = {}
    for ranks, launcher in ((1, [sys.executable, "-m", "pretrain"]), (2, _torchrun(*STANDALONE))):
        out = tmp_path_factory.mktemp(f"straight{ranks}")
        _run(launcher + _args(data_root, out), out.parent / f"{out.name}.out")
        folders[ranks] = out
    return folders


def _wait_until(proc, ready, what):
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if ready(proc.pid):
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended or hung before {what}")


def _logged(output_dir, step):
    metrics = output_dir / "metrics.jsonl"
    return lambda pid: metrics.exists() and f'"step": {step},' in metrics.read_text()


def _wait_for_step(proc, output_dir, step):
    _wait_until(proc, _logged(output_dir, step), f"step {step}")


def _signalled_run(command, log_path, ready, deliver):
    """Start ``command``; once ``ready(its pid)``, send SIGTERM to ``deliver(its pid)``'s processes.
    Returns (exit status, output, the processes signalled)."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        _wait_until(proc, ready, "the signal")
        job, targets = [proc.pid, *descendants(proc.pid)], deliver(proc.pid)
        for pid in targets:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        status = proc.wait(timeout=120)
    _assert_all_ended(job)
    return status, log_path.read_text(), targets


def _assert_all_ended(pids, within_s=15.0):
    """No process of the job outlives it (a worker that ignored its loader's shutdown would)."""
    deadline = time.time() + within_s
    alive = list(pids)
    while alive and time.time() < deadline:
        alive = [pid for pid in alive if running(pid)]
        time.sleep(0.1)
    assert not alive, f"processes left running: {alive}"


def _checkpoint_steps(output_dir) -> list[int]:
    return sorted(int(p.stem.split("_")[1]) for p in output_dir.glob("checkpoint_*.pth"))


def _assert_stopped_with_checkpoint(output_dir, output: str, ranks: int) -> int:
    marker = json.loads((output_dir / "stopped.json").read_text())
    step = marker["step"]
    assert marker["exit_status"] == EXIT_PREEMPTED and marker["signal"] == "SIGTERM"
    assert 5 <= step < 12 and step % 4, step  # mid-epoch (4 steps an epoch): the signal's own checkpoint
    assert _checkpoint_steps(output_dir)[-1] == step
    log = (output_dir / "log.txt").read_text()
    assert log.count(f"after step {step}") == ranks and f"Exit status {EXIT_PREEMPTED}" in log  # each rank, one step
    assert "DataLoader worker" not in output and "Error" not in output.replace("SignalException", "")
    # the only traceback allowed is torchrun's own SignalException (it exits 1 after a signal)
    assert output.count("Traceback") == output.count("SignalException: Process"), output[-4000:]
    return step


def _assert_resumes_to_the_straight_run(command, output_dir, straight_dir, step):
    _run(command, output_dir.parent / f"{output_dir.name}.resumed.out")
    assert f"resumed from {output_dir / f'checkpoint_{step:08d}.pth'}" in (output_dir / "log.txt").read_text()
    assert not (output_dir / "stopped.json").exists()
    a, b = (torch.load(d / "checkpoint_00000012.pth", weights_only=True) for d in (straight_dir, output_dir))
    for part in ("online", "target", "optimizer", "linear_probe"):
        assert_equal_states(a[part], b[part], part)


def _launcher_only(pid):
    return [pid]


def _every_process(pid):
    """What Slurm signals: every process of the job step, the launcher, its ranks and their loader workers."""
    return [pid, *descendants(pid)]


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("deliver", [_launcher_only, _every_process], ids=["to_torchrun", "to_every_process"])
def test_sigterm_to_a_two_rank_torchrun_with_loader_workers_checkpoints_and_resumes_exactly(
        data_root, straight, tmp_path, deliver, method):
    out = tmp_path / "run"
    command = _with_start_method(method, STANDALONE) + _args(data_root, out)
    status, output, targets = _signalled_run(command, tmp_path / "run.out", _logged(out, 5), deliver)
    assert deliver is _launcher_only or len(targets) >= 1 + 2 + 2 * int(WORKERS)  # torchrun, ranks, workers
    assert status == 1  # torchrun's own status after a signal; the ranks returned 75 (the marker says so)
    step = _assert_stopped_with_checkpoint(out, output, ranks=2)
    _assert_resumes_to_the_straight_run(command, out, straight[2], step)


@pytest.mark.parametrize("method", START_METHODS)
def test_sigterm_to_one_process_and_its_loader_workers_checkpoints_and_resumes_exactly(
        data_root, straight, tmp_path, method):
    out = tmp_path / "run"
    command = _with_start_method(method) + _args(data_root, out)
    status, output, targets = _signalled_run(command, tmp_path / "run.out", _logged(out, 5), _every_process)
    assert len(targets) >= 1 + int(WORKERS) and status == EXIT_PREEMPTED  # spawn: a resource tracker too
    step = _assert_stopped_with_checkpoint(out, output, ranks=1)
    _assert_resumes_to_the_straight_run(command, out, straight[1], step)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_agents_survive_a_killed_rank_and_finish_from_the_last_checkpoint(data_root, straight, tmp_path):
    """Two nodes on one machine: c10d rendezvous on localhost, one rank each, one restart allowed; kill -9 of one
    rank mid-run makes both agents restart their ranks, which resume from the newest checkpoint."""
    out = tmp_path / "run"
    launcher = ("--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=localhost:{_free_port()}",
                "--rdzv_id=rehearsal", "--max-restarts=1", "--monitor-interval=0.5")
    # DIST.TIMEOUT_MINUTES stays at its default: after the restart, one rank may reach the process group a minute
    # or more before the other (the other agent first waits for its old rank to end)
    command = _torchrun(*launcher) + _args(data_root, out, "CHECKPOINT.PERIOD", "2")
    logs = [open(tmp_path / f"agent{i}.out", "w") for i in range(2)]
    # torchrun as torch documents it: the agents share their store with the ranks (dspnet_d2/runtime/rendezvous.py)
    env = {k: v for k, v in _env().items() if k != "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"}
    agents = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    try:
        _wait_for_step(agents[1], out, 6)
        ranks = [pid for pid in descendants(agents[1].pid, depth=1)]
        assert len(ranks) == 1
        os.kill(ranks[0], signal.SIGKILL)
        statuses = [agent.wait(timeout=400) for agent in agents]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
        for log in logs:
            log.close()
    outputs = [(tmp_path / f"agent{i}.out").read_text() for i in range(2)]
    assert statuses == [0, 0], "\n".join(o[-3000:] for o in outputs)
    log = (out / "log.txt").read_text()
    resumed = [line for line in log.splitlines() if "resumed from" in line]
    assert len(resumed) == 2, log[-3000:]  # both restarted ranks, from the same checkpoint
    assert len({line.split("resumed from ")[1] for line in resumed}) == 1
    a, b = (torch.load(d / "checkpoint_00000012.pth", weights_only=True) for d in (straight[2], out))
    for part in ("online", "target", "optimizer", "linear_probe"):
        assert_equal_states(a[part], b[part], part)


def _linear_eval(straight, data_root, out):
    """python -m pretrain.eval, the linear protocol on one DN of the straight run, 5 epochs of 4 steps."""
    return [sys.executable, "-m", "pretrain.eval", "--config-file", "configs/eval/linear.yaml", "PRETRAINED",
            str(straight[1] / "checkpoint_00000012.pth"), "DNS", "mbv3_w0.75", "DATA.ROOT", str(data_root),
            "DATA.RESOLUTION", "32", "DATA.NUM_WORKERS", WORKERS, "TRAIN.BATCH_SIZE", "16", "TRAIN.EPOCHS", "5",
            "BN_RECALIBRATION.BATCHES", "2", "OUTPUT_DIR", str(out)]


def test_sigterm_to_the_linear_evaluation_checkpoints_its_step_and_resumes_exactly(data_root, straight, tmp_path):
    uninterrupted, out = tmp_path / "straight", tmp_path / "run"
    _run(_linear_eval(straight, data_root, uninterrupted), tmp_path / "straight.out")
    state_path = out / "DSPNet" / "mbv3_w0.75" / "train_state.pth"
    def ready(pid):  # an epoch done, and the loader workers up
        return state_path.exists() and len(descendants(pid)) == int(WORKERS)

    status, output, targets = _signalled_run(_linear_eval(straight, data_root, out), tmp_path / "run.out", ready,
                                             _every_process)
    assert status == EXIT_PREEMPTED and len(targets) == 1 + int(WORKERS), output[-3000:]
    assert "Traceback" not in output and "DataLoader worker" not in output
    marker = json.loads((out / "stopped.json").read_text())
    state = torch.load(state_path, weights_only=True)
    assert marker["step"] == state["epoch"] * 4 + state["batch"] and 4 < marker["step"] < 20
    assert f"stopped by SIGTERM after DSPNet mbv3_w0.75 step {state['batch']} of epoch {state['epoch'] + 1}" in output \
        or state["batch"] == 0  # a stop at an epoch's last step is that epoch's checkpoint

    _run(_linear_eval(straight, data_root, out), tmp_path / "resumed.out")
    a, b = (torch.load(d / "DSPNet" / "mbv3_w0.75" / "train_state.pth", weights_only=True) for d in (uninterrupted, out))
    assert a["epoch"] == b["epoch"] == 5
    assert_equal_states(a["model"], b["model"], "model")
    results = [json.loads((d / "results.json").read_text())["results"][0] for d in (uninterrupted, out)]
    assert results[0]["top1"] == results[1]["top1"] and not (out / "stopped.json").exists()


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    from dspnet_d2.demo.make_demo_data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("coco"), image_size=32, train_per_class=2, val_per_class=1,
                             coco_train_images=6, coco_val_images=1)


def _train_net(coco_root, out):
    """tools/train_net.py on the demo Mask R-CNN, 12 iterations of 2 images, 2 loader workers, a checkpoint
    every 3 iterations."""
    return [sys.executable, "tools/train_net.py", "--config-file", "configs/detection/mask_rcnn_demo.yaml",
            "--demo-root", str(coco_root), "--resume", "SOLVER.MAX_ITER", "12", "SOLVER.STEPS", "(8,)",
            "SOLVER.WARMUP_ITERS", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.CHECKPOINT_PERIOD", "3",
            "DATALOADER.NUM_WORKERS", WORKERS, "SEED", "3", "TEST.EVAL_PERIOD", "0", "OUTPUT_DIR", str(out)]


def test_sigterm_to_detectron2_training_checkpoints_its_iteration_and_resumes_exactly(coco_root, tmp_path):
    pytest.importorskip("detectron2")
    uninterrupted, out = tmp_path / "straight", tmp_path / "run"
    _run(_train_net(coco_root, uninterrupted), tmp_path / "straight.out")

    def ready(pid):  # a periodic checkpoint written, and the loader workers up
        return (out / "model_0000002.pth").exists() and len(descendants(pid)) == int(WORKERS)

    status, output, targets = _signalled_run(_train_net(coco_root, out), tmp_path / "run.out", ready, _every_process)
    assert status == EXIT_PREEMPTED and len(targets) == 1 + int(WORKERS), output[-3000:]
    assert "Traceback" not in output and "DataLoader worker" not in output
    stopped = json.loads((out / "stopped.json").read_text())["step"]  # iterations done
    assert 3 <= stopped < 12 and (out / f"model_{stopped - 1:07d}.pth").exists()
    assert (out / "last_checkpoint").read_text().strip() == f"model_{stopped - 1:07d}.pth"

    _run(_train_net(coco_root, out), tmp_path / "resumed.out")
    assert f"Starting training from iteration {stopped}" in (tmp_path / "resumed.out").read_text()
    a, b = (torch.load(d / "model_final.pth", weights_only=True) for d in (uninterrupted, out))
    assert_equal_states(a["model"], b["model"], "model")


@pytest.fixture(scope="module")
def coco_eval_root(tmp_path_factory):
    """Enough validation images for an evaluation that lasts a few seconds on CPU."""
    from dspnet_d2.demo.make_demo_data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("coco_eval"), image_size=32, train_per_class=2, val_per_class=1,
                             coco_train_images=6, coco_val_images=40)


def test_sigterm_during_a_detectron2_evaluation_waits_for_it_then_checkpoints_and_resumes(coco_eval_root, tmp_path):
    """TEST.EVAL_PERIOD 4: SIGTERM to every process (the evaluation's loader workers among them) once the
    evaluation after iteration 4 has started. The evaluation ends, then iteration 4's checkpoint and exit 75; the
    rerun finishes and evaluates."""
    pytest.importorskip("detectron2")
    out = tmp_path / "run"
    command = [arg for arg in _train_net(coco_eval_root, out)]
    command[command.index("TEST.EVAL_PERIOD") + 1] = "4"
    command[command.index("SOLVER.MAX_ITER") + 1] = "8"
    command[command.index("SOLVER.STEPS") + 1] = "(6,)"
    log_path = tmp_path / "run.out"

    def evaluating(pid):
        return log_path.exists() and "Start inference on" in log_path.read_text() and len(descendants(pid)) >= 4

    status, output, targets = _signalled_run(command, log_path, evaluating, _every_process)
    assert len(targets) >= 1 + 2 * int(WORKERS)  # the training loader's workers and the evaluation's
    assert status == EXIT_PREEMPTED, output[-3000:]
    assert "Traceback" not in output and "DataLoader worker" not in output
    assert json.loads((out / "stopped.json").read_text())["step"] == 4
    assert (out / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    assert "Total inference time" in output  # the evaluation it came in finished

    _run(command, tmp_path / "resumed.out")
    assert "Starting training from iteration 4" in (tmp_path / "resumed.out").read_text()
    assert json.loads((out / "final_results.json").read_text())["results"]["bbox"]


def test_detectron2_training_under_torchrun_gives_the_weights_of_its_own_launcher(coco_root, tmp_path):
    """tools/train_net.py as one process per rank that torchrun (or a Slurm task) started, the process group from
    their environment, against detectron2's ``--num-gpus 2`` (spawned ranks, gloo on CPU): the same weights."""
    pytest.importorskip("detectron2")
    runs = {}
    for name in ("launch", "torchrun"):
        out = tmp_path / name
        command = _train_net(coco_root, out)
        command[command.index("SOLVER.MAX_ITER") + 1] = "4"
        command[command.index("SOLVER.STEPS") + 1] = "(3,)"
        command[command.index("SOLVER.CHECKPOINT_PERIOD") + 1] = "100"
        if name == "launch":
            command[command.index("--resume"):command.index("--resume")] = ["--num-gpus", "2"]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", *STANDALONE, *command[1:]]
        _run(command, tmp_path / f"{name}.out")
        runs[name] = torch.load(out / "model_final.pth", weights_only=True)["model"]
        assert (out / "final_results.json").exists()
    a, b = runs["launch"], runs["torchrun"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=1e-4, atol=1e-5), key
    command = [sys.executable, "-m", "torch.distributed.run", *STANDALONE, *_train_net(coco_root, tmp_path / "x")[1:]]
    command[command.index("--resume"):command.index("--resume")] = ["--num-gpus", "2"]
    with pytest.raises(AssertionError, match="drop --num-gpus"):  # one process per GPU already
        _run(command, tmp_path / "twice.out")
