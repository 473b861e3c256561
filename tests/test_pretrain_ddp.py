"""Multi-process runs through the real launcher (torchrun, gloo on CPU), and a real kill + restart."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from dspnet_d2 import DN_SETS, build_supernet, parse_dn, slice_dn
from dspnet_d2.weights import save_dn_file
from pretrain.__main__ import main as pretrain_main
from pretrain.eval.__main__ import main as eval_main
from pretrain_utils import one_process, tiny_data, torchrun

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("demo"))


def _args(data_root, output_dir, *extra):
    # contiguous tensors: oneDNN channels_last kernels round differently per batch split
    return ["--config-file", "configs/pretrain/demo.yaml", "DATA.ROOT", str(data_root), "OUTPUT_DIR", str(output_dir),
            "DATA.RESOLUTION", "32", "DATA.NUM_WORKERS", "0", "MODEL.DNS", "mbv3_s3", "MODEL.NUM_SUBNETS", "3",
            "MODEL.PROJ_HIDDEN", "32", "MODEL.PROJ_DIM", "16", "SOLVER.BATCH_SIZE", "16", "SOLVER.BASE_LR", "0.2",
            "MODEL.FULL_ONLY_EPOCHS", "0", "SOLVER.WARMUP_EPOCHS", "1", "CHECKPOINT.PERIOD", "1",
            "CHECKPOINT.KEEP", "20", "LOG_PERIOD", "1", "EXPORT", "False", "CHANNELS_LAST", "False", *extra]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)  # same float math in every run


def _losses(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    # step records; the demo recipe's kNN monitor (rank 0 only, the other rank waits) writes others
    return [{k: v for k, v in r.items() if k.startswith("loss")} for r in records if "loss" in r]


def _ckpt(output_dir, step):
    return torch.load(os.path.join(output_dir, f"checkpoint_{step:08d}.pth"), weights_only=True)


def test_two_process_ddp_equals_one_process(data_root, tmp_path):
    # float32 reduction order differs between the runs and tiny BN batches amplify it step by step (one
    # LARS update moved the loss by 4e-4 relative on a 2-core x86_64 machine), so the comparison covers the
    # first two steps, the second more loosely (the float64 test below checks the math exactly)
    one_process(pretrain_main, _args(data_root, tmp_path / "one", "SOLVER.EPOCHS", "1"))
    torchrun(2, _args(data_root, tmp_path / "two", "SOLVER.EPOCHS", "1"))
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    for step, (a, b) in enumerate(zip(one, two)):  # the same sub-networks every step
        assert a.keys() == b.keys() and len(a) == 4
        for key in a:
            if step < 2:
                assert b[key] == pytest.approx(a[key], rel=1e-4 if step == 0 else 1e-3), (step, key)
    a, b = _ckpt(tmp_path / "one", 1), _ckpt(tmp_path / "two", 1)  # after one update
    for part in ("online", "target"):
        for key, value in a[part].items():
            # at most 3.8e-4 apart on BN weights of ~1 on a 2-core x86_64 machine: LARS divides each update by
            # its gradient's norm, which carries the float32 differences of the 8- and 16-image batches over
            assert torch.allclose(value.float(), b[part][key].float(), rtol=1e-3, atol=1e-3), (part, key)


def _ddp_step_worker(rank, port, result_path):
    """One DSPNet step on half the batch per rank: DDP, no_sync accumulation, synced BN, float64."""
    import copy

    import torch.distributed as dist

    from dspnet_d2.dn import DN_SETS
    from pretrain.methods import DSPNet, StepContext

    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)  # two processes on the machine's cores: no oversubscription
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    method = DSPNet(DN_SETS["mbv3_s3"], 3, 32, 16).train()
    v1, v2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    reference = copy.deepcopy(method)
    _, subnets = reference.train_step((v1, v2), StepContext(0, 0, 10, reference.online))  # one process, whole batch
    assert subnets == list(method.dns)  # n = 3 of 3 DNs: every DN, the largest last
    method.configure_norms(sync=True)
    online = torch.nn.parallel.DistributedDataParallel(method.online, broadcast_buffers=False)
    half = slice(rank * 4, rank * 4 + 4)
    # the engine's step: no_sync for all but the largest, which carries the all-reduce
    method.train_step((v1[half], v2[half]), StepContext(0, 0, 10, online))
    worst = max((p.grad - q.grad).abs().max().item() for p, q in
                zip(method.online.parameters(), reference.online.parameters()))
    if rank == 0:
        with open(result_path, "w") as f:
            f.write(repr(worst))
    dist.destroy_process_group()


def test_ddp_gradients_equal_single_process_in_float64(tmp_path):
    import random

    import torch.multiprocessing as mp

    result = tmp_path / "worst.txt"
    mp.spawn(_ddp_step_worker, args=(random.randint(20000, 40000), str(result)), nprocs=2)
    assert float(result.read_text()) < 1e-10


@pytest.mark.rehearsal
def test_killed_run_restarts_from_its_checkpoint_to_the_same_weights(data_root, tmp_path):
    args_straight = _args(data_root, tmp_path / "straight", "SOLVER.EPOCHS", "3")
    args_killed = _args(data_root, tmp_path / "killed", "SOLVER.EPOCHS", "3")
    cmd = [sys.executable, "-m", "pretrain"]
    subprocess.run(cmd + args_straight, cwd=ROOT, env=_env(), check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(cmd + args_killed, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = tmp_path / "killed" / "checkpoint_00000005.pth"  # mid-epoch 1 (4 steps per epoch)
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.stem.split("_")[1]) for p in (tmp_path / "killed").glob("checkpoint_*.pth"))
    assert 5 <= killed_at < 12, "the run was not interrupted mid-way"
    result = subprocess.run(cmd + args_killed, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr
    a, b = _ckpt(tmp_path / "straight", 12), _ckpt(tmp_path / "killed", 12)
    for part in ("online", "target"):
        for key, value in a[part].items():
            assert torch.allclose(value.float(), b[part][key].float(), atol=1e-6), (part, key)


def test_two_process_knn_evaluation_equals_one_process(data_root, tmp_path):
    # a seeded DN file: the comparison needs weights, not trained ones (the evaluation recalibrates BN)
    torch.manual_seed(0)
    weights = tmp_path / "mbv3_w0.5.pth"
    half = parse_dn("mbv3_w0.5")
    save_dn_file(str(weights), half, slice_dn(build_supernet(DN_SETS["mbv3_s3"]), half).state_dict())

    def evaluate(nproc, out):
        args = ["--config-file", "configs/eval/knn.yaml", "PRETRAINED", weights, "DATA.ROOT", data_root,
                "DATA.RESOLUTION", "32", "DATA.NUM_WORKERS", "0", "KNN.K", "5", "TRAIN.BATCH_SIZE", "10",
                "BN_RECALIBRATION.BATCHES", "3", "OUTPUT_DIR", out]
        if nproc == 1:
            one_process(eval_main, args)
        else:
            torchrun(nproc, args, "pretrain.eval")
        with open(out / "results.json") as f:
            return json.load(f)["results"][0]

    one, two = evaluate(1, tmp_path / "one"), evaluate(2, tmp_path / "two")
    assert one["top1"] == two["top1"] and one["top5"] == two["top5"]
