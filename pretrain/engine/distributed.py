"""Process-group setup and rank helpers shared by pretraining and evaluation (torchrun, or one process)."""
from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist

from dspnet_d2.errors import InvalidInputError
from dspnet_d2.runtime.rendezvous import init_process_group, is_main_process, world_size

__all__ = ["setup_distributed", "world_size", "is_main_process", "shutdown", "CollectiveError", "collective_errors"]

# what a failed or timed-out collective says (gloo, NCCL, the c10d store); other errors are not renamed
_COLLECTIVE_MARKERS = ("Timed out", "timed out", "Timeout", "Connection closed by peer", "Connection reset by peer",
                       "NCCL", "gloo", "Gloo", "ProcessGroup", "c10d")


class CollectiveError(RuntimeError):
    """A collective failed or timed out: another rank is dead or stuck (or this one lost the network)."""


def setup_distributed(device_pref: str, timeout_minutes: float | None = None) -> tuple[int, int, torch.device]:
    """Rank, world size and device; initialises the process group under torchrun.

    ``timeout_minutes`` bounds every collective (None: torch's default). On NCCL, asynchronous error
    handling is turned on (unless the environment chose otherwise), so a timed-out collective ends the
    process instead of leaving it waiting.
    """
    use_cuda = torch.cuda.is_available() if device_pref == "auto" else device_pref == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise InvalidInputError("DEVICE is cuda but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        if use_cuda:
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        timeout = None if timeout_minutes is None else datetime.timedelta(minutes=timeout_minutes)
        init_process_group("nccl" if use_cuda else "gloo", rank, world_size, timeout)
    return rank, world_size, device


@contextlib.contextmanager
def collective_errors(rank: int, world: int, where, timeout_minutes: float | None):
    """Rename a failed collective inside the block to a ``CollectiveError`` naming this rank and
    ``where()`` (e.g. the step), so a dead or stuck rank ends the others with one clear line."""
    try:
        yield
    except RuntimeError as err:
        text = str(err)
        if world == 1 or isinstance(err, CollectiveError) or not (
                isinstance(err, dist.DistError) or any(m in text for m in _COLLECTIVE_MARKERS)):
            raise
        limit = f"{timeout_minutes:g} minutes" if timeout_minutes is not None else "torch's default timeout"
        first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
        raise CollectiveError(f"rank {rank} of {world}: a collective failed at {where()} (timeout {limit}): another "
                              f"rank is dead or stuck, or the network failed ({first[:300]})") from err


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
