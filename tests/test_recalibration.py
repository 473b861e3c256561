"""BN recalibration reads a seeded random sample of the whole training set, not its first classes."""
import pytest
import torch
from PIL import Image

from dspnet_d2 import build_static_dn, parse_dn
from dspnet_d2.images import ImageFolderIO, eval_transform
from dspnet_d2.recalibration import recalibrate_bn, recalibrate_on_images, recalibration_loader, seeded_subset


@pytest.fixture(scope="module")
def class_sorted_folder(tmp_path_factory):
    """100 classes x 10 images: listed class by class, as ImageNet's train folder is."""
    root = tmp_path_factory.mktemp("sorted")
    for c in range(100):
        (root / f"n{c:08d}").mkdir()
        for i in range(10):
            Image.new("RGB", (12, 9), (c, i, 0)).save(root / f"n{c:08d}" / f"{i}.png")
    return ImageFolderIO(str(root))


def test_recalibration_sample_covers_most_classes_of_a_class_sorted_folder(class_sorted_folder):
    images = class_sorted_folder
    batch, batches = 50, 4  # a quota of 200 of the 1000 images
    loader = recalibration_loader(images, lambda image: torch.zeros(1), batch, batches, seed=0)
    labels = [label for _, y, _ in loader for label in y.tolist()]
    assert len(labels) == 200
    sequential = {label for _, label in images.samples[:200]}
    assert len(sequential) == 20  # reading in order sees a fifth of the classes
    assert len(set(labels)) >= 75  # a random sample of 200 misses a class with probability 0.8^10 ~ 0.11


def test_sample_is_seeded_distinct_and_capped():
    a, b = seeded_subset(1000, 200, seed=3), seeded_subset(1000, 200, seed=3)
    assert a == b and len(set(a)) == 200  # the same sample on every rank, drawn without replacement
    assert a != seeded_subset(1000, 200, seed=4)
    assert sorted(seeded_subset(30, 200, seed=0)) == list(range(30))  # min(N, quota): all of a small set
    with pytest.raises(ValueError):
        seeded_subset(0, 10, seed=0)


def test_recalibrate_on_images_equals_recalibrate_bn_on_the_sample(class_sorted_folder):
    torch.manual_seed(0)
    model = build_static_dn(parse_dn("resnet18"))
    info = recalibrate_on_images(model, class_sorted_folder, resolution=16, batch_size=8, num_batches=3, seed=1,
                                 resize_ratio=1.0)
    assert info == {"seed": 1, "images": 24, "resolution": 16}
    reference = build_static_dn(parse_dn("resnet18"))
    reference.load_state_dict(model.state_dict())
    transform = eval_transform(16, 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    picked = seeded_subset(len(class_sorted_folder), 24, seed=1)
    batches = [torch.stack([transform(class_sorted_folder.load(i)) for i in picked[k:k + 8]]) for k in (0, 8, 16)]
    recalibrate_bn(reference, batches)
    for (name, ours), theirs in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(ours, theirs), name


def test_a_partial_last_batch_weighs_what_it_holds():
    norm = torch.nn.BatchNorm2d(2)
    images = torch.randn(11, 2, 3, 3, generator=torch.Generator().manual_seed(0)) * 3 + 1
    assert recalibrate_bn(norm, [images[:8], images[8:]]) == 2  # 8 images, then a last batch of 3
    torch.testing.assert_close(norm.running_mean, images.mean((0, 2, 3)))
    # the unbiased variance of each batch, averaged with the batches' image counts as weights
    per_batch = [b.transpose(0, 1).flatten(1).var(1) for b in (images[:8], images[8:])]
    torch.testing.assert_close(norm.running_var, (8 * per_batch[0] + 3 * per_batch[1]) / 11)


def test_only_bn_layers_run_in_train_mode_and_every_mode_comes_back():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.Dropout(p=0.9), torch.nn.BatchNorm2d(4))
    images = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    model.train()
    recalibrate_bn(model, [images])
    with torch.no_grad():
        features = model[0](images)  # dropout off: the BN sees the inference-time features
    torch.testing.assert_close(model[2].running_mean, features.mean((0, 2, 3)))
    assert all(m.training for m in model.modules()) and model[2].momentum == 0.1
    model.eval()
    recalibrate_bn(model, [images])
    assert not any(m.training for m in model.modules())
