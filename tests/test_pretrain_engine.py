import json
import os
from types import SimpleNamespace

import pytest
import torch
import torchvision
from pretrain_utils import tiny_cfg, tiny_data

from dspnet_d2 import DN_SETS, build_static_dn, parse_dn
from dspnet_d2.images import ImageFolderIO
from dspnet_d2.recalibration import recalibrate_on_images
from dspnet_d2.slim.slicing import slice_dn
from dspnet_d2.weights import read_weights
from pretrain.engine.config import load_cfg
from pretrain.engine.loop import check_world_size
from pretrain.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from pretrain.engine.trainer import NonFiniteLossError, Trainer
from pretrain.methods import DSPNet


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def straight(data_root, tmp_path_factory):
    """The tiny run, trained once without interruption for the tests that only read it (its files, exports and
    weights): its trainer, folder, the steps ``train`` returned and how often the target ran meanwhile."""
    out = tmp_path_factory.mktemp("straight")
    trainer = Trainer(tiny_cfg(data_root, out))
    calls = []
    hook = trainer.method.target.register_forward_hook(lambda *args: calls.append(1))
    steps = trainer.train()
    hook.remove()
    return SimpleNamespace(trainer=trainer, out=out, steps=steps, target_calls=len(calls))


def _records(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _assert_same_weights(a: dict, b: dict, atol=1e-6):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=atol), key


def test_full_run_warmup_sandwich_export_and_checkpoints(straight):
    trainer, out = straight.trainer, straight.out
    assert trainer.total_steps == 8 and trainer.steps_per_epoch == 4
    assert straight.steps == 8
    assert straight.target_calls == 2 * 8  # the target runs once per view per step, whatever n is
    records = _records(out)
    assert [r["step"] for r in records] == list(range(1, 9))
    for r in records:
        losses = {k[5:]: v for k, v in r.items() if k.startswith("loss/")}
        if r["step"] <= 4:  # first epoch: the full network only
            assert list(losses) == ["mbv3_w1.0"]
        else:
            assert list(losses) == ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"]
        assert r["loss"] == pytest.approx(sum(losses.values()), rel=1e-5)
        assert {"lr", "tau", "images_per_s", "skipped_images", "epoch"} <= r.keys()
    assert len(list_checkpoints(out)) == trainer.cfg.CHECKPOINT.KEEP
    state = load_checkpoint(latest_checkpoint(out))  # weights_only=True inside
    assert state["step"] == 8 and "MODEL:" in state["config"]
    # the checkpoint describes itself: its DN set and where the encoder's torchvision-keyed weights are
    assert state["dns"] == ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"]
    assert state["encoder"] == {"entry": "online", "prefix": "encoder."}
    served = read_weights(latest_checkpoint(out))
    assert served.weights.keys() == trainer.method.online.encoder.state_dict().keys()
    assert served.record["step"] == 8 and not {"online", "target", "optimizer", "rng"} & served.record.keys()
    assert os.path.exists(out / "tb")
    for dn in ["mbv3_w0.5", "mbv3_w0.75", "mbv3_w1.0"]:
        saved = torch.load(out / "export" / f"{dn}.pth", weights_only=True)
        assert saved["dn"] == dn
        build_static_dn(parse_dn(dn)).load_state_dict(saved["state_dict"], strict=True)
    for r in records:  # the collapse monitor of every sampled DN
        for dn in r["subnets"]:
            assert 0 < r[f"rep_std/{dn}"] <= 1 and 0 < r[f"proj_std/{dn}"] <= 1 and -1 <= r[f"view_cos/{dn}"] <= 1


def test_exported_dns_carry_their_own_recalibrated_bn_statistics(data_root, straight):
    trainer = straight.trainer
    images = ImageFolderIO(str(data_root / "train"))
    for dn in ["mbv3_w0.5", "mbv3_w1.0"]:
        saved = torch.load(straight.out / "export" / f"{dn}.pth", weights_only=True)
        plain = torchvision.models.mobilenet_v3_large(width_mult=parse_dn(dn).width)  # README's three lines
        plain.classifier = torch.nn.Identity()
        plain.load_state_dict(saved["state_dict"])
        # demo.yaml's EVAL_VIEW: 32 px crops; 8 batches of 128 cover the 64 training images
        assert saved["bn_recalibration"] == {"seed": 0, "images": 64, "resolution": 32}
        shared = slice_dn(trainer.method.encoder, parse_dn(dn)).state_dict()  # the supernet's shared buffers
        fresh = slice_dn(trainer.method.encoder, parse_dn(dn))
        recalibrate_on_images(fresh, images, resolution=32, batch_size=128, num_batches=8, seed=0, resize_ratio=1.0)
        for key, value in fresh.state_dict().items():
            assert torch.equal(saved["state_dict"][key], value), key
        stats = [k for k in shared if k.endswith("running_mean")]
        assert any(not torch.allclose(shared[k], saved["state_dict"][k]) for k in stats)


@pytest.mark.parametrize("dns", ["mbv3_s3", "mbv3_s5", "mbv3_s11"])
def test_every_dn_set_runs_its_first_sandwich_step_with_n_3_4_5(data_root, tmp_path, dns):
    for n in (3, 4, 5):
        trainer = Trainer(tiny_cfg(data_root, tmp_path / str(n), "MODEL.DNS", dns, "MODEL.NUM_SUBNETS", str(n),
                                   "MODEL.FULL_ONLY_EPOCHS", "0"))
        assert trainer.train(stop_after=1) == 1
        subnets = _records(tmp_path / str(n))[0]["subnets"]
        members = [str(dn) for dn in DN_SETS[dns]]
        assert len(subnets) == n and subnets[0] == members[0] and subnets[-1] == members[-1]
        assert set(subnets) <= set(members)


def _watched_runs(data_root, tmp_path, monitor, plain):
    """The tiny run with ``monitor`` on, straight and killed after step 5 then resumed, each checked to train
    the same weights as ``plain``, the run without it; returns (straight, resumed)."""
    watched = Trainer(tiny_cfg(data_root, tmp_path / "watched", "EXPORT", "False", *monitor))
    watched.train()
    first = Trainer(tiny_cfg(data_root, tmp_path / "resumed", "EXPORT", "False", *monitor))
    assert first.train(stop_after=5) == 5  # killed mid-epoch 2, after the epoch-1 monitors
    del first
    resumed = Trainer(tiny_cfg(data_root, tmp_path / "resumed", "EXPORT", "False", *monitor))
    assert resumed.train() == 8
    for other in (watched, resumed):
        for part in ("online", "target"):
            a, b = getattr(plain.method, part).state_dict(), getattr(other.method, part).state_dict()
            assert all(torch.equal(a[k], b[k]) for k in a), part
    return watched, resumed


def _curves(folder, prefix):  # the last record of each step: a resumed run repeats the steps after its checkpoint
    return {r["step"]: {k: v for k, v in r.items() if k.startswith(prefix)}
            for r in _records(folder) if any(k.startswith(prefix) for k in r)}


def test_knn_monitor_leaves_training_unchanged_and_resumes_bit_identically(data_root, straight, tmp_path):
    _watched_runs(data_root, tmp_path, ["MONITOR.KNN_PERIOD", "1", "MONITOR.BANK_IMAGES", "40",
                                        "MONITOR.VAL_IMAGES", "12", "MONITOR.K", "5"], straight.trainer)
    curves = _curves(tmp_path / "watched", "knn/")
    assert sorted(curves) == [0, 4, 8]  # step 0, then every epoch
    assert all(set(v) == {"knn/mbv3_w0.5", "knn/mbv3_w0.75", "knn/mbv3_w1.0"} for v in curves.values())
    assert all(0 <= top1 <= 100 for v in curves.values() for top1 in v.values())
    assert _curves(tmp_path / "resumed", "knn/") == curves
    assert (tmp_path / "watched" / "knn_monitor.png").read_bytes()[:4] == b"\x89PNG"


def test_linear_probe_leaves_pretraining_unchanged_logs_each_dn_and_resumes_exactly(data_root, straight, tmp_path):
    probed, resumed = _watched_runs(data_root, tmp_path, ["MONITOR.LINEAR_PROBE", "True"], straight.trainer)
    assert "linear_probe" in load_checkpoint(latest_checkpoint(tmp_path / "resumed"))
    a, b = probed.probes.checkpoint_state(), resumed.probes.checkpoint_state()
    assert all(torch.equal(a["heads"][k], b["heads"][k]) for k in a["heads"])  # weights and the epoch's counts
    assert all(torch.equal(x["momentum_buffer"], b["optimizer"]["state"][i]["momentum_buffer"])
               for i, x in a["optimizer"]["state"].items())
    curves = _curves(tmp_path / "watched", "linear_probe/")
    assert list(curves[4]) == ["linear_probe/mbv3_w1.0"]  # the first epoch trains the full network only
    assert set(curves[8]) == {"linear_probe/mbv3_w0.5", "linear_probe/mbv3_w0.75", "linear_probe/mbv3_w1.0"}
    assert all(0 <= top1 <= 100 for v in curves.values() for top1 in v.values())
    assert _curves(tmp_path / "resumed", "linear_probe/") == curves
    assert (tmp_path / "watched" / "knn_monitor.png").read_bytes()[:4] == b"\x89PNG"


def test_interrupted_run_resumes_to_the_same_weights(data_root, straight, tmp_path):
    uninterrupted = straight.trainer
    first = Trainer(tiny_cfg(data_root, tmp_path / "b"))
    assert first.train(stop_after=5) == 5  # killed mid-epoch 1 (4 steps per epoch)
    del first
    resumed = Trainer(tiny_cfg(data_root, tmp_path / "b"))  # the same command again
    assert resumed.train() == 8
    _assert_same_weights(uninterrupted.method.online.state_dict(), resumed.method.online.state_dict())
    _assert_same_weights(uninterrupted.method.target.state_dict(), resumed.method.target.state_dict())
    _assert_same_weights(uninterrupted.optimizer.state_dict()["state"][0], resumed.optimizer.state_dict()["state"][0])


def test_checkpoint_of_another_dn_set_is_refused(data_root, tmp_path):
    Trainer(tiny_cfg(data_root, tmp_path)).train(stop_after=2)
    other = Trainer(tiny_cfg(data_root, tmp_path, "MODEL.DNS", "mbv3_s5", "MODEL.NUM_SUBNETS", "3"))
    with pytest.raises(ValueError, match="another run"):
        other.train()


def test_a_checkpoint_from_before_the_method_key_resumes_as_dspnet(data_root, tmp_path):
    Trainer(tiny_cfg(data_root, tmp_path)).train(stop_after=1)
    path = latest_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    assert state["signature"].pop("method") == "dspnet"
    torch.save(state, path)  # as a checkpoint written before MODEL.METHOD existed
    assert Trainer(tiny_cfg(data_root, tmp_path)).train(stop_after=1) == 2
    other = Trainer(tiny_cfg(data_root, tmp_path, "MODEL.METHOD", "byol", "MODEL.DNS", "mbv3_w1.0"))
    with pytest.raises(ValueError, match="method: checkpoint 'dspnet' vs this run 'byol'"):
        other.train()


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    torch.save({"model": {}}, tmp_path / "checkpoint_00000001.pth")
    with pytest.raises(ValueError, match="not a dspnet pretraining checkpoint"):
        load_checkpoint(str(tmp_path / "checkpoint_00000001.pth"))


def test_non_finite_loss_stops_with_step_and_subnet(data_root, tmp_path, monkeypatch):
    trainer = Trainer(tiny_cfg(data_root, tmp_path, "SOLVER.WARMUP_EPOCHS", "0", "MODEL.FULL_ONLY_EPOCHS", "0"))
    original = DSPNet.symmetric_loss

    def poisoned(predictions, projections):
        loss = original(predictions, projections)
        if trainer.step == 3 and predictions[0].shape[-1] and trainer.method.online.encoder.active.width == 0.75:
            return loss * float("nan")
        return loss

    monkeypatch.setattr(DSPNet, "symmetric_loss", staticmethod(poisoned))
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*mbv3_w0\.75"):
        trainer.train()
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 2  # the last good one stays


def test_corrupt_and_truncated_images_are_skipped_and_counted(data_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root / "train", root / "train")
    good = next((root / "train" / "circle").iterdir())
    (root / "train" / "circle" / "zz_garbage.png").write_bytes(b"not an image at all")
    (root / "train" / "square" / "zz_truncated.png").write_bytes(good.read_bytes()[:200])
    trainer = Trainer(tiny_cfg(root, tmp_path / "out", "SOLVER.EPOCHS", "2"))
    trainer.train()
    assert _records(tmp_path / "out")[-1]["skipped_images"] >= 2  # each is met at least once in 2 epochs


@pytest.mark.parametrize("overrides,message", [
    (["MODEL.DNS", "mbv3_w0.3"], "not on the mbv3 grid"),
    (["MODEL.DNS", "mbv3_w0.5,mbv3_w1.0", "MODEL.NUM_SUBNETS", "3"], "NUM_SUBNETS=3 needs a DN between"),
    (["MODEL.DNS", "mbv3_w0.5", "MODEL.NUM_SUBNETS", "2"], "NUM_SUBNETS=2 must be 1"),
    (["MODEL.DNS", "resnet_w1.5_d2222,resnet34", "MODEL.NUM_SUBNETS", "2"], "no largest member"),
    (["SOLVER.BATCH_SIZE", "0"], "BATCH_SIZE"),
    (["AMP.DTYPE", "float8"], "AMP.DTYPE"),
    (["DATA.COLOR_JITTER", "(0.4, 0.4, 0.2, 0.6)"], "hue <= 0.5"),
    (["DATA.GRAYSCALE_PROB", "1.5"], "GRAYSCALE_PROB"),
    (["CHECKPOINT.SIGNALS", "('SIGTERM', 'SIGKILL')"], "CHECKPOINT.SIGNALS: 'SIGKILL' is not a signal"),
    (["DIST.TIMEOUT_MINUTES", "0.0"], "DIST.TIMEOUT_MINUTES must be > 0"),
    (["MONITOR.LINEAR_PROBE_LR", "-0.1"], "LINEAR_PROBE_LR"),
])
def test_bad_config_values_fail_at_start(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_cfg("configs/pretrain/demo.yaml", overrides)


def test_unknown_key_and_world_size_checks():
    with pytest.raises(ValueError, match="MODEL.NOT_A_KEY"):
        load_cfg("configs/pretrain/demo.yaml", ["MODEL.NOT_A_KEY", "1"])
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        load_cfg("configs/pretrain/demo.yaml", ["SOLVER.EPOCHS"])
    cfg = load_cfg("configs/pretrain/demo.yaml", ["SOLVER.BATCH_SIZE", "64"])
    with pytest.raises(ValueError, match="multiple of the world size 3"):
        check_world_size(cfg, 3)


@pytest.mark.parametrize("recipe", ["dspnet_mbv3_imagenet", "dspnet_resnet_imagenet", "byol_mbv3_imagenet",
                                    "byol_resnet_imagenet", "demo"])
def test_recipes_load_with_paper_values(recipe):
    cfg = load_cfg(f"configs/pretrain/{recipe}.yaml")
    assert cfg.RECIPE == recipe
    if recipe != "demo":
        assert cfg.SOLVER.BATCH_SIZE == 4096 and cfg.SOLVER.EPOCHS == 300 and cfg.SOLVER.BASE_LR == 0.2
        assert cfg.SOLVER.WEIGHT_DECAY == 1.5e-6 and cfg.SOLVER.WARMUP_EPOCHS == 10 and cfg.MODEL.TAU_BASE == 0.996
        assert cfg.MODEL.PROJ_HIDDEN == 4096 and cfg.MODEL.PROJ_DIM == 256
    if recipe.startswith("dspnet"):
        assert cfg.MODEL.NUM_SUBNETS == 4 and cfg.MODEL.FULL_ONLY_EPOCHS == 10 and cfg.MODEL.MOMENTUM_BN
        assert cfg.DATA.RESOLUTION == (224 if "mbv3" in recipe else 128)
    if recipe.startswith("byol"):
        assert cfg.MODEL.METHOD == "byol" and len(cfg.dns) == 1


def test_model_dns_is_parsed_once_from_the_config_to_the_exported_files(data_root, tmp_path, monkeypatch):
    """Every DN string goes through dn.parse_dn's pattern; a run reads each DN of MODEL.DNS once, where the recipe
    is loaded, and hands DNSpecs down to the method, the checkpoints, the monitor and the exports."""
    import dspnet_d2.dn as dn_module

    parsed = []

    class CountingPattern:
        def __init__(self, pattern):
            self.pattern = pattern

        def match(self, text):
            parsed.append(text)
            return self.pattern.match(text)

    monkeypatch.setattr(dn_module, "_PATTERN", CountingPattern(dn_module._PATTERN))
    dns = "mbv3_w0.5,mbv3_w0.75,mbv3_w1.0"
    trainer = Trainer(tiny_cfg(data_root, tmp_path, "MODEL.DNS", dns, "MONITOR.KNN_PERIOD", "1",
                               "MONITOR.BANK_IMAGES", "32", "MONITOR.VAL_IMAGES", "8",
                               "EXPORT_RECALIBRATION_BATCHES", "1"))
    assert trainer.train() == 8 and len(list((tmp_path / "export").glob("*.pth"))) == 3
    assert parsed == dns.split(",")
