"""BYOLViews at ImageNet-like shapes (500x375 JPEGs): the torchvision backend is byol_transforms pixel for
pixel, the OpenCV backend stays within rounding of it, draft decoding never upsamples."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torchvision.transforms import functional as F

from dspnet_d2.demo.fixtures import write_photo_like_jpegs
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.images import ImageFolderIO
from pretrain.engine.config import load_cfg
from pretrain.data.augment import BYOLViews, ViewParams, _colour_opencv, normalize_views
from pretrain.data.transforms import byol_transforms
from pretrain.data.views import TwoViewDataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEMO_RECIPE = dict(color_jitter=(0.8, 0.8, 0.8, 0.5), solarize_prob=(0.2, 0.5), grayscale_prob=0.3)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_photo_like_jpegs(root / "class_a", 6)
    return ImageFolderIO(str(root))


@pytest.mark.parametrize("resolution,recipe", [(224, {}), (64, DEMO_RECIPE)])
def test_torchvision_backend_is_byol_transforms_pixel_for_pixel(photos, resolution, recipe):
    reference = byol_transforms(resolution, **recipe)
    data = TwoViewDataset(photos, BYOLViews(resolution, backend="torchvision", **recipe))
    for index in range(len(photos)):
        seed = 100 + index
        image = photos.load(index)
        torch.manual_seed(seed)
        expected = reference[0](image), reference[1](image)
        views = data[(index, seed)]
        for view, want in zip(views, expected):
            assert view.dtype == torch.uint8
            assert torch.equal(normalize_views(view[None], MEAN, STD)[0], want)


@pytest.mark.parametrize("resolution,recipe", [(224, {}), (64, DEMO_RECIPE)])
def test_opencv_backend_is_within_rounding_of_the_reference(photos, resolution, recipe):
    fast = TwoViewDataset(photos, BYOLViews(resolution, backend="opencv", **recipe))
    exact = TwoViewDataset(photos, BYOLViews(resolution, backend="torchvision", **recipe))
    diffs = []
    for index in range(len(photos)):
        for a, b in zip(fast[(index, index)][:2], exact[(index, index)][:2]):
            assert a.shape == b.shape == (3, resolution, resolution) and a.dtype == torch.uint8
            diffs.append((a.float() - b.float()).abs().mean().item())
    assert np.mean(diffs) < 1.5 and max(diffs) < 4, diffs


def _smooth_image(size=160, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(noise).resize((size, size), Image.BICUBIC))


def _params(**kw):
    base = dict(crop=(0, 0, 160, 160), flip=False, jitter=None, grayscale=False, blur_sigma=None, solarize=False)
    return ViewParams(**{**base, **kw})


def _exact_hue(image: Image.Image, factor: float) -> Image.Image:
    """torchvision's hue shift on float tensors: no 8-bit quantisation of H."""
    exact = F.adjust_hue(F.pil_to_tensor(image).float() / 255, factor)
    return Image.fromarray((exact * 255).round().byte().permute(1, 2, 0).numpy())


@pytest.mark.parametrize("op,factor,reference,max_mean,max_abs", [
    (0, 1.35, F.adjust_brightness, 0.0, 0),
    (0, 0.65, F.adjust_brightness, 0.0, 0),
    (1, 1.3, F.adjust_contrast, 0.0, 0),
    (1, 0.6, F.adjust_contrast, 0.0, 0),
    (2, 1.2, F.adjust_saturation, 0.05, 1),
    (2, 0.0, F.adjust_saturation, 0.05, 1),
    (3, 0.1, _exact_hue, 0.15, 1),
    (3, -0.5, _exact_hue, 0.15, 1),
    (3, 0.03, F.adjust_hue, 1.5, 16),  # PIL's 8-bit hue, the reference pipeline's: about 1 level off exact
])
def test_opencv_colour_jitter_matches_torchvision_functionals(op, factor, reference, max_mean, max_abs):
    rgb = _smooth_image()
    factors = [None] * 4
    factors[op] = factor
    out = _colour_opencv(rgb.copy(), _params(jitter=([op] + [i for i in range(4) if i != op], *factors)))
    want = np.asarray(reference(Image.fromarray(rgb), factor)).astype(int)
    diff = np.abs(out.astype(int) - want)
    assert diff.mean() <= max_mean and diff.max() <= max_abs, (diff.mean(), diff.max())


def test_opencv_greyscale_solarize_and_blur_match_their_references():
    rgb = _smooth_image(seed=1)
    image = Image.fromarray(rgb)
    grey = _colour_opencv(rgb.copy(), _params(grayscale=True)).astype(int)
    assert np.abs(grey - np.asarray(F.rgb_to_grayscale(image, 3)).astype(int)).max() <= 1
    solar = _colour_opencv(rgb.copy(), _params(solarize=True))
    assert np.array_equal(solar, np.asarray(F.solarize(image, 128)))
    for sigma in (0.3, 1.0, 2.0):
        blurred = _colour_opencv(rgb.copy(), _params(blur_sigma=sigma)).astype(float)
        exact = F.gaussian_blur(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float(), 2 * int(5 * sigma) + 1, sigma)
        assert np.abs(blurred - exact.permute(1, 2, 0).numpy()).mean() < 0.6
        pil = np.asarray(image.filter(ImageFilter.GaussianBlur(sigma))).astype(float)
        assert np.abs(blurred - pil).mean() < 1.0  # PIL's box approximation, the reference pipeline's blur


def test_draft_decoding_keeps_every_crop_at_least_the_output_size(photos):
    views = BYOLViews(96, backend="opencv")
    drafted = 0
    for seed in range(40):
        path = photos.samples[seed % len(photos)][0]
        torch.manual_seed(seed)
        image_file = Image.open(path)
        params = [views.draw(image_file, v) for v in (0, 1)]
        sx, sy = views.load_draft(image_file, params)
        drafted += sx < 1
        for p in params:
            assert p.crop[2] * sy >= 96 and p.crop[3] * sx >= 96  # nothing is upsampled that was not before
    assert drafted >= 10  # at 96 px most crops of a 500x375 photo allow a 1/2 or 1/4 DCT scale


def test_draft_decoding_stays_close_to_full_decoding(photos):
    draft = TwoViewDataset(photos, BYOLViews(96, backend="opencv"))
    full = TwoViewDataset(photos, BYOLViews(96, backend="opencv", draft=False))
    diffs = [(a.float() - b.float()).abs().mean().item()
             for i in range(len(photos)) for a, b in zip(draft[(i, i)][:2], full[(i, i)][:2])]
    assert 0 < np.mean(diffs) < 3, diffs


def test_a_truncated_jpeg_is_skipped_and_counted(tmp_path):
    paths = write_photo_like_jpegs(tmp_path / "c", 2)
    paths[0].write_bytes(paths[0].read_bytes()[:2000])
    data = TwoViewDataset(ImageFolderIO(str(tmp_path)), BYOLViews(64))
    view1, view2, skipped, label = data[(0, 3)]
    assert skipped == 1 and view1.shape == view2.shape == (3, 64, 64) and label == 0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="opencv"):
        BYOLViews(64, backend="dali")
    with pytest.raises(TypeError, match="uint8"):
        normalize_views(torch.zeros(1, 3, 8, 8), MEAN, STD)
    with pytest.raises(InvalidInputError, match="AUGMENT_BACKEND"):
        load_cfg("configs/pretrain/demo.yaml", ["DATA.AUGMENT_BACKEND", "pil"])


def test_draft_scale_is_the_exact_dct_factor(photos):
    views = BYOLViews(32, backend="opencv", crop_scale=(1.0, 1.0))  # whole-image crops: the 1/8 DCT scale
    image_file = Image.open(photos.samples[0][0])  # 500 x 375: ceil(375 / 8) / 375 != 1 / 8
    params = [views.draw(image_file, v) for v in (0, 1)]
    assert views.load_draft(image_file, params) == (1 / 8, 1 / 8)
    assert image_file.size == (63, 47)


def test_an_augmentation_error_is_raised_not_skipped_as_an_unreadable_image(photos, monkeypatch):
    views = BYOLViews(64)
    data = TwoViewDataset(photos, views)

    def broken(*args, **kwargs):
        raise ValueError("a bug in an augmentation")

    monkeypatch.setattr(views, "apply", broken)
    with pytest.raises(ValueError, match="a bug in an augmentation"):
        data[(0, 3)]


def test_image_folder_items_are_image_and_label(photos):
    image, label = photos[1]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (500, 375) and label == 0
