"""Slimmable layers: each holds the largest weight and runs on its leading slice.

The input width follows the input tensor; the output width is ``active_out`` and is set from outside
by the supernet's ``set_active`` (never decided inside ``forward``). The classes subclass the plain
torch layers so their state_dict keys and shapes are those of the largest network.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["make_divisible", "SlimConv2d", "SlimBatchNorm1d", "SlimBatchNorm2d", "SlimLinear", "configure_norms",
           "commit_momentum_stats"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's ``_make_divisible``: the rounding of every MobileNet channel count."""
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:  # never round down by more than 10%
        new_value += divisor
    return new_value


def leading(t: torch.Tensor, *sizes: int) -> torch.Tensor:
    """``t[:sizes[0], :sizes[1], ...]``, or ``t`` itself when nothing is cut: a slice's backward allocates a
    zero gradient of the whole tensor and copies into it, which the full network need not pay."""
    if all(size == dim for size, dim in zip(sizes, t.shape)):
        return t
    return t[tuple(slice(0, size) for size in sizes)]


class SlimConv2d(nn.Conv2d):
    """Conv2d (dense or depthwise) on the leading ``[:active_out, :in]`` slice of its weight."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = False):
        if groups not in (1, in_channels) or (groups > 1 and in_channels != out_channels):
            raise ValueError("SlimConv2d supports dense (groups=1) and depthwise convolutions only")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.depthwise = groups > 1
        self.active_out = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_channels = x.shape[1]
        if self.depthwise:
            out_channels, groups = in_channels, in_channels
            weight = leading(self.weight, out_channels)
        else:
            out_channels, groups = self.active_out, 1
            weight = leading(self.weight, out_channels, in_channels)
        bias = leading(self.bias, out_channels) if self.bias is not None else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class _SlimNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose statistics and affine parameters are shared leading slices.

    Running statistics are updated in place on the active slice; a DN's statistics are only exact
    after ``recalibrate_bn`` (US-Nets / OFA practice), since every sub-network writes to them.

    Two training-time options, off by default:
    - ``sync``: batch statistics over all DDP ranks. torch's SyncBatchNorm is GPU-only and cannot
      slice; this all-reduce version runs on CPU (gloo) and GPU alike.
    - ``stat_weight`` = a: momentum BN as Momentum^2 Teacher (Li et al. 2021) defines it in its public
      code (``MomentumBatchNorm2d``): each forward normalises with the detached mix
      ``a * batch + (1 - a) * running`` (mean, and unbiased variance), and leaves the running
      statistics alone; ``commit_momentum_stats`` then updates them once per step with
      ``a * (mean of the forwards' batch statistics) + (1 - a) * running``. The source pairs the two
      views inside the layer and applies Bessel's correction twice (``torch.var`` is unbiased already),
      a factor n/(n-1) that is 1 up to 1e-5 at ImageNet sizes; here the pairing is explicit and the
      correction is applied once.
    """

    sync: bool = False
    stat_weight: float | None = None
    _pending: list | None = None  # momentum BN: (mean, unbiased var) of each forward since the last commit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        weight, bias = leading(self.weight, channels), leading(self.bias, channels)
        running_mean, running_var = self.running_mean[:channels], self.running_var[:channels]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as torch's BatchNorm
                factor = 1.0 / float(self.num_batches_tracked)
        synced = self._synced()
        if not self.training or (not synced and self.stat_weight is None):
            return F.batch_norm(x, running_mean, running_var, weight, bias, self.training, factor, self.eps)
        if self.stat_weight is not None:
            return self._momentum_forward(x, weight, bias, running_mean, running_var, synced)
        mean, var, count = _batch_stats(x, synced)
        with torch.no_grad():
            unbiased = var * (count / max(count - 1, 1))
            running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        shape = (1, channels) + (1,) * (x.dim() - 2)
        scale = (weight * torch.rsqrt(var + self.eps)).view(shape)
        return (x - mean.view(shape)) * scale + bias.view(shape)

    def _momentum_forward(self, x, weight, bias, running_mean, running_var, synced: bool) -> torch.Tensor:
        """Momentum BN: normalise with the detached mix of batch and running statistics, keep the batch ones
        for ``commit_momentum_stats``."""
        with torch.no_grad():
            if synced:
                mean, var, count = _batch_stats(x, True)
                unbiased = var * (count / max(count - 1, 1))
            else:
                mean, unbiased = _local_batch_stats(x, self.eps)
            self._pending = (self._pending or []) + [(mean, unbiased)]
            a = float(self.stat_weight)
            mean = a * mean + (1 - a) * running_mean
            var = a * unbiased + (1 - a) * running_var
        # the statistics are constants for autograd: batch_norm's inference kernel normalises in one pass
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)

    @torch.no_grad()
    def commit_momentum_stats(self) -> None:
        """Momentum BN: fold the batch statistics of this step's forwards into the running ones, once."""
        if not self._pending:
            return
        a = float(self.stat_weight)
        channels = self._pending[0][0].shape[0]
        mean = torch.stack([m for m, _ in self._pending]).mean(0)
        var = torch.stack([v for _, v in self._pending]).mean(0)
        self.running_mean[:channels].mul_(1 - a).add_(mean, alpha=a)
        self.running_var[:channels].mul_(1 - a).add_(var, alpha=a)
        self._pending = None

    def _synced(self) -> bool:
        return self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _local_batch_stats(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel batch mean and unbiased variance (float32, not differentiable) from batch_norm's own
    kernel, which writes them into fresh buffers at momentum 1: one fused pass in any memory format, 2-3x
    faster on CPU than mean and variance reductions (its normalised output is discarded)."""
    mean = torch.zeros(x.shape[1], device=x.device, dtype=torch.float32)
    var = torch.ones(x.shape[1], device=x.device, dtype=torch.float32)
    F.batch_norm(x, mean, var, None, None, True, 1.0, eps)
    return mean, var


def _batch_stats(x: torch.Tensor, synced: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and biased variance of ``x`` (over all ranks if ``synced``), and the count.

    Each rank computes its mean and sum of squared deviations (two-pass, no cancellation); ranks are
    merged with Chan's parallel formula, as torch's SyncBatchNorm does, through a differentiable
    all-gather.
    """
    dims = [0] + list(range(2, x.dim()))
    count = x.numel() // x.shape[1]
    mean = x.mean(dims)
    m2 = ((x - mean.view((1, -1) + (1,) * (x.dim() - 2))) ** 2).sum(dims)
    if not synced:
        return mean, m2 / count, count
    with warnings.catch_warnings():  # its replacement is not differentiable yet
        warnings.simplefilter("ignore", FutureWarning)
        from torch.distributed.nn.functional import all_gather  # differentiable all-gather

        gathered = all_gather(torch.stack([mean, m2]))
    means, m2s = torch.stack(gathered).unbind(1)  # (world, C) each; every rank has the same count
    world = len(gathered)
    total = count * world
    global_mean = means.mean(0)
    global_m2 = m2s.sum(0) + count * ((means - global_mean) ** 2).sum(0)
    return global_mean, global_m2 / total, total


class SlimBatchNorm2d(_SlimNorm, nn.BatchNorm2d):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)


class SlimBatchNorm1d(_SlimNorm, nn.BatchNorm1d):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)


def commit_momentum_stats(module: nn.Module) -> None:
    """End of a momentum-BN step: every slim norm under ``module`` updates its running statistics once."""
    for m in module.modules():
        if isinstance(m, _SlimNorm):
            m.commit_momentum_stats()


def configure_norms(module: nn.Module, sync: bool | None = None, stat_weight: float | None = ...) -> None:
    """Set the ``sync`` / ``stat_weight`` options of every slim norm layer under ``module``."""
    for m in module.modules():
        if isinstance(m, _SlimNorm):
            if sync is not None:
                m.sync = sync
            if stat_weight is not ...:
                m.stat_weight = stat_weight


class SlimLinear(nn.Linear):
    """Linear on the leading ``[:active_out, :in]`` slice (the projector's slimmable input)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.active_out = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = leading(self.bias, self.active_out) if self.bias is not None else None
        return F.linear(x, leading(self.weight, self.active_out, x.shape[-1]), bias)
