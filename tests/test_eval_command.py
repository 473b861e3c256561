"""``python -m pretrain.eval`` on the demo data: every DN, tables, CSV, JSON and the plot; bad inputs."""
import csv
import json
import os

import pytest
import torch
from pretrain_utils import tiny_cfg, tiny_data

from dspnet_d2 import build_static_dn, parse_dn
from dspnet_d2.weights import DN_FORMAT
from pretrain.engine.trainer import Trainer
from pretrain.eval.__main__ import main as eval_main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny DSPNet run (mbv3_s3) and a tiny BYOL run (mbv3_w0.5) on tiny demo data."""
    root = tmp_path_factory.mktemp("eval")
    data = tiny_data(root / "data")
    Trainer(tiny_cfg(data, root / "dspnet")).train()
    Trainer(tiny_cfg(data, root / "byol", "MODEL.DNS", "mbv3_w0.5", "MODEL.METHOD", "byol")).train()
    return {"data": data, "dspnet": root / "dspnet" / "checkpoint_00000008.pth",
            "byol": root / "byol" / "export" / "mbv3_w0.5.pth"}


def _common(run, out):
    return ["DATA.ROOT", str(run["data"]), "DATA.RESOLUTION", "32", "DATA.NUM_WORKERS", "0", "TRAIN.BATCH_SIZE",
            "16", "BN_RECALIBRATION.BATCHES", "2", "OUTPUT_DIR", str(out)]


def test_all_dns_knn_writes_table_csv_json_and_plot(run, tmp_path, capsys):
    args = ["--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(run["dspnet"]), "DNS", "all",
            "BASELINES", f"['{run['byol']}']", "KNN.K", "5", *_common(run, tmp_path)]
    assert eval_main(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [(r["series"], r["dn"]) for r in rows] == [("DSPNet", "mbv3_w0.5"), ("DSPNet", "mbv3_w0.75"),
                                                      ("DSPNet", "mbv3_w1.0"), ("BYOL", "mbv3_w0.5")]
    assert all(0 <= float(r["top1"]) <= float(r["top5"]) <= 100 for r in rows)
    assert int(rows[0]["params"]) < int(rows[2]["params"]) and int(rows[0]["flops"]) < int(rows[2]["flops"])
    data = json.load(open(tmp_path / "results.json"))
    assert "BN recalibration on" in data["title"] and len(data["results"]) == 4
    assert "| DSPNet | mbv3_w0.75 |" in (tmp_path / "results.md").read_text()
    for result in data["results"]:  # 2 batches of 16 of the 64 training images, a seeded sample
        assert result["resolution"] == 32
        assert result["bn_recalibration"] == {"seed": 0, "images": 32, "resolution": 32}
    png = (tmp_path / "accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # a rerun resumes: finished DNs are read back, not recomputed
    marker = tmp_path / "DSPNet" / "mbv3_w0.5" / "result.json"
    saved = json.load(open(marker))
    saved["top1"] = -1.0
    json.dump(saved, open(marker, "w"))
    assert eval_main(args) == 0
    assert list(csv.DictReader(open(tmp_path / "results.csv")))[0]["top1"] == "-1.0"


def test_random_init_reference_averages_seeds(run, tmp_path):
    common = ["--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(run["dspnet"]), "DNS", "mbv3_w0.5",
              "RANDOM_INIT", "True", "KNN.K", "5"]
    assert eval_main([*common, "RANDOM_INIT_SEEDS", "3", *_common(run, tmp_path / "three")]) == 0
    results = json.load(open(tmp_path / "three" / "results.json"))["results"]
    assert [r["series"] for r in results] == ["DSPNet", "random init"]
    reference = results[1]
    assert reference["seeds"] == [0, 1, 2] and len(reference["top1_per_seed"]) == 3
    assert reference["top1"] == pytest.approx(sum(reference["top1_per_seed"]) / 3)
    assert reference["top1_std"] == pytest.approx(float(torch.tensor(reference["top1_per_seed"]).std(unbiased=False)))
    assert "random init: mean ± std over 3 seeds" in (tmp_path / "three" / "results.md").read_text()
    # seed k of the mean is exactly the single-seed run with SEED k
    assert eval_main([*common, "SEED", "2", *_common(run, tmp_path / "one")]) == 0
    single = json.load(open(tmp_path / "one" / "results.json"))["results"][1]
    assert single["seeds"] == [2] and single["top1"] == pytest.approx(reference["top1_per_seed"][2])
    with pytest.raises(ValueError, match="RANDOM_INIT_SEEDS"):
        eval_main([*common, "RANDOM_INIT_SEEDS", "0", *_common(run, tmp_path / "bad")])


def test_linear_and_semisup_protocols_run_per_dn(run, tmp_path):
    out = tmp_path / "linear"
    assert eval_main(["--config-file", "configs/eval/linear.yaml", "PRETRAINED", str(run["dspnet"]), "DNS",
                      "mbv3_w0.5", "TRAIN.EPOCHS", "1", *_common(run, out)]) == 0
    assert json.load(open(out / "results.json"))["results"][0]["dn"] == "mbv3_w0.5"
    out = tmp_path / "semi"
    assert eval_main(["--config-file", "configs/eval/semisup_finetune_10pct.yaml", "PRETRAINED", str(run["byol"]),
                      "TRAIN.EPOCHS", "1", "SUBSET.PERCENT", "25.0", *_common(run, out)]) == 0
    result = json.load(open(out / "results.json"))["results"][0]
    assert result["series"] == "BYOL" and result["labelled_images"] == 16  # 25% of 8 images x 8 classes
    assert len((out / "subset_25percent.txt").read_text().split()) == 16


def test_bad_inputs_fail_before_training(run, tmp_path):
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(ValueError, match="not a dspnet checkpoint"):
        eval_main(["--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(foreign), *_common(run, tmp_path)])
    with pytest.raises(ValueError, match="not of this checkpoint's family"):
        eval_main(["--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(run["dspnet"]), "DNS", "resnet18",
                   *_common(run, tmp_path)])
    with pytest.raises(ValueError, match="is not in"):
        eval_main(["--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(run["byol"]), "DNS", "mbv3_w0.75",
                   *_common(run, tmp_path)])
    listing = tmp_path / "list.txt"
    listing.write_text("circle_0.png\nno_such_image.JPEG\n")
    with pytest.raises(FileNotFoundError, match="no_such_image"):
        eval_main(["--config-file", "configs/eval/semisup_linear_1pct.yaml", "PRETRAINED", str(run["dspnet"]),
                   "SUBSET.LIST_FILE", str(listing), *_common(run, tmp_path)])
    empty = tmp_path / "data_with_empty_class"
    for split in ("train", "val"):
        os.makedirs(empty / split / "nothing_here")
        os.symlink(run["data"] / split / "circle", empty / split / "circle")
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        eval_main(["--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(run["dspnet"]),
                   *_common(run, tmp_path), "DATA.ROOT", str(empty)])
    assert not (tmp_path / "DSPNet").exists()  # nothing was trained


def test_initial_weights_reference_is_the_runs_step0_supernet(run, tmp_path):
    from dspnet_d2.weights import read_weights
    from pretrain.eval.weights import read_initial_weights

    started = Trainer(tiny_cfg(run["data"], tmp_path / "fresh")).method.online.encoder.state_dict()
    rebuilt = read_initial_weights(read_weights(str(run["dspnet"]))).weights
    trained = torch.load(run["dspnet"], weights_only=True)["online"]
    assert rebuilt.keys() == started.keys()
    assert all(torch.equal(rebuilt[k], started[k]) for k in started)
    assert any(not torch.equal(rebuilt[k], trained["encoder." + k]) for k in rebuilt)  # pretraining moved them

    common = ["--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(run["dspnet"]), "DNS", "mbv3_w0.5,mbv3_w1.0",
              "INITIAL_WEIGHTS", "True", "RANDOM_INIT", "True", "KNN.K", "5", *_common(run, tmp_path / "knn")]
    assert eval_main(common) == 0
    results = json.load(open(tmp_path / "knn" / "results.json"))["results"]
    assert [(r["series"], r["dn"]) for r in results] == [
        ("DSPNet", "mbv3_w0.5"), ("DSPNet", "mbv3_w1.0"), ("initial weights", "mbv3_w0.5"),
        ("initial weights", "mbv3_w1.0"), ("random init", "mbv3_w0.5"), ("random init", "mbv3_w1.0")]
    assert results[2]["checkpoint"].endswith("(step 0)")
    assert "| initial weights | mbv3_w1.0 |" in (tmp_path / "knn" / "results.md").read_text()


def test_initial_weights_need_a_pretraining_checkpoint(run, tmp_path):
    with pytest.raises(ValueError, match="INITIAL_WEIGHTS needs a pretraining checkpoint"):
        eval_main(["--config-file", "configs/eval/knn.yaml", "PRETRAINED", str(run["byol"]), "INITIAL_WEIGHTS",
                   "True", *_common(run, tmp_path)])


def test_both_families_are_evaluated_at_224_px_unless_overridden(run, tmp_path):
    from pretrain.eval.config import load_eval_cfg
    from pretrain.eval.runner import Evaluation

    def resolution(*overrides):
        cfg = load_eval_cfg("configs/eval/knn.yaml", ["PRETRAINED", str(run["dspnet"]), "DATA.ROOT",
                                                      str(run["data"]), "OUTPUT_DIR", str(tmp_path), *overrides])
        return Evaluation(cfg).resolution

    assert resolution() == 224
    assert resolution("DATA.RESOLUTION", "160") == 160
    resnet = tmp_path / "resnet18.pth"
    torch.save({"format": DN_FORMAT, "dn": "resnet18",
                "state_dict": build_static_dn(parse_dn("resnet18")).state_dict()}, resnet)
    assert parse_dn("resnet18").info.resolution == 128  # its pretraining resolution
    assert resolution("PRETRAINED", str(resnet)) == 224
