"""Stopping a long command cleanly on a scheduler's signal: the flag, the exit status, and loader workers that
outlive the signal until their process has written its checkpoint.

A cluster ends a job with a signal (Slurm: SIGTERM to every process of the job step on preemption, ``scancel`` or
at the time limit; torchrun: SIGTERM to each worker's process group) and kills it seconds later. While a command
trains, the stop signals only raise a flag; at the next step boundary the ranks reduce it (one integer, so all stop
after the same step), the checkpoint of that step is written and the command exits with ``EXIT_PREEMPTED``.
Running the same command again resumes from that checkpoint.

Data-loader workers receive the same signal. PyTorch's workers die on a SIGTERM that does not come from their
parent, and the loader then fails the step with "DataLoader worker ... is killed by signal"; ``shield_worker``
(every loader's ``worker_init_fn``) makes them ignore stop signals from anyone but their parent.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time

import torch
import torch.distributed as dist

from .errors import InvalidInputError

__all__ = ["EXIT_PREEMPTED", "DEFAULT_STOP_SIGNALS", "Preempted", "StopSignals", "parse_signals", "SHIELDED_SIGNALS", "ShieldedWorkerInit", "ForwardToChildren",
           "shield_worker", "STOP_MARKER", "write_stop_marker", "clear_stop_marker"]

# sysexits.h's EX_TEMPFAIL, "a temporary failure; the user is invited to retry": the checkpoint of the step
# the run stopped at is written, and the same command resumes from it (requeue the job on this status)
EXIT_PREEMPTED = 75

# the signals a command stops on by default (pretraining's CHECKPOINT.SIGNALS, evaluation, detectron2 training)
DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")

# OUTPUT_DIR/STOP_MARKER exists while a run is stopped by a signal: a job script's way to tell a stop from a failure
# where the launcher hides the exit status (torchrun exits 1 after a signal, whatever its ranks returned)
STOP_MARKER = "stopped.json"

# what a scheduler or launcher stops a job with: torchrun relays TERM, INT, HUP and QUIT; Slurm's --signal
# may choose USR1 or USR2
SHIELDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(Exception):
    """The run stopped on a signal after writing the checkpoint of the step it had reached."""

    def __init__(self, signal_name: str, step: int, output_dir: str, seconds: float | None = None,
                 where: str | None = None):
        after = f" ({seconds:.1f} s after the signal)" if seconds is not None else ""
        super().__init__(f"stopped by {signal_name} after {where or f'step {step}'}{after}; its checkpoint is in "
                         f"{output_dir}. Exit status {EXIT_PREEMPTED}: run the same command again to resume")
        self.signal_name, self.step = signal_name, step


def write_stop_marker(output_dir: str, stop: Preempted) -> None:
    """OUTPUT_DIR/stopped.json: the signal, the step and the exit status of a run that stopped (main process)."""
    path = os.path.join(output_dir, STOP_MARKER)
    with open(path + ".tmp", "w") as f:
        json.dump({"signal": stop.signal_name, "step": stop.step, "exit_status": EXIT_PREEMPTED}, f)
    os.replace(path + ".tmp", path)


def clear_stop_marker(output_dir: str) -> None:
    """At the start of a run: the stop it resumes from is over."""
    try:
        os.remove(os.path.join(output_dir, STOP_MARKER))
    except FileNotFoundError:
        pass


def parse_signals(names) -> tuple[signal.Signals, ...]:
    """``("SIGTERM", "USR1", ...)`` as signals; a name that is not a catchable signal is an input error."""
    found = []
    for name in names:
        key = str(name).upper()
        key = key if key.startswith("SIG") else f"SIG{key}"
        sig = getattr(signal.Signals, key, None)
        if sig is None or sig in (signal.SIGKILL, signal.SIGSTOP):
            raise InvalidInputError(f"CHECKPOINT.SIGNALS: {name!r} is not a signal a process can catch "
                                    f"(e.g. SIGTERM, SIGINT, SIGUSR1)")
        found.append(sig)
    return tuple(dict.fromkeys(found))


class SignalHandlers:
    """Install one handler for ``signals`` while active (main thread only), then restore the previous ones."""

    def __init__(self, signals):
        self.signals = parse_signals(signals)
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        raise NotImplementedError


class StopSignals(SignalHandlers):
    """While active, the signals only set ``requested`` (the first one's name): a handler that does nothing
    else is safe at any point of a step, and a repeated signal (a launcher forwarding the scheduler's) is
    harmless. The loader workers are shielded by ``shield_worker``, not by this handler."""

    requested: str | None = None
    received_at: float | None = None  # time.monotonic() of the first signal

    def _on_signal(self, signum, frame) -> None:
        if self.requested is None:
            self.requested, self.received_at = signal.Signals(signum).name, time.monotonic()

    def seconds_since(self) -> float | None:
        return None if self.received_at is None else time.monotonic() - self.received_at

    def agreed(self, world_size: int, device: torch.device) -> str | None:
        """At a step boundary, on every rank: the signal that stops the run, when any rank has received one.

        One integer reduced across ranks, so all ranks stop after the same step."""
        if world_size == 1:
            return self.requested
        flag = torch.tensor([self.requested is not None], dtype=torch.int32, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return (self.requested or "a signal on another rank") if flag.item() else None


class ForwardToChildren(SignalHandlers):
    """While active, a stop signal this process receives is passed on as SIGTERM to its multiprocessing children:
    a launcher that spawned its ranks (detectron2's ``launch``) and only waits for them. ``signalled``: the
    first signal's name."""

    signalled: str | None = None

    def _on_signal(self, signum, frame) -> None:
        self.signalled = self.signalled or signal.Signals(signum).name
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def shield_worker() -> None:
    """In a data-loader worker: ignore ``SHIELDED_SIGNALS`` unless the parent sends them.

    The signals are blocked and taken by a thread with ``sigwaitinfo``, which tells who sent each one. The
    parent's SIGTERM (the loader's own shutdown, and multiprocessing's at the parent's exit) still ends the
    worker at once; a scheduler's or launcher's is dropped, so the worker keeps serving batches until the
    parent has checkpointed. A worker still ends with its parent: PyTorch's workers watch the parent's pid.
    """
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, SHIELDED_SIGNALS)  # threads started later inherit the mask

    def take_signals() -> None:
        while True:
            info = signal.sigwaitinfo(SHIELDED_SIGNALS)
            if info.si_signo == signal.SIGTERM and info.si_pid == parent:
                os._exit(0)  # what PyTorch's own worker handler does on its parent's SIGTERM

    threading.Thread(target=take_signals, name="stop-signal-shield", daemon=True).start()


class ShieldedWorkerInit:
    """A loader's ``worker_init_fn`` that runs ``shield_worker`` (a picklable object, for any start method)."""

    def __call__(self, worker_id: int) -> None:
        shield_worker()
