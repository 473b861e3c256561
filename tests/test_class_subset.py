"""A class subset of an image folder (DATA.CLASS_COUNT, DATA.CLASS_LIST): the mid-scale recipe's data, the same in
pretraining and evaluation."""
import json

import pytest
from pretrain_utils import tiny_cfg, tiny_data

from dspnet_d2.images import ImageFolderIO, class_selection, select_classes
from pretrain.engine.config import load_cfg
from pretrain.engine.trainer import Trainer
from pretrain.eval.__main__ import main as eval_main

NAMES = [f"n{i:08d}" for i in range(1000)]


def test_a_count_spreads_over_the_sorted_names_and_a_list_names_them(tmp_path):
    picked = select_classes(NAMES, "100", "root")
    assert len(picked) == 100 and picked[:3] == ["n00000000", "n00000010", "n00000020"] and picked == sorted(picked)
    listed = tmp_path / "classes.txt"
    listed.write_text("n00000007\n# a comment\nn00000003\n\n")
    assert select_classes(NAMES, str(listed), "root") == ["n00000003", "n00000007"]
    assert select_classes(NAMES, "", "root") is NAMES
    listed.write_text("n99999999\n")
    for spec, error in (("1001", "has 1000 class folders"), (str(listed), "are not folders"),
                        (str(tmp_path / "absent.txt"), "does not exist")):
        with pytest.raises(ValueError if "folders" in error else FileNotFoundError, match=error):
            select_classes(NAMES, spec, "root")
    with pytest.raises(ValueError, match="not both"):
        class_selection(100, str(listed))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_data(tmp_path_factory.mktemp("subset"))


def test_pretraining_and_evaluation_use_the_same_class_subset(data, tmp_path):
    all_classes = ImageFolderIO(str(data / "train")).classes
    trainer = Trainer(tiny_cfg(data, tmp_path / "pre", "DATA.CLASS_COUNT", "4", "SOLVER.EPOCHS", "2",
                               "SOLVER.BATCH_SIZE", "8"))
    assert trainer.images.classes == all_classes[::2] and len(trainer.images) == 4 * 8
    trainer.train()
    out = tmp_path / "knn"
    assert eval_main(["--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(tmp_path / "pre" / "checkpoint_00000008.pth"),
                      "DNS", "mbv3_w0.5", "DATA.ROOT", str(data), "DATA.RESOLUTION", "32", "DATA.NUM_WORKERS", "0",
                      "TRAIN.BATCH_SIZE", "16", "BN_RECALIBRATION.BATCHES", "2", "DATA.CLASS_COUNT", "4",
                      "OUTPUT_DIR", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["results"][0]["labelled_images"] == 4 * 8


def test_the_subset_recipe_loads():
    cfg = load_cfg("configs/pretrain/dspnet_mbv3_imagenet_subset.yaml", [])
    assert cfg.DATA.CLASS_COUNT == 100 and cfg.SOLVER.BATCH_SIZE == 256 and cfg.MODEL.DNS == "mbv3_s5"
