"""BYOL view transforms: the configurable colour augmentation does what its keys say."""
import numpy as np
import torch
from PIL import Image

from pretrain.data import byol_transforms


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

