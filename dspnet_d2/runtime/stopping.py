"""Stopping a long command cleanly on a scheduler's signal: the one stop protocol every long command uses
(pretraining, supervised training, evaluation, detectron2 training), and the one class that passes a signal on.

A cluster ends a job with a signal (Slurm: SIGTERM to every process of the job step on preemption, ``scancel`` or
at the time limit; torchrun: SIGTERM to each worker's process group) and kills it seconds later. While a command
trains, the stop signals only raise a flag (``StopSignals``); at each step boundary ``StopProtocol.check`` reduces
it across ranks (one integer, so all stop after the same step), has the checkpoint of that step written, writes
``OUTPUT_DIR/stopped.json`` and raises ``Preempted``, which the command turns into exit status ``EXIT_PREEMPTED``.
Running the same command again resumes from that checkpoint. The loader workers outlive the signal
(``dspnet_d2.runtime.workers``).
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Callable

import torch
import torch.distributed as dist

from ..errors import EXIT_PREEMPTED, InvalidInputError, Preempted

__all__ = ["EXIT_PREEMPTED", "DEFAULT_STOP_SIGNALS", "Preempted", "StopSignals", "StopProtocol", "ForwardSignals",
           "parse_signals", "STOP_MARKER", "write_stop_marker", "clear_stop_marker"]

# the signals a command stops on by default (pretraining's CHECKPOINT.SIGNALS, evaluation, detectron2 training)
DEFAULT_STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")

# OUTPUT_DIR/STOP_MARKER exists while a run is stopped by a signal: a job script's way to tell a stop from a failure
# where the launcher hides the exit status (torchrun exits 1 after a signal, whatever its ranks returned)
STOP_MARKER = "stopped.json"


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
    harmless."""

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


class StopProtocol:
    """The stop protocol of a long command, as a context: on entry the stop marker of an earlier stop is cleared and
    the stop signals only raise a flag; ``check`` at each step boundary stops every rank after the same step.

    ``device``: where the flag is reduced (the process group's device: a CUDA device under NCCL)."""

    def __init__(self, output_dir: str, signals=DEFAULT_STOP_SIGNALS, world_size: int = 1,
                 device: torch.device | str = "cpu", is_main: bool = True):
        self.output_dir, self.world_size, self.is_main = output_dir, world_size, is_main
        self.device = torch.device(device)
        self.signals = StopSignals(signals)

    def __enter__(self) -> "StopProtocol":
        if self.is_main:
            clear_stop_marker(self.output_dir)
        self.signals.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.signals.__exit__(*exc)

    @property
    def requested(self) -> str | None:
        """The stop signal this process received, if any (no collective: for choices that are not per rank)."""
        return self.signals.requested

    def agreed(self) -> str | None:
        """On every rank at once: the signal that stops the run, when any rank has received one."""
        return self.signals.agreed(self.world_size, self.device)

    def check(self, step: int, save: Callable[[], None], where: str | None = None) -> None:
        """On every rank at a step boundary: when any rank received a stop signal, ``save()`` (the checkpoint of
        ``step``, on every rank: it synchronises them), ``stopped.json`` and ``Preempted``."""
        signal_name = self.agreed()
        if signal_name:
            self.stop(signal_name, step, save, where)

    def stop(self, signal_name: str, step: int, save: Callable[[], None], where: str | None = None) -> None:
        """``check``'s end, once the ranks agreed to stop."""
        save()
        stopped = Preempted(signal_name, step, self.output_dir, self.signals.seconds_since(), where)
        if self.is_main:
            write_stop_marker(self.output_dir, stopped)
        raise stopped


class ForwardSignals(SignalHandlers):
    """While active, a stop signal this process receives is passed on as SIGTERM to the processes ``targets()``
    returns: the one signal every command of this package and torchrun handle (torchrun dies on SIGUSR1, leaving
    its ranks running in sessions of their own). ``signalled``: the first signal's name."""

    signalled: str | None = None

    def __init__(self, signals, targets: Callable[[], list[int]]):
        super().__init__(signals)
        self.targets = targets

    def _on_signal(self, signum, frame) -> None:
        self.signalled = self.signalled or signal.Signals(signum).name
        self.forward()

    def forward(self) -> None:
        for pid in self.targets():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
