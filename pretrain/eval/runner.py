"""Evaluate every DN of one or more checkpoints with one protocol; write tables and plots."""
from __future__ import annotations

import json
import logging
import os
import statistics

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from dspnet_d2.complexity import dn_complexity
from dspnet_d2.errors import InvalidInputError
from dspnet_d2.families import build_static_dn
from dspnet_d2.images import ImageFolderIO, LabelledImages, SeededLabelledImages, class_selection, eval_transform
from dspnet_d2.recalibration import recalibrate_on_images
from dspnet_d2.runtime.stopping import DEFAULT_STOP_SIGNALS, StopProtocol
from dspnet_d2.runtime.workers import ShieldedLoader
from dspnet_d2.weights import read_weights

from ..data.sampler import ResumableSampler
from ..engine.distributed import setup_distributed
from ..monitor.features import extract_features, make_loader, topk_accuracy
from ..monitor.knn import knn_scores
from .classifier import Classifier, train_classifier
from .data import train_transform
from .report import write_report
from .subsets import draw_balanced, read_list_file, write_list_file
from .weights import read_initial_weights

logger = logging.getLogger("pretrain.eval")


def _series_name(weights, is_baseline: bool) -> str:
    return "BYOL" if is_baseline or len(weights.dns) == 1 else "DSPNet"


class Evaluation:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rank, self.world, self.device = setup_distributed(cfg.DEVICE)
        self.main = self.rank == 0
        # every input is checked here, before any training starts
        self.jobs = []
        sources = ([(cfg.PRETRAINED, False)] if cfg.PRETRAINED else []) + [(p, True) for p in cfg.BASELINES]
        for path, is_baseline in sources:
            weights = read_weights(path)
            dns = weights.select(cfg.DNS) if not is_baseline else weights.dns
            self.jobs += [(_series_name(weights, is_baseline), weights, dn) for dn in dns]
        references = []
        if cfg.INITIAL_WEIGHTS:
            if not cfg.PRETRAINED:
                raise InvalidInputError("INITIAL_WEIGHTS True needs PRETRAINED (the run whose step-0 weights to rebuild)")
            pretrained = self.jobs[0][1]  # PRETRAINED's jobs come first
            start = read_initial_weights(pretrained)
            references += [("initial weights", start, dn) for _, weights, dn in self.jobs if weights is pretrained]
        if cfg.RANDOM_INIT:
            references += [("random init", None, dn) for series, _, dn in self.jobs if series != "BYOL"]
        self.jobs += references
        families = {dn.family for _, _, dn in self.jobs}
        if len(families) != 1:
            raise InvalidInputError(f"all evaluated DNs must be of one family, got {sorted(families)}")
        # each family's evaluation resolution, not its pretraining one (ResNet DNs pretrain at 128 px)
        self.resolution = cfg.DATA.RESOLUTION or self.jobs[0][2].info.eval_resolution
        self.recalibration = None  # the last BN recalibration's seed, image count and resolution
        classes = class_selection(cfg.DATA.CLASS_COUNT, cfg.DATA.CLASS_LIST)
        self.train_images = ImageFolderIO(os.path.join(cfg.DATA.ROOT, cfg.DATA.TRAIN_SPLIT), classes)
        self.val_images = ImageFolderIO(os.path.join(cfg.DATA.ROOT, cfg.DATA.VAL_SPLIT), classes)
        if self.val_images.classes != self.train_images.classes:
            raise InvalidInputError("train and val splits have different class folders")
        self.subset = self._labelled_subset()

    def _labelled_subset(self) -> list[int] | None:
        cfg = self.cfg
        if cfg.SUBSET.LIST_FILE:
            return read_list_file(cfg.SUBSET.LIST_FILE, self.train_images.samples)
        if cfg.SUBSET.PERCENT:
            indices = draw_balanced(self.train_images.samples, cfg.SUBSET.PERCENT, cfg.SUBSET.SEED)
            if self.main:
                os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
                write_list_file(os.path.join(cfg.OUTPUT_DIR, f"subset_{cfg.SUBSET.PERCENT:g}percent.txt"),
                                self.train_images.samples, indices)
            return indices
        return None

    # -- per DN ------------------------------------------------------------------------------------
    def encoder(self, weights, dn, seed: int = 0) -> torch.nn.Module:
        if weights is None:
            torch.manual_seed(seed)
            return build_static_dn(dn)
        return weights.model(dn)[0].train()  # as built: the protocol sets the modes it needs

    def run(self) -> list[dict]:
        """Every job in turn. A stop signal ends the run after the classifier step it came in (with that step's
        checkpoint) or before the next DN, raising ``Preempted``; the same command resumes."""
        results = []
        with StopProtocol(self.cfg.OUTPUT_DIR, DEFAULT_STOP_SIGNALS, self.world, self.device, self.main) as self.stops:
            for number, (series, weights, dn) in enumerate(self.jobs):
                self.stops.check(number, save=lambda: None, where=f"{number} of {len(self.jobs)} evaluations")
                results.append(self.evaluate(series, weights, dn))
        if self.main:
            title = (f"{self.cfg.PROTOCOL} on {self.cfg.DATA.ROOT}, {self.resolution} px, BN recalibration "
                     f"{'on' if self.cfg.BN_RECALIBRATION.ENABLED else 'off'}")
            paths = write_report(results, self.cfg.OUTPUT_DIR, title)
            logger.info("wrote %s", ", ".join(paths.values()))
        return results

    def measure(self, model: torch.nn.Module, tag: str, folder: str) -> dict[str, float]:
        """Top-1/top-5 of one encoder under the configured protocol (``folder``: its resumable state)."""
        cfg = self.cfg
        os.makedirs(folder, exist_ok=True)
        model = model.to(self.device)
        norm = (cfg.DATA.MEAN, cfg.DATA.STD)
        center = eval_transform(self.resolution, cfg.DATA.RESIZE_RATIO, *norm)
        if cfg.BN_RECALIBRATION.ENABLED:
            # the same seeded sample on every rank, so every rank ends with the same statistics
            self.recalibration = recalibrate_on_images(
                model, self.train_images, self.resolution, cfg.TRAIN.BATCH_SIZE, cfg.BN_RECALIBRATION.BATCHES,
                cfg.BN_RECALIBRATION.SEED, self.device, cfg.DATA.NUM_WORKERS, cfg.DATA.RESIZE_RATIO, *norm)
        val_loader = make_loader(LabelledImages(self.val_images, center), cfg.TRAIN.BATCH_SIZE,
                                 cfg.DATA.NUM_WORKERS, shuffle=False)
        num_classes = len(self.train_images.classes)
        if cfg.PROTOCOL == "knn":
            bank = LabelledImages(self.train_images, center, self.subset)
            bank_x, bank_y = extract_features(model, make_loader(bank, cfg.TRAIN.BATCH_SIZE, cfg.DATA.NUM_WORKERS,
                                                                 False), self.device, f"{tag} bank")
            val_x, val_y = extract_features(model, val_loader, self.device, f"{tag} val")
            temperature = cfg.KNN.TEMPERATURE if cfg.KNN.WEIGHTING == "temperature" else None
            accuracy = topk_accuracy(knn_scores(bank_x, bank_y, val_x, cfg.KNN.K, num_classes, temperature), val_y)
        else:
            frozen = cfg.TRAIN.BACKBONE_LR == 0
            feature_dim = _feature_dim(model, self.device)
            torch.manual_seed(cfg.SEED)  # the head's initial weights: a rerun (or a resumed run) starts from the same
            classifier = Classifier(model, feature_dim, num_classes, cfg.TRAIN.HEAD_BN, frozen).to(self.device)
            augment = train_transform(self.resolution, *norm, cfg.DATA.CROP_SCALE)
            accuracy = train_classifier(classifier, self.train_loader(augment), val_loader, cfg, self.device,
                                        os.path.join(folder, "train_state.pth"), desc=tag, stops=self.stops)
        return accuracy

    def train_loader(self, augment) -> DataLoader:
        """The classifier's batches: shuffled per epoch, split across ranks, seeded per image and resumable at
        any step (``ResumableSampler``); the epoch's tail that fills no global batch is dropped, and a set smaller
        than one batch is one batch. Each process takes ``TRAIN.BATCH_SIZE // processes`` images a step (as the
        feature loaders do), so a batch that the processes do not divide is rounded down, and said."""
        train_set = SeededLabelledImages(self.train_images, augment, self.subset)
        batch = min(self.cfg.TRAIN.BATCH_SIZE, len(train_set)) // self.world * self.world
        if batch != min(self.cfg.TRAIN.BATCH_SIZE, len(train_set)) and self.main:
            logger.warning("TRAIN.BATCH_SIZE %d on %d processes: %d images a step (%d a process)",
                           self.cfg.TRAIN.BATCH_SIZE, self.world, batch, batch // self.world)
        sampler = ResumableSampler(len(train_set), batch, self.rank, self.world, self.cfg.SEED)
        workers = self.cfg.DATA.NUM_WORKERS
        return ShieldedLoader(train_set, batch_size=sampler.batch, sampler=sampler, num_workers=workers,
                              pin_memory=self.device.type == "cuda", persistent_workers=workers > 0)

    def evaluate(self, series: str, weights, dn) -> dict:
        cfg = self.cfg
        folder = os.path.join(cfg.OUTPUT_DIR, series.replace(" ", "_"), str(dn))
        result_path = os.path.join(folder, "result.json")
        if os.path.exists(result_path):  # finished earlier: resume skips it
            with open(result_path) as f:
                return json.load(f)
        tag = f"{series} {dn}"
        if weights is not None:
            accuracy = self.measure(self.encoder(weights, dn), tag, folder)  # measure creates folder
        else:
            seeds = [cfg.SEED + i for i in range(cfg.RANDOM_INIT_SEEDS)]
            accuracy = _mean_over_seeds(seeds, [
                self.measure(self.encoder(None, dn, seed), f"{tag} seed {seed}", os.path.join(folder, f"seed{seed}"))
                for seed in seeds])
        size = dn_complexity(dn, self.resolution)
        result = {"series": series, "dn": str(dn), "params": size["params"], "flops": size["flops"], **accuracy,
                  "protocol": cfg.PROTOCOL,
                  "resolution": self.resolution,
                  "bn_recalibrated": bool(cfg.BN_RECALIBRATION.ENABLED),
                  "bn_recalibration": self.recalibration,
                  "labelled_images": len(self.subset) if self.subset is not None else len(self.train_images),
                  "checkpoint": weights.path if weights is not None else None}
        if self.main:
            with open(result_path, "w") as f:
                json.dump(result, f, indent=2)
            logger.info("%s: top-1 %.2f top-5 %.2f", tag, result["top1"], result["top5"])
        if self.world > 1:
            dist.barrier()
        return result


def _mean_over_seeds(seeds: list[int], runs: list[dict[str, float]]) -> dict:
    """Mean of each accuracy over the random inits, with its (population) std and every seed's value."""
    summary = {"seeds": seeds}
    for key in runs[0]:
        values = [run[key] for run in runs]
        summary.update({key: statistics.fmean(values), f"{key}_std": statistics.pstdev(values),
                        f"{key}_per_seed": values})
    return summary


@torch.no_grad()
def _feature_dim(model: torch.nn.Module, device: torch.device) -> int:
    was_training = model.training
    model.eval()
    dim = model(torch.zeros(1, 3, 32, 32, device=device)).shape[1]
    model.train(was_training)
    return dim
