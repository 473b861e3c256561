"""Any seed a user chooses (0 to 2**63 - 1) works in every trainer; derived seeds cannot overflow or collide by
construction; a checkpoint holds every generator."""
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from pretrain_utils import ROOT, tiny_cfg, tiny_data

from dspnet_d2.runtime.seeding import derive_seed, rng_state, seeded, set_rng_state
from pretrain.data.sampler import ResumableSampler
from pretrain.engine.trainer import Trainer
from pretrain.eval.__main__ import main as eval_main

SEEDS = (0, 2 ** 32 + 1, 2 ** 62)


def test_derived_seeds_fit_a_generator_for_any_seed_and_do_not_collide():
    for parts in [(0,), (2 ** 63 - 1, 7), (2 ** 200, 3, 1_000_000), (-1, 0)]:
        seed = derive_seed(*parts)
        assert 0 <= seed < 2 ** 63 and seed == derive_seed(*parts)
        torch.Generator().manual_seed(seed)  # what overflowed before
    # seed + attempt gave (position p, attempt 1) the seed of (position p + 1, attempt 0)
    assert derive_seed(5, 10, 1) != derive_seed(5, 11, 0)
    assert len({derive_seed(s, p) for s in range(50) for p in range(50)}) == 2500


def test_rng_state_holds_python_numpy_and_torch_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save({"rng": rng_state()}, tmp_path / "c.pth")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(torch.load(tmp_path / "c.pth", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_seeded_restores_every_generator_it_moves():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    with seeded(2 ** 62):
        inside = (random.random(), np.random.rand(), torch.rand(1).item())
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    with seeded(2 ** 62):
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == inside


@pytest.mark.parametrize("seed", SEEDS)
def test_the_sampler_takes_any_seed(seed):
    a, b = (list(ResumableSampler(64, 16, seed=seed)) for _ in range(2))
    assert a == b and all(0 <= s < 2 ** 63 for _, s in a) and len({s for _, s in a}) == 64


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    data = tiny_data(root / "data")
    return {"data": data, "root": root}


@pytest.mark.parametrize("seed", SEEDS)
def test_pretraining_and_evaluation_take_any_seed(run, tmp_path, seed):
    cfg = tiny_cfg(run["data"], tmp_path / "pre", "SEED", str(seed), "SOLVER.EPOCHS", "1")
    assert Trainer(cfg).train() == 4
    checkpoint = tmp_path / "pre" / "checkpoint_00000004.pth"
    out = tmp_path / "linear"
    assert eval_main(["--config-file", "configs/eval/linear.yaml", "PRETRAINED", str(checkpoint), "DNS", "mbv3_w0.5",
                      "TRAIN.EPOCHS", "1", "SEED", str(seed), "DATA.ROOT", str(run["data"]), "DATA.RESOLUTION", "32",
                      "DATA.NUM_WORKERS", "0", "TRAIN.BATCH_SIZE", "16", "BN_RECALIBRATION.BATCHES", "2",
                      "OUTPUT_DIR", str(out)]) == 0
    assert (out / "results.json").exists()


def test_detectron2_batches_take_any_seed_and_leave_the_generators_as_they_were():
    pytest.importorskip("detectron2")
    from dspnet_d2.d2.data import ResumableBatchSampler, SeededMapDataset

    def mapper(d):  # an augmentation that draws from every generator detectron2's may use
        return (d["id"], random.random(), float(np.random.rand()), torch.rand(1).item())

    dicts = [{"id": i} for i in range(8)]
    for seed in SEEDS:
        dataset = SeededMapDataset(dicts, mapper, derive_seed(seed, 0))
        batches = ResumableBatchSampler(iter(range(8)), batch_size=4)
        torch.manual_seed(0)
        before = torch.get_rng_state()
        first = [[dataset[item] for item in batch] for batch in batches]
        assert torch.equal(torch.get_rng_state(), before)
        again = [[dataset[item] for item in batch] for batch in ResumableBatchSampler(iter(range(8)), batch_size=4)]
        assert first == again and len({row[2] for batch in first for row in batch}) == 8


@pytest.mark.slow
def test_detectron2_training_takes_a_63_bit_seed(tmp_path):
    pytest.importorskip("detectron2")
    out = tmp_path / "det"
    result = subprocess.run([sys.executable, "tools/train_net.py", "--config-file", "configs/detection/mask_rcnn_demo.yaml",
                             "--demo-root", str(tmp_path / "demo"), "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1",
                             "SOLVER.IMS_PER_BATCH", "2", "SEED", str(2 ** 62), "OUTPUT_DIR", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (out / "final_results.json").exists()
    rng = torch.load(out / "model_final.pth", weights_only=False)["trainer"]["rng"]  # every generator it draws from
    assert {"python", "numpy", "torch"} <= set(rng) and ("cuda" in rng) == torch.cuda.is_available()
