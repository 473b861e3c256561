"""The kNN monitor of a live run: every DN's kNN top-1 every few epochs, and its curves (with the online
linear probe's) as a PNG."""
from __future__ import annotations

import json
import logging
import os
import random

import torch

from dspnet_d2.slim.slicing import slice_dn
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.images import ImageFolderIO, LabelledImages, eval_transform
from dspnet_d2.recalibration import recalibrate_bn, seeded_subset
from dspnet_d2.runtime.workers import ShieldedLoader

from .features import extract_features, topk_accuracy
from .knn import knn_scores

logger = logging.getLogger("pretrain")

CACHE_BYTES = 512 * 2 ** 20  # kNN monitor sets up to this size stay in memory between evaluations

class KNNMonitor:
    """kNN top-1 of every DN on a bounded, seeded sample of held-out images, against a bank of a bounded,
    seeded sample of training images; each DN is exported and its BN statistics recalibrated on the bank
    first, so the numbers are those ``python -m pretrain.eval`` would give on the same images.

    Runs on one process and leaves the training state alone: the weights are copied, and the RNG
    streams (torch, python) are restored, so a run with the monitor trains exactly as one without.
    """

    def __init__(self, train_images: ImageFolderIO, val_root: str, bank_images: int, val_images: int, k: int,
                 resolution: int, resize_ratio: float, batch_size: int, seed: int, mean, std,
                 device: torch.device, num_workers: int = 0):
        held_out = ImageFolderIO(val_root, train_images.classes)
        if held_out.classes != train_images.classes:
            raise InvalidInputError(f"the kNN monitor's held-out folder {val_root} has other classes than the "
                                    f"training images")
        transform = eval_transform(resolution, resize_ratio, mean, std)
        bank = LabelledImages(train_images, transform, seeded_subset(len(train_images), bank_images, seed))
        val = LabelledImages(held_out, transform, seeded_subset(len(held_out), val_images, seed + 1))
        if k > len(bank):
            raise InvalidInputError(f"MONITOR.K={k} exceeds the {len(bank)} images of the kNN bank")
        # persistent workers: each DN reads both sets, and starting workers per pass would cost seconds
        self.bank, self.val = (ShieldedLoader(d, batch_size=batch_size, num_workers=num_workers,
                                                           persistent_workers=num_workers > 0)
                           for d in (bank, val))
        # the crops never change: small sets are decoded once and kept (the demo's 1360 crops: 17 MB)
        self.cache = (len(bank) + len(val)) * 3 * resolution ** 2 * 4 <= CACHE_BYTES
        self.k, self.device, self.num_classes = k, device, len(train_images.classes)

    def __call__(self, supernet, dns) -> dict[str, float]:
        """``{"knn/<dn>": top-1 %}`` for every DN of ``dns`` sliced out of ``supernet``."""
        python_state = random.getstate()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                return {f"knn/{dn}": self._top1(slice_dn(supernet, dn).to(self.device)) for dn in dns}
        finally:
            random.setstate(python_state)

    def _top1(self, model) -> float:
        if self.cache and isinstance(self.bank, torch.utils.data.DataLoader):
            self.bank, self.val = list(self.bank), list(self.val)
        recalibrate_bn(model, (x.to(self.device) for x, _, _ in self.bank))
        bank_x, bank_y = extract_features(model, self.bank, self.device, gather=False, progress=False)
        val_x, val_y = extract_features(model, self.val, self.device, gather=False, progress=False)
        scores = knn_scores(bank_x, bank_y, val_x, self.k, self.num_classes)
        return topk_accuracy(scores, val_y, ks=(1,))["top1"]


CURVES = {"knn/": "kNN top-1 (%)", "linear_probe/": "online linear probe top-1 (%)"}  # metric prefix -> axis


def plot_monitor_curves(metrics_path: str, png_path: str) -> bool:
    """Every DN's kNN top-1 vs step and, beside it, its online linear probe's top-1 over each epoch, read
    from metrics.jsonl (the last record of a step wins, so a resumed run's repeated steps are drawn once).
    Returns False when there is nothing to draw yet."""
    curves: dict[str, dict[str, dict[int, float]]] = {prefix: {} for prefix in CURVES}
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            for line in f:
                record = json.loads(line)
                for key, value in record.items():
                    for prefix, found in curves.items():
                        if key.startswith(prefix):
                            found.setdefault(key[len(prefix):], {})[record["step"]] = value
    panels = [(prefix, found) for prefix, found in curves.items() if found]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (prefix, found) in zip(axes[0], panels):
        for dn, points in found.items():
            steps = sorted(points)
            ax.plot(steps, [points[s] for s in steps], marker="o", label=dn)
        ax.set(xlabel="step", ylabel=CURVES[prefix], title=f"{CURVES[prefix].split(' top-1')[0]} per DN")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = f"{png_path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
    return True
