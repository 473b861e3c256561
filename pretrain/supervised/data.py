"""Supervised training data: timm's MobileNetV3 augmentation from torchvision pieces, seeded per image."""
from __future__ import annotations

import torch
from torchvision import transforms as T

__all__ = ["RandAugmentMstd", "supervised_transform"]


class RandAugmentMstd(T.RandAugment):
    """torchvision's RandAugment on timm's magnitude scale (0..10) with timm's magnitude noise
    (``rand-m9-mstd0.5``: magnitude ~ N(9, 0.5) clipped to [0, 10]).

    torchvision has no magnitude noise; its magnitude is a bin index, so 101 bins give tenths of timm's
    scale. The noise is drawn once per image for all its operations (timm draws it per operation).
    """

    BINS = 101

    def __init__(self, num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.5):
        super().__init__(num_ops=num_ops, magnitude=round(magnitude * 10), num_magnitude_bins=self.BINS,
                         interpolation=T.InterpolationMode.BILINEAR)
        self.mean, self.std = magnitude, magnitude_std

    def forward(self, image):
        if self.std > 0:
            self.magnitude = round(float(torch.empty(1).normal_(self.mean, self.std).clamp_(0, 10)) * 10)
        return super().forward(image)


def supervised_transform(resolution: int, crop_scale, mean, std, rand_augment_ops: int = 2,
                         magnitude: float = 9.0, magnitude_std: float = 0.5, erasing: float = 0.2) -> T.Compose:
    """RandomResizedCrop, flip, RandAugment, normalisation, random erasing with per-pixel normal values."""
    steps = [T.RandomResizedCrop(resolution, scale=tuple(crop_scale)), T.RandomHorizontalFlip()]
    if rand_augment_ops:
        steps.append(RandAugmentMstd(rand_augment_ops, magnitude, magnitude_std))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if erasing:
        steps.append(T.RandomErasing(p=erasing, value="random"))
    return T.Compose(steps)
