"""BYOL view transforms: the configurable colour augmentation does what its keys say; the blur and seeding."""
import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageDraw
from torchvision import transforms as T

from dspnet_d2.images import ImageFolderIO
from pretrain.data.augment import BYOLViews
from pretrain.data.transforms import GaussianBlurPIL, byol_transforms
from pretrain.data.views import TwoViewDataset


def _image(seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _views(**kwargs):
    base = dict(resolution=32, crop_scale=(1.0, 1.0), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                blur_prob=(0.0, 0.0), solarize_prob=(0.0, 0.0))
    return byol_transforms(**{**base, **kwargs})


def test_no_colour_augmentation_keeps_pixels_up_to_flip():
    image = _image()
    plain = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255
    for view in _views(color_jitter=(0, 0, 0, 0), color_jitter_prob=0.0, grayscale_prob=0.0):
        for _ in range(4):
            out = view(image)
            assert torch.allclose(out, plain, atol=1e-6) or torch.allclose(out, plain.flip(-1), atol=1e-6)


def test_grayscale_probability_one_gives_grey_views():
    for view in _views(color_jitter_prob=0.0, grayscale_prob=1.0):
        out = view(_image(1))
        assert torch.allclose(out[0], out[1]) and torch.allclose(out[1], out[2])


def test_full_hue_jitter_changes_colours():
    image = _image(2)
    view = _views(color_jitter=(0, 0, 0, 0.5), color_jitter_prob=1.0, grayscale_prob=0.0)[0]
    torch.manual_seed(0)
    outs = [view(image) for _ in range(6)]
    assert max((o - outs[0]).abs().max().item() for o in outs[1:]) > 0.2


def _natural_image(size=224, seed=0):
    """Smooth gradients, flat shapes with sharp edges and sensor noise: what a blur acts on in photographs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = Image.fromarray((np.stack([x, y, 1 - x * y], -1) * 160 + 40).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(10, size // 3, 2)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, x0 + w, y0 + h], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    noisy = np.asarray(image, np.float64) + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(noisy.clip(0, 255).astype(np.uint8))


def test_pil_blur_is_close_to_the_exact_gaussian():
    image = _natural_image()
    pixels = TF.pil_to_tensor(image).float()
    tolerance = 1.5  # mean |difference| in 0..255; measured <= 0.64 here, while a 2x sigma error or no blur is >= 3.1

    def gap(blurred: Image.Image, sigma: float) -> float:
        kernel = int(np.ceil(6 * sigma)) // 2 * 2 + 3  # odd, > 6 sigma: the truncation is negligible
        exact = TF.gaussian_blur(pixels, [kernel, kernel], [sigma, sigma])
        return (TF.pil_to_tensor(blurred).float() - exact).abs().mean().item()

    for sigma in (0.5, 1.0, 2.0):
        assert gap(GaussianBlurPIL((sigma, sigma))(image), sigma) < tolerance
        # the tolerance tells a wrong blur apart
        assert gap(GaussianBlurPIL((2 * sigma, 2 * sigma))(image), sigma) > tolerance
        assert gap(GaussianBlurPIL((sigma / 2, sigma / 2))(image), sigma) > tolerance
        assert gap(image, sigma) > tolerance


class _RecordsFilter:
    """Stands in for a PIL image: keeps the radius of the filter applied to it."""

    def filter(self, kernel):
        self.radius = kernel.radius
        return self


def _drawn_sigmas(blur, seed, count=200):
    torch.manual_seed(seed)
    return [blur(_RecordsFilter()).radius for _ in range(count)]


def test_pil_blur_draws_sigma_uniformly_and_reproducibly():
    sigmas = _drawn_sigmas(GaussianBlurPIL((0.1, 2.0)), seed=0)
    assert min(sigmas) >= 0.1 and max(sigmas) <= 2.0
    assert min(sigmas) < 0.3 and max(sigmas) > 1.8 and abs(np.mean(sigmas) - 1.05) < 0.1
    assert sigmas == _drawn_sigmas(GaussianBlurPIL((0.1, 2.0)), seed=0)
    assert sigmas != _drawn_sigmas(GaussianBlurPIL((0.1, 2.0)), seed=1)
    # the very draws of torchvision's blur, so a seed gives the sigmas it gave before
    torch.manual_seed(0)
    assert sigmas == [T.GaussianBlur.get_params(0.1, 2.0) for _ in range(200)]


def test_byol_views_blur_with_the_pil_blur_at_the_blur_probabilities():
    for view, p in zip(byol_transforms(224, blur_prob=(1.0, 0.1)), (1.0, 0.1)):
        blurs = [t for t in view.transforms if isinstance(t, T.RandomApply)
                 and isinstance(t.transforms[0], GaussianBlurPIL)]
        assert [(b.p, b.transforms[0].sigma) for b in blurs] == [(p, (0.1, 2.0))]


def test_two_view_dataset_views_are_reproducible_per_seed(tmp_path):
    (tmp_path / "c").mkdir()
    _natural_image(size=96).save(tmp_path / "c" / "a.jpg", quality=90)
    data = TwoViewDataset(ImageFolderIO(str(tmp_path)), BYOLViews(64))
    first, again, other = data[(0, 7)], data[(0, 7)], data[(0, 8)]
    assert first[0].dtype == torch.uint8 and first[0].shape == (3, 64, 64)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])
