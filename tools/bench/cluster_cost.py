#!/usr/bin/env python
"""What running on a cluster costs the MobileNetV3 recipe (configs/pretrain/dspnet_mbv3_imagenet.yaml: 5 DNs,
projector 4096/256, LARS): the online linear probe's cost per step as a ratio, and the size and atomic write
time of the checkpoint a preemption writes (with and without the probe's state).

    python tools/bench/cluster_cost.py [--batch 16] [--resolution 224] [--steps 5] [--classes 1000]
                                       [--device cpu|cuda] [--dir FOLDER]

The probe ratio is the median step with the probe / without it, the two trainers' steps interleaved
round-robin in one process (as step_cost.py), with ``--classes`` classes (ImageNet's 1000 by default;
the heads' size depends on it). As that ratio is within the machine's noise, the probe's own work of a step
(its forward and backward for the 4 sampled DNs on both views' features, then its SGD step) is also timed
alone, median of 50, and given as a fraction of the step without it. The checkpoint is ``Trainer.state_dict()`` after a step (LARS momentum
filled), written with ``save_atomic`` (temporary file in the same folder, then rename) into ``--dir``
(put it on the file system the runs write to); its write time is the median of 3 writes.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from step_cost import _cuda, _interleaved, build_trainer  # a sibling: run as a script, its folder is on the path


class WithProbe:
    """A trainer whose steps feed its probe (``train_step`` with labels), for ``_interleaved``."""

    def __init__(self, trainer, labels):
        self.trainer, self.labels = trainer, labels

    def train_step(self, view1, view2):
        return self.trainer.train_step(view1, view2, self.labels)


def attach_probe(trainer, classes: int):
    from pretrain.monitor.probe import LinearProbes

    encoder = trainer.method.online.encoder
    dims = {str(dn): encoder.channels(dn)["pooled"] for dn in trainer.method.dns}
    trainer.probes = LinearProbes(dims, classes, lr=0.1).to(trainer.device)


def probe_work_seconds(trainer, batch: int, classes: int, reps: int = 50) -> float:
    """Median seconds of one step's probe work alone: 4 sampled DNs (the sandwich), both views."""
    import torch

    probes, device = trainer.probes, trainer.device
    encoder = trainer.method.online.encoder
    dns = trainer.method.sample(trainer.step, 0, full_only=False)
    features = {dn: torch.randn(2 * batch, encoder.channels(dn)["pooled"], device=device) for dn in dns}
    labels = torch.randint(0, classes, (2 * batch,), device=device)
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        for dn in dns:
            probes.observe(dn, features[dn], labels)
        probes.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def checkpoint_cost(trainer, folder: str) -> tuple[float, float]:
    """(size in MB, median seconds of 3 atomic writes) of the trainer's checkpoint."""
    from dspnet_d2.weights import save_atomic

    path = os.path.join(folder, "checkpoint_bench.pth")
    times = []
    for _ in range(3):
        start = time.perf_counter()
        save_atomic(trainer.state_dict(), path)
        times.append(time.perf_counter() - start)
    size = os.path.getsize(path) / 2 ** 20
    os.remove(path)
    return size, statistics.median(times)


def main(argv=None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--classes", type=int, default=1000, help="classes the probe's heads predict")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--dir", default=None, help="where the checkpoint is written (default: a temporary folder)")
    args = parser.parse_args(argv)
    args.channels_last, args.amp, args.compile = True, args.device == "cuda", False  # the recipe's settings
    print(f"device={args.device} batch={args.batch} resolution={args.resolution} steps={args.steps} "
          f"classes={args.classes}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        plain = build_trainer("mbv3_s5", 4, args, os.path.join(out, "plain"))
        probed = build_trainer("mbv3_s5", 4, args, os.path.join(out, "probed"))
        attach_probe(probed, args.classes)
        labels = torch.randint(0, args.classes, (args.batch,), device=args.device)
        times = _interleaved({"without": plain, "with": WithProbe(probed, labels)}, args)
        print(f"step with the linear probe / without: {times['with'] / times['without']:.3f} "
              f"({times['with']:.3f} s vs {times['without']:.3f} s, median of {args.steps})", flush=True)
        alone = probe_work_seconds(probed, args.batch, args.classes)
        print(f"the probe's own work per step: {alone * 1e3:.2f} ms = {alone / times['without']:.4f} of a step "
              f"without it", flush=True)
        folder = args.dir or out
        os.makedirs(folder, exist_ok=True)
        for name, trainer in (("without the probe", plain), ("with the probe", probed)):
            size, seconds = checkpoint_cost(trainer, folder)
            print(f"checkpoint {name}: {size:.1f} MB, atomic write {seconds:.2f} s (median of 3) in {folder}",
                  flush=True)


if __name__ == "__main__":
    main()
