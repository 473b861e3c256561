"""Process-group setup and rank helpers shared by pretraining and evaluation (torchrun, or one process)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from dspnet_d2.errors import InvalidInputError

__all__ = ["setup_distributed", "world_size", "is_main_process", "shutdown"]


def setup_distributed(device_pref: str) -> tuple[int, int, torch.device]:
    """Rank, world size and device; initialises the process group under torchrun."""
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
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return rank, world_size, device


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()
