"""The online linear probe of a pretraining run: one linear classifier per DN, trained as the run goes."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["LinearProbes"]


class LinearProbes(nn.Module):
    """solo-learn's and lightly's online classifier, one per DN: batch-statistics BN (no affine, no running
    statistics, as the linear protocol's BN head) and a linear layer on the *detached* pooled features a
    training step has already computed for its sampled DNs, trained on the images' class labels with an SGD
    of its own. Its top-1 is counted on each batch before the update and reported per epoch.

    It cannot change the pretraining: no gradient reaches the network, its initialisation draws from a
    generator of its own and its forward draws nothing, so the training RNG streams stay untouched.
    Under DDP its gradients are averaged and its counts summed over ranks (one all-reduce a step), so every
    rank holds the same probe and counts, and rank 0's checkpoint resumes all of them.
    """

    def __init__(self, feature_dims: dict[str, int], num_classes: int, lr: float, momentum: float = 0.9,
                 seed: int = 0):
        super().__init__()
        self.dns = list(feature_dims)
        self.index = {dn: i for i, dn in enumerate(self.dns)}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.heads = nn.ModuleList(
                nn.Sequential(nn.BatchNorm1d(dim, affine=False, track_running_stats=False), nn.Linear(dim, num_classes))
                for dim in feature_dims.values())
        # per DN: correct predictions and images seen in the current epoch, over all ranks (checkpointed: a
        # resume mid-epoch reports the same epoch top-1); ``step`` adds this step's, counted in ``pending``
        self.register_buffer("counts", torch.zeros(len(self.dns), 2, dtype=torch.float64))
        self.register_buffer("pending", torch.zeros(len(self.dns), 2), persistent=False)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=lr, momentum=momentum)

    def observe(self, dn, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Forward and backward of ``dn``'s head on its features (once a step per drawn DN: one SGD step each)."""
        i = self.index[str(dn)]
        with torch.enable_grad():
            logits = self.heads[i](features.detach().float())
            F.cross_entropy(logits, labels).backward()
        with torch.no_grad():
            self.pending[i, 0] += (logits.argmax(1) == labels).sum()
            self.pending[i, 1] += labels.numel()

    def step(self, world_size: int = 1) -> None:
        """The probe's optimizer step on the gradients of this step's observations, and their counts."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if world_size > 1:  # every rank drew the same DNs, so the lists match
            flat = torch.cat([g.flatten() for g in grads] + [self.pending.flatten()])
            dist.all_reduce(flat)
            *grads_sum, pending = flat.split([g.numel() for g in grads] + [self.pending.numel()])
            for grad, chunk in zip(grads, grads_sum):
                grad.copy_(chunk.view_as(grad) / world_size)
            self.pending.copy_(pending.view_as(self.pending))
        self.counts += self.pending
        self.pending.zero_()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def epoch_top1(self) -> dict[str, float]:
        """``{"linear_probe/<dn>": top-1 %}`` over the epoch's batches (all ranks'); starts the next epoch."""
        counts = self.counts.tolist()
        self.counts.zero_()
        return {f"linear_probe/{dn}": 100.0 * correct / seen for dn, (correct, seen) in zip(self.dns, counts) if seen}

    def checkpoint_state(self) -> dict:
        return {"heads": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_checkpoint_state(self, state: dict) -> None:
        self.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
