"""A method defined outside the package (tests/simsiam_method.py) pretrains on the engine with no edit to
package code: checkpoints and resumes exactly, stops on SIGTERM, is watched by the kNN monitor, exports its DNs."""
import json
import subprocess
import sys

import pytest
import torch
from pretrain_utils import ROOT, assert_equal_states, tiny_cfg, tiny_data
from simsiam_method import SimSiam
from test_preemption import _env, _signal_mid_run, _stopped_step

from dspnet_d2 import build_static_dn, parse_dn
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.slim.slicing import slice_dn
from dspnet_d2.weights import read_weights
from pretrain.engine.checkpoint import latest_checkpoint, load_checkpoint
from pretrain.engine.config import load_cfg
from pretrain.engine.preemption import EXIT_PREEMPTED
from pretrain.engine.trainer import Trainer
from pretrain.eval.weights import read_initial_weights
from pretrain.methods import METHODS

SIMSIAM = ("MODEL.METHOD", "simsiam_test", "MODEL.SIMSIAM_PREDICTOR_HIDDEN", "8")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("demo"))


def _records(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_the_registered_method_and_its_key_join_the_config():
    assert METHODS["simsiam_test"] is SimSiam
    cfg = load_cfg("configs/pretrain/demo.yaml", list(SIMSIAM))
    assert cfg.MODEL.SIMSIAM_PREDICTOR_HIDDEN == 8 and "SIMSIAM_PREDICTOR_HIDDEN" in cfg.dump()
    with pytest.raises(InvalidInputError, match="unknown MODEL.METHOD 'nope'.*simsiam_test"):
        load_cfg("configs/pretrain/demo.yaml", ["MODEL.METHOD", "nope"])


def test_an_outside_method_trains_checkpoints_resumes_is_monitored_and_exports(data_root, tmp_path):
    monitor = ("MONITOR.KNN_PERIOD", "1", "MONITOR.BANK_IMAGES", "32", "MONITOR.VAL_IMAGES", "16")
    straight = Trainer(tiny_cfg(data_root, tmp_path / "straight", *SIMSIAM, *monitor))
    assert isinstance(straight.method, SimSiam) and not hasattr(straight.method, "target")
    straight.train()
    first = Trainer(tiny_cfg(data_root, tmp_path / "resumed", *SIMSIAM, *monitor))
    assert first.train(stop_after=3) == 3
    resumed = Trainer(tiny_cfg(data_root, tmp_path / "resumed", *SIMSIAM, *monitor))
    assert resumed.train() == 8
    assert_equal_states(straight.method.network.state_dict(), resumed.method.network.state_dict(), "network")

    state = load_checkpoint(latest_checkpoint(tmp_path / "straight"))
    assert state["signature"]["method"] == "simsiam_test" and set(state) >= {"online", "optimizer", "rng"}
    assert "target" not in state
    records = _records(tmp_path / "straight")
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 8 and all(-2.0 <= loss <= 2.0 for loss in losses)  # a negative cosine, per DN drawn
    assert all(r["subnets"] == ["mbv3_w1.0"] for r in records if "subnets" in r)  # the base's choice: the full one
    knn = [r for r in records if "knn/mbv3_w0.5" in r]
    assert len(knn) == 3 and all(f"knn/{dn}" in knn[-1] for dn in ("mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"))
    assert (tmp_path / "straight" / "knn_monitor.png").exists()

    encoder = straight.method.encoder
    for dn in ("mbv3_w0.5", "mbv3_w1.0"):
        saved = torch.load(tmp_path / "straight" / "export" / f"{dn}.pth", weights_only=True)
        build_static_dn(parse_dn(dn)).load_state_dict(saved["state_dict"], strict=True)
        sliced = slice_dn(encoder, parse_dn(dn)).state_dict()
        weights = [k for k in sliced if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert all(torch.equal(saved["state_dict"][k], sliced[k]) for k in weights)

    checkpoint = read_weights(str(latest_checkpoint(tmp_path / "straight")))  # the evaluation's reading
    assert checkpoint.weights.keys() == encoder.state_dict().keys()
    initial = read_initial_weights(checkpoint)  # rebuilt from the checkpoint's config: the outside method
    fresh = Trainer(tiny_cfg(data_root, tmp_path / "fresh", *SIMSIAM)).method.encoder.state_dict()
    assert_equal_states(initial.weights, fresh, "step 0")


@pytest.mark.rehearsal
def test_an_outside_method_stops_on_sigterm_and_resumes_exactly(data_root, tmp_path):
    args = ["--config-file", "configs/pretrain/demo.yaml", "DATA.ROOT", str(data_root), "DATA.RESOLUTION", "32",
            "DATA.NUM_WORKERS", "2", "MODEL.DNS", "mbv3_s3", "MODEL.NUM_SUBNETS", "3", "MODEL.PROJ_HIDDEN", "32",
            "MODEL.PROJ_DIM", "16", "SOLVER.BATCH_SIZE", "16", "SOLVER.EPOCHS", "3", "MODEL.FULL_ONLY_EPOCHS", "0",
            "CHECKPOINT.PERIOD", "1000", "CHECKPOINT.KEEP", "20", "LOG_PERIOD", "1", "EXPORT", "False",
            "CHANNELS_LAST", "False", *SIMSIAM]
    command = [sys.executable, "-m", "pretrain", "--import", "tests/simsiam_method.py"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    subprocess.run(command + args + ["OUTPUT_DIR", str(straight)], cwd=ROOT, env=_env(), check=True,
                   capture_output=True, timeout=600)
    status, _ = _signal_mid_run(command + args + ["OUTPUT_DIR", str(stopped)], stopped, after_step=5)
    step = _stopped_step(stopped)
    assert status == EXIT_PREEMPTED and 5 <= step < 12
    assert load_checkpoint(latest_checkpoint(stopped))["step"] == step
    result = subprocess.run(command + args + ["OUTPUT_DIR", str(stopped)], cwd=ROOT, env=_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    a, b = (torch.load(d / "checkpoint_00000012.pth", weights_only=True) for d in (straight, stopped))
    for part in ("online", "optimizer"):
        assert_equal_states(a[part], b[part], part)
