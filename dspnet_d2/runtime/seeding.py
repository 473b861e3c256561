"""Seeds and generator states, one rule for every trainer: a user's seed may be any integer, the seeds derived from
it (per rank, epoch, image, retry) cannot overflow or collide by construction, and a checkpoint holds every
generator a step draws from."""
from __future__ import annotations

import contextlib
import hashlib
import random

import numpy as np
import torch

__all__ = ["derive_seed", "rng_state", "set_rng_state", "seeded"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed (what ``torch.Generator.manual_seed`` takes) from integers of any size: a user's seed and
    where it is used, e.g. ``derive_seed(seed, epoch, index)``.

    A hash (BLAKE2b) of the parts, not arithmetic on them: ``seed * K + position`` leaves 64 bits for large seeds,
    and ``seed + attempt`` gives two places the same seed. About a microsecond a call."""
    text = ",".join(str(int(p)) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8, person=b"dspnet-seed").digest(), "little") >> 1


def rng_state() -> dict:
    """Every generator a training step may draw from: Python's, NumPy's, torch's CPU one and each GPU's."""
    state = {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore ``rng_state()``'s generators (a checkpoint written before NumPy's was kept leaves it as it is)."""
    random.setstate(_as_python_state(state["python"]))
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), int(state["numpy"]["pos"]),
                             int(state["numpy"]["has_gauss"]), float(state["numpy"]["cached_gaussian"])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> dict:
    """NumPy's global state as tensors and plain numbers (``torch.load(weights_only=True)`` reads them)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def _as_python_state(state):
    """``random.getstate()`` after a save and load may come back with lists for tuples."""
    version, internal, gauss = state
    return version, tuple(internal), gauss


@contextlib.contextmanager
def seeded(seed: int):
    """Python's, NumPy's and torch's CPU generator seeded from ``seed`` (any integer) inside the block, and
    restored after it. The GPUs' generators are left alone: a per-image seed must not move them."""
    python, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(derive_seed(seed, 0) % 2 ** 32)
        torch.default_generator.manual_seed(derive_seed(seed, 1))
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy_state)
