"""The process group's store under torchrun, safe across restarts whatever the environment.

By default torchrun's agents share their TCP store with the ranks (``TORCHELASTIC_USE_AGENT_STORE=True``): one
store for the whole job, kept across rendezvous rounds, and ``init_process_group("env://")`` uses it without a
prefix per round (only ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` gives each round a store of its own). After a rank
is killed and the agents restart their ranks, a new rank can then read the addresses its dead predecessor
published there and fail to connect. Nor can the ranks use ``TORCHELASTIC_RESTART_COUNT`` as a round number: it
counts the failures of each agent's own ranks, so two agents disagree on it after one of them restarted.

So the ranks of a round first agree on a name of their own in that store, and the process group keeps its keys
under it: rank 0 draws a fresh token and publishes it with the fresh nonce each rank has written; a rank takes
the token only once it sees its own nonce beside it, which no earlier round's publication can hold.
"""
from __future__ import annotations

import datetime
import json
import os
import time
import uuid

import torch.distributed as dist

__all__ = ["init_process_group", "uses_agent_store", "round_store", "world_size", "is_main_process"]

# how long the ranks of a round wait for each other in the store when the process group sets no timeout
STORE_TIMEOUT = datetime.timedelta(minutes=30)


def init_process_group(backend: str, rank: int, world_size: int, timeout: datetime.timedelta | None = None) -> None:
    """``torch.distributed.init_process_group`` from a launcher's environment (``env://``: torchrun,
    ``tools/submit.py``'s tasks); under torchrun's shared store, with this round's keys only."""
    if uses_agent_store():
        store = round_store(rank, world_size, timeout or STORE_TIMEOUT)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timeout)
    else:
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size, timeout=timeout)


def uses_agent_store() -> bool:
    """Whether torchrun started this process with its agents' shared store (torch's default)."""
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and "MASTER_ADDR" in os.environ


def round_store(rank: int, world_size: int, timeout: datetime.timedelta, poll_s: float = 0.05) -> dist.Store:
    """The agents' store, under a prefix that the ranks of this round agreed on (module docstring)."""
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, is_master=False,
                          timeout=timeout)
    space = f"dspnet/{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}"
    nonce = uuid.uuid4().hex
    store.set(f"{space}/nonce/{rank}", nonce)
    deadline = time.monotonic() + timeout.total_seconds()
    token = _lead(store, space, world_size, nonce, deadline, poll_s) if rank == 0 else \
        _follow(store, space, rank, nonce, deadline, poll_s)
    return dist.PrefixStore(f"{space}/round/{token}", store)


def _lead(store, space: str, world_size: int, nonce: str, deadline: float, poll_s: float) -> str:
    """Rank 0: publish a fresh token with the ranks' nonces until every rank acknowledged it."""
    token = uuid.uuid4().hex
    acks = [f"{space}/ack/{token}/{r}" for r in range(1, world_size)]
    while True:
        nonces = [nonce] + [_get(store, f"{space}/nonce/{r}") for r in range(1, world_size)]
        store.set(f"{space}/current", json.dumps({"token": token, "nonces": nonces}))
        if not acks or store.check(acks):
            return token
        _wait(deadline, poll_s, "every rank to join this round")


def _follow(store, space: str, rank: int, nonce: str, deadline: float, poll_s: float) -> str:
    """Another rank: wait for a publication that holds this rank's nonce, acknowledge its token."""
    while True:
        published = _get(store, f"{space}/current")
        if published:
            current = json.loads(published)
            if current["nonces"][rank] == nonce:
                store.set(f"{space}/ack/{current['token']}/{rank}", "1")
                return current["token"]
        _wait(deadline, poll_s, "rank 0 of this round")


def _get(store, key: str) -> str:
    return store.get(key).decode() if store.check([key]) else ""


def _wait(deadline: float, poll_s: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise RuntimeError(f"c10d: timed out waiting for {what} in torchrun's store")
    time.sleep(poll_s)


def world_size() -> int:
    """The process group's size, 1 outside one."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0
