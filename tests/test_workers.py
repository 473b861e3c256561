"""Loader workers that outlive a stop signal under every start method (dspnet_d2.runtime.workers): born with the signals
blocked in every thread, ended by their loader's own SIGTERM, not by anyone else's while the loader lives, ended
by anyone's once orphaned, and starting programs with the default mask."""
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from pretrain_utils import running
from worker_datasets import WorkerFacts

from dspnet_d2.runtime.workers import SHIELDED_SIGNALS, ShieldedLoader

METHODS = ("fork", "forkserver", "spawn")
STOP_MASK = sum(1 << (sig - 1) for sig in SHIELDED_SIGNALS)


def _loader(dataset, method, workers=1):
    return ShieldedLoader(dataset, batch_size=None, num_workers=workers, persistent_workers=True,
                          multiprocessing_context=multiprocessing.get_context(method))


def _kill_from_another_process(pid, sig="TERM"):
    """A signal whose sender is not the loader's process (as Slurm's or torchrun's)."""
    subprocess.run(["kill", f"-{sig}", str(pid)], check=True)


@pytest.fixture(scope="module", params=METHODS)
def worker(request):
    """A loader's one worker, started by each method, and the facts of its first item, taken before anything
    is sent to it: the two tests below share the worker (a start under spawn or forkserver takes seconds)."""
    loader = _loader(WorkerFacts(), request.param)
    iterator = iter(loader)
    yield iterator, next(iterator)
    del iterator, loader


def test_workers_are_born_shielded_in_every_thread_and_start_programs_unshielded(worker):
    _, facts = worker
    shield = [name for name in facts["threads"] if name.startswith("stop-shield/")]
    assert len(shield) == 1  # the one thread that takes them (its mask shows them open while it waits)
    others = [mask for name, mask in facts["threads"].items() if name not in shield]
    assert others and all(mask & STOP_MASK == STOP_MASK for mask in others)
    assert facts["child_mask"] & STOP_MASK == 0


def test_a_worker_outlives_anyone_elses_signals_and_ends_on_its_loaders_sigterm(worker):
    iterator, facts = worker
    pid = facts["pid"]
    for sig in ("TERM", "INT", "HUP", "USR1"):
        _kill_from_another_process(pid, sig)
    time.sleep(0.5)
    assert running(pid) and next(iterator)["pid"] == pid  # still serving
    os.kill(pid, signal.SIGTERM)  # the loader's own process: its shutdown
    deadline = time.time() + 10
    while running(pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not running(pid)


ORPHAN = """
import multiprocessing, sys
sys.path.insert(0, sys.argv[2])
from worker_datasets import Slow
from dspnet_d2.runtime.workers import ShieldedLoader
loader = ShieldedLoader(Slow(60, sys.argv[3]), batch_size=None, num_workers=1,
                        multiprocessing_context=multiprocessing.get_context(sys.argv[1]))
next(iter(loader))
"""


@pytest.mark.parametrize("method", METHODS)
def test_an_orphaned_worker_ends_on_anyones_sigterm(method, tmp_path):
    """A rank killed with SIGKILL (OOM) leaves its busy worker: the next SIGTERM, from anyone, ends it."""
    tests = os.path.dirname(os.path.abspath(__file__))
    rank = subprocess.Popen([sys.executable, "-c", ORPHAN, method, tests, str(tmp_path)])
    deadline = time.time() + 120
    while not os.listdir(tmp_path) and time.time() < deadline:  # the worker busy with its first item
        time.sleep(0.05)
    worker = int(os.listdir(tmp_path)[0])
    rank.kill()
    rank.wait()
    assert running(worker)
    _kill_from_another_process(worker)
    deadline = time.time() + 10  # well before its 60 s item ends
    while running(worker) and time.time() < deadline:
        time.sleep(0.05)
    assert not running(worker)
