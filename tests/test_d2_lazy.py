"""The LazyConfig of Mask R-CNN FPN with a DN backbone: detectron2's model-zoo pieces, the DN one key; it builds
with detectron2's instantiate and trains on the demo set with this package's command."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("detectron2")

ROOT = __file__.rsplit("/tests/", 1)[0]
CONFIG = "configs/detection/lazy/mask_rcnn_dn_fpn_2x.py"


def test_the_lazy_config_builds_the_dn_chosen_by_one_key():
    from detectron2.config import LazyConfig, instantiate

    from dspnet_d2.d2.backbone import DSPNetBackbone

    cfg = LazyConfig.apply_overrides(LazyConfig.load(f"{ROOT}/{CONFIG}"),
                                     ["model.backbone.bottom_up.dn=resnet18", "model.backbone.bottom_up.norm=BN",
                                      "model.backbone.norm=BN"])
    model = instantiate(cfg.model)
    assert isinstance(model.backbone.bottom_up, DSPNetBackbone) and str(model.backbone.bottom_up.dn) == "resnet_w1.0_d2222"
    assert model.backbone.bottom_up.output_shape()["res5"].channels == 512 and model.input_format == "RGB"
    assert cfg.train.max_iter == 180000 and cfg.dataloader.train.total_batch_size == 16
    # detectron2's schedules are relative to max_iter: steps at 120k and 160k of 180k
    milestones = list(cfg.lr_multiplier.scheduler.milestones)
    assert [m / milestones[-1] * cfg.train.max_iter for m in milestones[:2]] == [120000, 160000]


@pytest.mark.slow
def test_the_lazy_config_trains_two_iterations_on_the_demo_set(tmp_path):
    out = tmp_path / "lazy"
    overrides = ["model.backbone.bottom_up.dn=mbv3_w0.5", "model.backbone.bottom_up.norm=BN", "model.backbone.norm=BN",
                 "model.roi_heads.num_classes=8", "train.device=cpu", "model.proposal_generator.pre_nms_topk=[200,100]",
                 "model.proposal_generator.post_nms_topk=[200,100]",
                 "model.roi_heads.box_predictor.test_topk_per_image=20",
                 "dataloader.train.dataset.names=dspnet_demo_train", "dataloader.test.dataset.names=dspnet_demo_val",
                 "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
                 "dataloader.train.mapper.instance_mask_format=bitmask",  # the demo masks are RLE
                 "dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
                 "dataloader.train.mapper.augmentations.0.max_size=128", "train.max_iter=2", "train.eval_period=0",
                 # the evaluation at the training size too, of fewer boxes (800 px and 1000 proposals: seconds an
                 # image on CPU)
                 "dataloader.test.mapper.augmentations.0.short_edge_length=64",
                 "dataloader.test.mapper.augmentations.0.max_size=128",
                 "lr_multiplier.warmup_length=0.5", "dataloader.evaluator.output_dir=" + str(out / "inference"),
                 f"train.output_dir={out}"]
    result = subprocess.run([sys.executable, "-m", "dspnet_d2.d2.lazy_train", "--config-file", CONFIG, "--demo-root",
                             str(tmp_path / "demo"), *overrides], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records if "total_loss" in r] == [1]  # 2 iterations (logged at the last)
    assert "bbox/AP" in records[-1] and "segm/AP" in records[-1]  # then the final evaluation
    assert (out / "model_final.pth").exists()
