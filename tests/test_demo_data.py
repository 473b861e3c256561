import json

import numpy as np
import pytest
from PIL import Image

from dspnet_d2.demo.make_demo_data import CLASSES, COCO_IMAGE_SIZE, classification_sample, make_demo_dataset

ARGS = dict(image_size=64, train_per_class=4, val_per_class=2, coco_train_images=6, coco_val_images=3, seed=0)


def _files(root):
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", **ARGS)


def test_deterministic(demo, tmp_path):
    other = make_demo_dataset(tmp_path / "again", **ARGS)
    a, b = _files(demo), _files(other)
    assert a.keys() == b.keys()
    assert all(a[k].read_bytes() == b[k].read_bytes() for k in a)
    # another seed gives other images
    third = make_demo_dataset(tmp_path / "seed1", **{**ARGS, "seed": 1})
    assert (third / "train/star/star_0.png").read_bytes() != a["train/star/star_0.png"].read_bytes()


def test_idempotent_and_regenerates_on_new_arguments(tmp_path):
    root = make_demo_dataset(tmp_path / "d", **ARGS)
    mtimes = {k: p.stat().st_mtime_ns for k, p in _files(root).items()}
    assert make_demo_dataset(root, **ARGS) == root
    assert {k: p.stat().st_mtime_ns for k, p in _files(root).items()} == mtimes
    make_demo_dataset(root, **{**ARGS, "train_per_class": 2})  # stale files of the old arguments go
    assert len(list((root / "train" / "circle").glob("*.png"))) == 2
    assert json.loads((root / "DEMO_DATA.json").read_text())["args"]["train_per_class"] == 2


def test_refuses_foreign_data(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "x.png").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_demo_dataset(tmp_path, **ARGS)


def test_image_folder_layout(demo):
    marker = json.loads((demo / "DEMO_DATA.json").read_text())
    assert marker["args"] == ARGS and marker["complete"]
    for split, n in (("train", 4), ("val", 2)):
        assert sorted(p.name for p in (demo / split).iterdir()) == sorted(CLASSES)
        for cls in CLASSES:
            files = sorted((demo / split / cls).iterdir())
            assert [p.name for p in files] == sorted(f"{cls}_{i}.png" for i in range(n))
            for p in files:
                with Image.open(p) as im:
                    assert im.mode == "RGB" and im.size == (64, 64)
    # the files are exactly what classification_sample returns (so the statistics below apply to them)
    img, _ = classification_sample("ring", 1, "val", 64, 0)
    assert np.array_equal(np.asarray(Image.open(demo / "val/ring/ring_1.png")), img)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools vs numpy 2
@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_annotations(demo, split):
    from pycocotools.coco import COCO

    coco = COCO(str(demo / "coco" / "annotations" / f"instances_{split}.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == ARGS[f"coco_{split}_images"]
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        with Image.open(demo / "coco" / split / info["file_name"]) as im:
            assert im.mode == "RGB" and im.size == (info["width"], info["height"]) == (COCO_IMAGE_SIZE,) * 2
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert 1 <= len(anns) <= 4
        union = np.zeros((info["height"], info["width"]), int)
        for ann in anns:
            assert 1 <= ann["category_id"] <= len(CLASSES) and ann["iscrowd"] == 0
            m = coco.annToMask(ann).astype(bool)
            union += m
            assert m.sum() > 0 and ann["area"] == m.sum()
            ys, xs = np.nonzero(m)
            x, y, w, h = ann["bbox"]
            expected = (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
            assert np.allclose((x, y, w, h), expected, atol=1)
        assert union.max() == 1  # visible masks never overlap


def _zscores(values, labels):
    """Per-class mean minus overall mean, in units of the standard error of a class mean."""
    values = np.asarray(values, float).reshape(len(labels), -1)
    n = np.bincount(labels)[0]
    sem = values.std(0) / np.sqrt(n) + 1e-12
    return np.stack([(values[labels == k].mean(0) - values.mean(0)) / sem for k in range(len(CLASSES))])


def _nuisance_stats(split, n):
    rows, labels = [], []
    for k, cls in enumerate(CLASSES):
        for i in range(n):
            img, mask = classification_sample(cls, i, split, 64, 0)
            pix = img.reshape(-1, 3) / 255.0
            m = mask.reshape(-1)
            ys, xs = np.nonzero(mask)
            rows.append(dict(mean_rgb=pix.mean(0), background=pix[~m].mean(0), object=pix[m].mean(0),
                             size=[np.sqrt(m.mean())], position=[xs.mean() / 64, ys.mean() / 64]))
            labels.append(k)
    return rows, np.array(labels)


def _dilate(mask, r):
    p = np.pad(mask, r)
    h, w = mask.shape
    return np.any([p[r + dy:r + dy + h, r + dx:r + dx + w] for dy in range(-r, r + 1) for dx in range(-r, r + 1)], 0)


@pytest.mark.parametrize("split", ["train", "val"])
def test_nuisances_identical_across_classes(split):
    """Image i of every class shares background, colours, noise, area and position: only the shape differs."""
    for i in range(6):
        samples = [classification_sample(cls, i, split, 64, 0) for cls in CLASSES]
        # anti-aliased fringes (coverage < 1/2, outside the masks) reach up to 2 px beyond the masks
        near_objects = _dilate(np.any([m for _, m in samples], 0), 2)
        reference_img, reference_mask = samples[0]
        for img, mask in samples[1:]:
            assert np.array_equal(img[~near_objects], reference_img[~near_objects])
            # same colour under the same noise level: medians of ~700 noisy pixels (std <= 21) agree within ~3.5 SE
            assert np.allclose(np.median(img[mask], 0), np.median(reference_img[reference_mask], 0), atol=5)
            # equal areas; the half-coverage masks of upright shapes differ by up to a pixel row along straight edges
            assert abs(mask.sum() / reference_mask.sum() - 1) < 0.08
            assert np.allclose(np.argwhere(mask).mean(0), np.argwhere(reference_mask).mean(0), atol=0.75)


def test_no_nuisance_shortcuts():
    """Colours, object size and position carry no class information: only the geometry does."""
    train, y_train = _nuisance_stats("train", 20)
    val, y_val = _nuisance_stats("val", 20)
    for key in train[0]:
        z = _zscores([r[key] for r in train], y_train)
        assert np.abs(z).max() < 4, (key, z)
    # the object is large and contrasts strongly with the background (survives greyscale/jitter)
    luma = np.array([0.299, 0.587, 0.114])
    assert all(abs((r["object"] - r["background"]) @ luma) > 0.25 for r in train)
    assert all(0.3 < r["size"][0] for r in train)
    # nearest-class-mean on the raw mean colour of the image is at chance level
    x_train = np.array([r["mean_rgb"] for r in train])
    x_val = np.array([r["mean_rgb"] for r in val])
    means = np.stack([x_train[y_train == k].mean(0) for k in range(len(CLASSES))])
    pred = np.argmin(((x_val[:, None] - means[None]) ** 2).sum(-1), 1)
    assert (pred == y_val).mean() <= 2 / len(CLASSES)
