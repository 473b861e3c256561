"""Evaluation data: the classifier protocols' train views (random crop + flip)."""
from __future__ import annotations

from torchvision import transforms as T


def train_transform(resolution: int, mean, std, crop_scale=(0.08, 1.0)) -> T.Compose:
    crop = T.RandomResizedCrop(resolution, scale=tuple(crop_scale), interpolation=T.InterpolationMode.BICUBIC)
    return T.Compose([crop, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
