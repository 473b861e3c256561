"""Labelled subsets for semi-supervised evaluation: list files or a seeded class-balanced draw."""
from __future__ import annotations

import os
import random
from collections import defaultdict

from iopath.common.file_io import g_pathmgr

from dspnet_d2.errors import InvalidInputError, MissingFileError


def read_list_file(path: str, samples: list[tuple[str, int]]) -> list[int]:
    """Indices of ``samples`` named in ``path`` (one file name per line, as the ImageNet 1%/10% lists).

    A name is matched by its base name; names with no image raise, listing a few of them.
    """
    if not g_pathmgr.isfile(path):
        raise MissingFileError(f"subset list {path} does not exist")
    with g_pathmgr.open(path, "r") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise InvalidInputError(f"subset list {path} is empty")
    by_name = {os.path.basename(p): i for i, (p, _) in enumerate(samples)}
    missing = [n for n in names if os.path.basename(n) not in by_name]
    if missing:
        raise MissingFileError(f"subset list {path} names {len(missing)} image(s) not in the training set, "
                               f"e.g. {missing[:5]}")
    return sorted({by_name[os.path.basename(n)] for n in names})


def draw_balanced(samples: list[tuple[str, int]], percent: float, seed: int) -> list[int]:
    """``percent`` % of every class (at least one image each), drawn with ``seed``."""
    per_class = defaultdict(list)
    for index, (_, label) in enumerate(samples):
        per_class[label].append(index)
    rng = random.Random(seed)
    picked = []
    for label in sorted(per_class):
        indices = per_class[label]
        count = max(1, round(len(indices) * percent / 100))
        picked += rng.sample(indices, count)
    return sorted(picked)


def write_list_file(path: str, samples: list[tuple[str, int]], indices: list[int]) -> None:
    with open(path, "w") as f:
        f.writelines(os.path.basename(samples[i][0]) + "\n" for i in indices)
