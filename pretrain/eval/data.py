"""Evaluation data: train views (random crop + flip), loaders sharded across ranks, feature extraction."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from torchvision import transforms as T

from ..distributed import is_main_process, world_size


def train_transform(resolution: int, mean, std, crop_scale=(0.08, 1.0)) -> T.Compose:
    crop = T.RandomResizedCrop(resolution, scale=tuple(crop_scale), interpolation=T.InterpolationMode.BICUBIC)
    return T.Compose([crop, T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """Sharded across ranks under DDP (``batch_size`` is the global batch)."""
    world = world_size()
    sampler = None
    if world > 1:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=max(1, batch_size // world), shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=num_workers, drop_last=drop_last, generator=generator,
                      pin_memory=torch.cuda.is_available())


@torch.no_grad()
def extract_features(model: torch.nn.Module, loader: DataLoader, device: torch.device, desc: str = "features",
                     gather: bool = True, progress: bool = True):
    """Pooled features and labels of every sample, in dataset order, gathered from all ranks (``gather``;
    False when one process works alone, as the pretraining's kNN monitor does, without a ``progress`` bar)."""
    from tqdm import tqdm

    model.eval()
    feats, labels, positions = [], [], []
    main = is_main_process()
    for x, y, pos in tqdm(loader, desc=desc, disable=not (main and progress), leave=False):
        feats.append(model(x.to(device, non_blocking=True)).float().cpu())
        labels.append(y)
        positions.append(pos)
    feats, labels, positions = torch.cat(feats), torch.cat(labels), torch.cat(positions)
    if gather and dist.is_initialized() and dist.get_world_size() > 1:
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (feats, labels, positions))
        feats, labels, positions = (torch.cat(parts) for parts in zip(*gathered))
    order = torch.argsort(positions, stable=True)
    feats, labels, positions = feats[order], labels[order], positions[order]
    keep = torch.ones_like(positions, dtype=torch.bool)
    keep[1:] = positions[1:] != positions[:-1]  # DistributedSampler pads with repeats
    return feats[keep], labels[keep]
