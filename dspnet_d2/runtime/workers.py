"""Data-loader workers that outlive a scheduler's stop signal under any start method (``fork``, ``forkserver``,
``spawn``) until their process has written its checkpoint.

Slurm signals every process of a job step and torchrun each rank's process group, loader workers included.
PyTorch's workers die on a SIGTERM that does not come from their parent, and the loader then fails the step with
"DataLoader worker ... is killed by signal". ``ShieldedLoader`` (every loader of this package) prevents that:

- the stop signals are blocked in the thread that starts the workers, so a worker (and a fork server started then)
  is born with them blocked, in every thread it will ever start: a fresh ``spawn`` interpreter starts threads
  (OpenBLAS starts one per core at ``import numpy``) before any worker code runs;
- in the worker, a thread takes them with ``sigwaitinfo``, which tells who sent each one: the SIGTERM of the
  loader's own process (its shutdown, multiprocessing's exit) ends the worker at once, as PyTorch's handler does;
  any other is dropped while the loader's process lives, and ends the worker once it is gone (an orphan);
- a thread that has them unblocked anyway (one a library started with its own mask) runs a handler that does the
  same, so no thread can die of them;
- a program the worker starts (``subprocess``, ``os.fork``, ``os.posix_spawn``) starts with the default mask and
  handlers.

A worker still ends with its loader's process: PyTorch's workers watch it.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import subprocess
import threading
from multiprocessing import resource_tracker

import _posixsubprocess
from torch.utils.data import DataLoader

__all__ = ["SHIELDED_SIGNALS", "ShieldedLoader", "ShieldedWorkerInit", "shield_worker", "blocked_stop_signals"]

# what a scheduler or launcher stops a job with: torchrun relays TERM, INT, HUP and QUIT; Slurm's --signal
# may choose USR1 or USR2
SHIELDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class blocked_stop_signals:
    """While active, the calling thread has ``SHIELDED_SIGNALS`` blocked: a process started meanwhile inherits the
    mask from birth. A signal that comes meanwhile waits and is delivered on exit."""

    def __enter__(self):
        self._previous = signal.pthread_sigmask(signal.SIG_BLOCK, SHIELDED_SIGNALS)
        return self

    def __exit__(self, *exc) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self._previous)


class ShieldedWorkerInit:
    """A loader's ``worker_init_fn`` that runs ``shield_worker``, then ``then(worker_id)`` if given (a picklable
    object, for any start method)."""

    def __init__(self, then=None):
        self.then = then

    def __call__(self, worker_id: int) -> None:
        shield_worker()
        if self.then is not None:
            self.then(worker_id)


class ShieldedLoader(DataLoader):
    """A ``torch.utils.data.DataLoader`` whose workers outlive a stop signal (this module's docstring) under any
    start method; its ``worker_init_fn`` runs after the shield is up."""

    def __init__(self, *args, worker_init_fn=None, **kwargs):
        super().__init__(*args, worker_init_fn=ShieldedWorkerInit(worker_init_fn), **kwargs)

    def _get_iterator(self):
        if self.num_workers > 0 and _start_method(self) != "fork":
            # started now, not inside the block: multiprocessing unblocks SIGINT and SIGTERM in the calling thread
            # after starting its resource tracker (which spawn and forkserver workers need)
            resource_tracker.ensure_running()
        with blocked_stop_signals():  # the workers start here, and with them a fork server not yet running
            return super()._get_iterator()


def _start_method(loader: DataLoader) -> str:
    context = loader.multiprocessing_context
    return context.get_start_method() if context is not None else multiprocessing.get_start_method()


_shielded = False


def shield_worker() -> None:
    """In a data-loader worker: outlive ``SHIELDED_SIGNALS`` while the loader's process lives (module docstring)."""
    global _shielded
    if _shielded:
        return
    _shielded = True
    loader = multiprocessing.parent_process()  # the loader's process under every start method (not a fork server)
    signal.pthread_sigmask(signal.SIG_BLOCK, SHIELDED_SIGNALS)  # a worker born without the mask: threads from now on

    def loader_alive() -> bool:
        return loader is None or loader.is_alive()

    def take(signum: int, sender: int | None) -> None:
        if not loader_alive():
            os._exit(128 + signum)  # an orphan ends on any stop signal, as with the default action
        if signum == signal.SIGTERM and loader is not None and sender == loader.pid:
            os._exit(0)  # the loader's shutdown: what PyTorch's own worker handler does on its parent's SIGTERM

    def take_signals() -> None:
        _name_this_thread(b"stop-shield")  # in ps -L and /proc: sigwaitinfo shows its mask open while it waits
        while True:
            info = signal.sigwaitinfo(SHIELDED_SIGNALS)
            take(info.si_signo, info.si_pid)

    # process-wide dispositions: a thread that has the signals unblocked runs this instead of dying of them (its
    # sender is unknown, so only an orphan ends on it)
    for sig in SHIELDED_SIGNALS:
        signal.signal(sig, lambda signum, frame: take(signum, None))
    threading.Thread(target=take_signals, name="stop-signal-shield", daemon=True).start()
    _children_start_unshielded()


def _name_this_thread(name: bytes) -> None:
    try:
        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME (Linux)
    except (OSError, AttributeError):
        pass


def _unshield_this_process() -> None:
    for sig in SHIELDED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SHIELDED_SIGNALS)


def _children_start_unshielded() -> None:
    """Programs this worker starts get the default mask (handlers are reset by ``exec`` and by the fork hook)."""
    os.register_at_fork(after_in_child=_unshield_forked_child)
    fork_exec = _posixsubprocess.fork_exec

    def unblocked_fork_exec(*args, **kwargs):
        # the child takes this thread's mask: unblocked for the call (a signal meanwhile runs the handler above)
        previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, SHIELDED_SIGNALS)
        try:
            return fork_exec(*args, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    _posixsubprocess.fork_exec = unblocked_fork_exec  # multiprocessing's spawn
    subprocess._fork_exec = unblocked_fork_exec  # subprocess imports it by name
    for name in ("posix_spawn", "posix_spawnp"):
        spawn = getattr(os, name, None)
        if spawn is not None:
            setattr(os, name, _with_default_mask(spawn))


def _unshield_forked_child() -> None:
    global _shielded
    _shielded = False
    _unshield_this_process()


def _with_default_mask(spawn):
    def spawn_unblocked(*args, **kwargs):
        kwargs.setdefault("setsigmask", ())
        return spawn(*args, **kwargs)
    return spawn_unblocked
