"""Shared test helpers: a tiny demo dataset, a tiny recipe, and the tools run in this process."""
import os
import runpy
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from dspnet_d2.demo.make_demo_data import make_demo_dataset
from pretrain.engine.config import load_cfg

ROOT = Path(__file__).resolve().parents[1]
ToolResult = namedtuple("ToolResult", "code out err")


def tiny_data(root):
    return make_demo_dataset(root, image_size=32, train_per_class=8, val_per_class=2, coco_train_images=1,
                             coco_val_images=1)


def tiny_cfg(data_root, output_dir, *overrides):
    """mbv3_s3 at 32 px, batch 16: 4 steps per epoch, seconds per run on CPU."""
    return load_cfg("configs/pretrain/demo.yaml", [
        "DATA.ROOT", str(data_root), "OUTPUT_DIR", str(output_dir), "DATA.RESOLUTION", "32",
        "DATA.NUM_WORKERS", "0", "MODEL.DNS", "mbv3_s3", "MODEL.NUM_SUBNETS", "3", "MODEL.PROJ_HIDDEN", "32",
        "MODEL.PROJ_DIM", "16", "SOLVER.BATCH_SIZE", "16", "SOLVER.EPOCHS", "2", "MODEL.FULL_ONLY_EPOCHS", "1",
        "SOLVER.WARMUP_EPOCHS", "1", "CHECKPOINT.PERIOD", "2", "LOG_PERIOD", "1", "MONITOR.KNN_PERIOD", "0",
        # contiguous tensors: oneDNN's channels_last kernels round differently per batch split, and these
        # tests compare runs (1 vs 2 ranks, resumed vs not) tightly; the demo test covers channels_last
        "CHANNELS_LAST", "False", *overrides])


def tiny_command_args(data_root, output_dir, *overrides):
    """``python -m pretrain``'s arguments for the tiny recipe with the linear probe: 3 epochs of 4 steps,
    checkpoints only at epoch ends (a mid-epoch one can only come from a stop signal)."""
    return ["--config-file", "configs/pretrain/demo.yaml", "DATA.ROOT", str(data_root), "OUTPUT_DIR", str(output_dir),
            "DATA.RESOLUTION", "32", "DATA.NUM_WORKERS", "0", "MODEL.DNS", "mbv3_s3", "MODEL.NUM_SUBNETS", "3",
            "MODEL.PROJ_HIDDEN", "32", "MODEL.PROJ_DIM", "16", "SOLVER.BATCH_SIZE", "16", "SOLVER.EPOCHS", "3",
            "MODEL.FULL_ONLY_EPOCHS", "0", "SOLVER.WARMUP_EPOCHS", "1", "CHECKPOINT.PERIOD", "1000",
            "CHECKPOINT.KEEP", "20", "LOG_PERIOD", "1", "EXPORT", "False", "CHANNELS_LAST", "False",
            "MONITOR.KNN_PERIOD", "0", "MONITOR.LINEAR_PROBE", "True", *overrides]


def run_tool(name, args, capsys, monkeypatch) -> ToolResult:
    """``python tools/<name>.py ARGS`` in this process (no second torch import): exit code and output."""
    monkeypatch.setattr(sys, "argv", [f"tools/{name}.py", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "tools" / f"{name}.py"), run_name="__main__")
    captured = capsys.readouterr()
    return ToolResult(exit_info.value.code, captured.out, captured.err)


def torchrun(nproc, args, module="pretrain"):
    """``torchrun --nproc_per_node=N -m MODULE ARGS`` on CPU (gloo), one thread per process: the same float
    math in every run."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", module, *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def one_process(main, args) -> None:
    """``python -m MODULE ARGS`` (``main``: the module's ``main(argv)``) in this process, with torchrun()'s one thread
    per process: the reference of a ``torchrun`` run, as its single process would compute it (a world of one
    sets up no process group) without starting torchrun and a second torch import."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(a) for a in args]) == 0
    finally:
        torch.set_num_threads(threads)


def assert_equal_states(a: dict, b: dict, where=""):
    """Two (nested) state dicts hold the same keys and bit-equal tensors."""
    import torch

    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], dict):
            assert_equal_states(a[key], b[key], f"{where}/{key}")
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), f"{where}/{key}"


def descendants(pid: int, depth: int | None = None) -> list[int]:
    """The processes below ``pid`` (children first; ``depth`` 1: its children only), read from /proc."""
    found, level = [], [pid]
    while level and (depth is None or depth > 0):
        children = []
        for parent in level:
            for task in Path(f"/proc/{parent}/task").glob("*"):
                try:
                    children += [int(c) for c in (task / "children").read_text().split()]
                except OSError:  # the process ended meanwhile
                    pass
        found += children
        level = children
        depth = None if depth is None else depth - 1
    return found


def running(pid: int) -> bool:
    """``pid`` is a process that has not ended (neither gone nor a zombie), read from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
