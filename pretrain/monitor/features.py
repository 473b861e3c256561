"""Networks measured on labelled images, shared by pretraining's monitor, evaluation and supervised training:
loaders sharded across ranks, pooled features in dataset order, top-k accuracy."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from dspnet_d2.runtime.rendezvous import is_main_process, world_size
from dspnet_d2.runtime.workers import ShieldedLoader

__all__ = ["make_loader", "extract_features", "topk_accuracy", "evaluate_classifier"]


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool, seed: int = 0,
                drop_last: bool = False) -> DataLoader:
    """Sharded across ranks under DDP (``batch_size`` is the global batch)."""
    world = world_size()
    sampler = None
    if world > 1:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    generator = torch.Generator().manual_seed(seed)
    return ShieldedLoader(dataset, batch_size=max(1, batch_size // world), shuffle=shuffle and sampler is None,
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


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent (k capped at the number of classes)."""
    out = {}
    for k in ks:
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices
        out[f"top{k}"] = 100.0 * (top == labels[:, None]).any(1).float().mean().item()
    return out


@torch.no_grad()
def evaluate_classifier(model: nn.Module, loader, device: torch.device) -> dict[str, float]:
    logits, labels = extract_features(model, loader, device, desc="validate")
    return topk_accuracy(logits, labels)
