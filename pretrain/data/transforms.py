"""BYOL's reference augmentations (torchvision's ``Compose``; ``augment.BYOLViews`` draws the same parameters
and is what training runs)."""
from __future__ import annotations

import torch
from PIL import Image, ImageFilter
from torchvision import transforms as T

__all__ = ["GaussianBlurPIL", "byol_transforms"]


class GaussianBlurPIL:
    """Gaussian blur of a PIL image, sigma drawn uniformly from ``sigma`` per call, as MoCo v2 and solo-learn blur.

    Sigma comes from torch's global RNG, so seeding it per image (``TwoViewDataset``) makes the views
    reproducible. PIL approximates the Gaussian with repeated (extended) box blurs of the same variance
    and does not truncate it; torchvision's ``T.GaussianBlur`` convolves with the exact Gaussian truncated
    to a fixed kernel: several times slower on PIL images at 224 px with BYOL's 23 px kernel, and at small
    resolutions (a 3 px kernel at 32 px) a much weaker blur than its sigma says.
    """

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = tuple(sigma)

    def __call__(self, image: Image.Image) -> Image.Image:
        sigma = torch.empty(1).uniform_(*self.sigma).item()
        return image.filter(ImageFilter.GaussianBlur(radius=sigma))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma})"


def byol_transforms(resolution: int, crop_scale=(0.08, 1.0), mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225), blur_prob=(1.0, 0.1),
                    solarize_prob=(0.0, 0.2), color_jitter=(0.4, 0.4, 0.2, 0.1), color_jitter_prob: float = 0.8,
                    grayscale_prob: float = 0.2, blur_sigma=(0.1, 2.0)) -> tuple[T.Compose, T.Compose]:
    """BYOL's asymmetric augmentations: blur p = 1.0 / 0.1, solarize p = 0.0 / 0.2 by default.

    ``color_jitter`` = (brightness, contrast, saturation, hue) strengths as ``T.ColorJitter`` takes them."""

    def view(blur_p: float, solarize_p: float) -> T.Compose:
        return T.Compose([
            T.RandomResizedCrop(resolution, scale=tuple(crop_scale), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(*color_jitter)], p=color_jitter_prob),
            T.RandomGrayscale(p=grayscale_prob),
            T.RandomApply([GaussianBlurPIL(blur_sigma)], p=blur_p),
            T.RandomSolarize(threshold=128, p=solarize_p),
            T.ToTensor(),
            T.Normalize(mean, std),
        ])

    return view(blur_prob[0], solarize_prob[0]), view(blur_prob[1], solarize_prob[1])
