"""tools/export_d2.py: Mask R-CNN with a DN backbone through detectron2's TracingAdapter, checked against the
eager model on demo images (needs detectron2)."""
import runpy

import pytest
import torch

pytest.importorskip("detectron2")

from dspnet_d2.d2.export_model import (compare_detections, eager_fields, load_eval_model,  # noqa: E402
                                        match_detections, model_input)
from dspnet_d2.deploy.formats import ParityError  # noqa: E402
from dspnet_d2.d2.train import load_config, register_demo  # noqa: E402
from dspnet_d2.demo.make_demo_data import make_demo_dataset  # noqa: E402
from dspnet_d2.errors import cli_main  # noqa: E402

ROOT = __file__.rsplit("/tests/", 1)[0]
CONFIG = f"{ROOT}/configs/detection/mask_rcnn_demo.yaml"
# a low threshold: an untrained model's boxes all score about 1/9, so every image has detections to compare
OPTS = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05", "MODEL.DEVICE", "cpu"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    root = make_demo_dataset(tmp_path_factory.mktemp("d2deploy") / "demo", train_per_class=1, val_per_class=1,
                             coco_train_images=2, coco_val_images=3)
    register_demo(str(root))
    return root


def trained_weights(dn: str, path) -> str:
    """A Mask R-CNN of ``dn`` as a model_final.pth (random init, seeded: the parity check needs no training)."""
    torch.manual_seed(0)
    cfg = load_config(CONFIG, ["MODEL.DSPNET.DN", dn] + OPTS)
    from detectron2.modeling import build_model

    torch.save({"model": build_model(cfg).state_dict()}, path)
    return str(path)


def run_export(args, capsys):
    main = runpy.run_path(f"{ROOT}/tools/export_d2.py")["main"]  # the tool's module, not run as __main__
    code = cli_main(lambda: main([str(a) for a in args]))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def exported_outputs(path: str, fmt: str, image: torch.Tensor) -> list[torch.Tensor]:
    """The exported file's flat outputs, run without the adapter."""
    if fmt == "torchscript":
        with torch.no_grad():
            return list(torch.jit.load(path)(image))
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return [torch.from_numpy(a) for a in session.run(None, {session.get_inputs()[0].name: image.numpy()})]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("dn", ["mbv3_w0.5", "resnet18"])
def test_export_equals_the_eager_model_on_demo_images(dn, fmt, demo_root, tmp_path, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the deploy extra: pip install -e '.[deploy]'")
    weights = trained_weights(dn, tmp_path / "model_final.pth")
    opts = ["MODEL.DSPNET.DN", dn, "MODEL.WEIGHTS", weights] + OPTS
    code, out, err = run_export(["--config-file", CONFIG, "--format", fmt, "-o", tmp_path / "out",
                                 "--demo-root", demo_root, "--num-images", 3, *opts], capsys)
    assert code == 0, err
    assert "equal to the eager model on 3 images of dspnet_demo_val" in out
    assert out.count(" matched, max |diff| pred_boxes ") == 5  # each image's detections matched, then compared
    # independently of the adapter: every eager output tensor is among the exported model's outputs
    cfg = load_config(CONFIG, opts)
    model = load_eval_model(cfg)
    from detectron2.data import DatasetCatalog

    for record in DatasetCatalog.get("dspnet_demo_val"):
        image = model_input(cfg, record["file_name"])
        expected = eager_fields(model, image)
        assert len(expected["scores"]) > 0
        traced = exported_outputs(str(tmp_path / "out" / ("model.ts" if fmt == "torchscript" else "model.onnx")), fmt,
                                  image)
        for name, tensor in expected.items():
            assert any(t.shape == tensor.shape and torch.allclose(t.float(), tensor.float(), atol=1e-3, rtol=1e-3)
                       for t in traced), name


def detections(scores, classes, boxes) -> dict:
    """Fields of detections as ``eager_fields`` gives them: boxes (x1, y1, x2, y2), masks made of each box's corner."""
    boxes = torch.tensor(boxes, dtype=torch.float32)
    masks = torch.stack([torch.full((1, 28, 28), float(b[0]) / 100) for b in boxes])
    return {"pred_boxes": boxes, "scores": torch.tensor(scores), "pred_classes": torch.tensor(classes),
            "pred_masks": masks}


EAGER = detections([0.9, 0.6000001, 0.6, 0.3], [1, 2, 2, 0],
                   [[10, 10, 50, 50], [60, 60, 90, 90], [5, 60, 30, 95], [40, 0, 70, 20]])


def test_detections_matched_whatever_their_order():
    swapped = {k: v[[0, 2, 1, 3]] for k, v in EAGER.items()}  # a near-tie of scores, sorted the other way
    with pytest.raises(AssertionError):  # compared by position, the boxes of two detections differ by 55 px
        torch.testing.assert_close(swapped["pred_boxes"], EAGER["pred_boxes"])
    assert match_detections(EAGER, swapped) == [(0, 0), (1, 2), (2, 1), (3, 3)]
    parity = compare_detections(EAGER, swapped)
    assert parity.matched == 4 and parity.diffs == {"pred_boxes": 0.0, "scores": 0.0, "pred_masks": 0.0}
    assert parity.swaps == 1 and parity.near_tie and 0 < parity.swap_gap < 2e-7
    assert "1 pair(s) in the other order (a near-tie of scores 6.0e-08 apart)" in parity.describe()
    moved = {**swapped, "pred_boxes": swapped["pred_boxes"] + torch.tensor([0.0, 0.0, 0.004, 0.0])}
    assert compare_detections(EAGER, moved).diffs["pred_boxes"] == pytest.approx(0.004, rel=1e-3)  # within 1e-3 x 90


def test_a_real_difference_is_named():
    moved = {**EAGER, "pred_boxes": EAGER["pred_boxes"] + torch.tensor([0.0, 0.0, 2.0, 0.0])}
    with pytest.raises(ParityError, match=r"pred_boxes of matched detections differ by up to 2.0e\+00"):
        compare_detections(EAGER, moved)
    rescored = {**EAGER, "scores": EAGER["scores"] + torch.tensor([0.0, 0.0, 0.0, 0.01])}
    with pytest.raises(ParityError, match=r"^scores of matched detections differ by up to 1.0e-02"):
        compare_detections(EAGER, rescored)
    other_class = {**EAGER, "pred_classes": torch.tensor([1, 2, 2, 3])}  # no match: one detection on each side
    with pytest.raises(ParityError, match=r"eager only: class 0, score 0.3000; exported only: class 3, score 0.3000"):
        compare_detections(EAGER, other_class)


def test_a_detection_at_a_cut_is_reported_not_failed():
    extra = detections([*EAGER["scores"].tolist(), 0.0503], [*EAGER["pred_classes"].tolist(), 4],
                       [*EAGER["pred_boxes"].tolist(), [0, 0, 9, 9]])
    parity = compare_detections(EAGER, extra, score_thresh=0.05)  # eager's score of it fell just below 0.05
    assert parity.one_sided == ["exported only: class 4, score 0.0503, at the score threshold 0.05"]
    assert parity.one_sided[0] in parity.describe()
    tied = {**EAGER, "scores": torch.tensor([0.9, 0.6000001, 0.3004, 0.3])}
    full = {k: v[:3] for k, v in tied.items()}  # the exported output holds 3, its top-3 cut, and not the fourth
    parity = compare_detections(tied, full, top_k=3)
    assert parity.one_sided == ["eager only: class 0, score 0.3000, at the top-3 cut"]
    with pytest.raises(ParityError, match="eager only: class 0, score 0.3000 "):
        compare_detections(EAGER, {k: v[:3] for k, v in EAGER.items()}, top_k=3)  # 0.3 is no tie with 0.6


def test_export_d2_needs_the_trained_weights(demo_root, tmp_path, capsys):
    code, _, err = run_export(["--config-file", CONFIG, "-o", tmp_path, "MODEL.WEIGHTS", tmp_path / "none.pth"], capsys)
    assert code == 2 and "give the trained model_final.pth" in err


@pytest.fixture(scope="module")
def coco_like(tmp_path_factory):
    """COCO-shaped val images (six sizes and aspect ratios, polygon masks, crowd regions, and one image without
    annotations), registered."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    from dspnet_d2.demo.fixtures import write_coco_like

    root = tmp_path_factory.mktemp("coco_like")
    annotations = write_coco_like(root, "val")
    if "dspnet_coco_like_val" not in DatasetCatalog.list():
        register_coco_instances("dspnet_coco_like_val", {}, str(annotations), str(root / "val"))
    return root


# COCO's test resize, scaled down for CPU: the short side to 160, the long one at most 267 (800 / 1333)
COCO_LIKE_OPTS = ["DATASETS.TEST", "('dspnet_coco_like_val',)", "INPUT.MIN_SIZE_TEST", "160",
                  "INPUT.MAX_SIZE_TEST", "267"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_serves_coco_shaped_images_of_every_size(fmt, coco_like, tmp_path, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the deploy extra: pip install -e '.[deploy]'")
    weights = trained_weights("mbv3_w0.5", tmp_path / "model_final.pth")
    opts = ["MODEL.DSPNET.DN", "mbv3_w0.5", "MODEL.WEIGHTS", weights] + OPTS + COCO_LIKE_OPTS
    code, out, err = run_export(["--config-file", CONFIG, "--format", fmt, "-o", tmp_path / "out", "--num-images", 6,
                                 *opts], capsys)
    assert code == 0, err
    assert "equal to the eager model on 6 images of dspnet_coco_like_val at 7 sizes" in out  # 5 + 2 resized
    # independently of the tool: every size after the test resize, through the file without the adapter
    cfg = load_config(CONFIG, opts)
    model = load_eval_model(cfg)
    from detectron2.data import DatasetCatalog

    path = str(tmp_path / "out" / ("model.ts" if fmt == "torchscript" else "model.onnx"))
    shapes = set()
    records = DatasetCatalog.get("dspnet_coco_like_val")
    assert len(records) == 7 and not records[-1].get("annotations")  # the empty image is checked too
    for record in records:
        image = model_input(cfg, record["file_name"])
        shapes.add(tuple(image.shape[1:]))
        expected = eager_fields(model, image)
        got = exported_outputs(path, fmt, image)
        for name, tensor in expected.items():
            assert any(t.shape == tensor.shape and torch.allclose(t.float(), tensor.float(), atol=1e-3, rtol=1e-3)
                       for t in got), (name, image.shape)
    assert len(shapes) >= 4 and all(min(s) == 160 or max(s) == 267 for s in shapes)
