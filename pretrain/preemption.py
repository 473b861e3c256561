"""Stopping a run cleanly on a scheduler's signal, and passing such signals on to a child command.

A cluster ends a job with a signal (Slurm: SIGTERM on preemption or at the time limit, or the signal
chosen with ``--signal`` ahead of it) and kills it seconds later. While a run trains, the configured signals
(``CHECKPOINT.SIGNALS``) only raise a flag; at the next step boundary the ranks reduce it (one integer, so all
stop after the same step), the checkpoint of that step is written and the process exits with
``EXIT_PREEMPTED``. Running the same command again resumes from that checkpoint.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import torch
import torch.distributed as dist

from dspnet_d2.errors import InvalidInputError

__all__ = ["EXIT_PREEMPTED", "Preempted", "StopSignals", "ForwardedChild", "parse_signals", "FORWARDED_SIGNALS"]

# sysexits.h's EX_TEMPFAIL, "a temporary failure; the user is invited to retry": the checkpoint of the step
# the run stopped at is written, and the same command resumes from it (requeue the job on this status)
EXIT_PREEMPTED = 75
FORWARDED_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")  # what a parent (the pipeline) passes on to its child


class Preempted(Exception):
    """The run stopped on a signal after writing the checkpoint of the step it had reached."""

    def __init__(self, signal_name: str, step: int, output_dir: str, seconds: float | None = None):
        after = f" ({seconds:.1f} s after the signal)" if seconds is not None else ""
        super().__init__(f"stopped by {signal_name} after step {step}{after}; its checkpoint is in {output_dir}. "
                         f"Exit status {EXIT_PREEMPTED}: run the same command again to resume")
        self.signal_name, self.step = signal_name, step


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


class _Handlers:
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


class StopSignals(_Handlers):
    """While active, the signals only set ``requested`` (the first one's name): a handler that does nothing
    else is safe at any point of a step, and a repeated signal (a launcher forwarding the scheduler's) is
    harmless. Data-loader workers forked meanwhile inherit the handler and keep working."""

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


class ForwardedChild(_Handlers):
    """Run ``command`` as a child process and pass the ``signals`` this process receives on to it.

    ``ignore``: signals the child starts with ignored (a Slurm task's requeue signal, which its wrapper
    handles). ``signalled`` is the first signal received, ``None`` when there was none.
    """

    def __init__(self, command: list[str], signals=FORWARDED_SIGNALS, env: dict | None = None, ignore=()):
        super().__init__(signals)
        self.command, self.env, self.ignore = command, env, parse_signals(ignore)
        self.signalled: str | None = None
        self.proc: subprocess.Popen | None = None

    def _on_signal(self, signum, frame) -> None:
        self.signalled = self.signalled or signal.Signals(signum).name
        if self.proc is not None:
            self.proc.send_signal(signum)

    def _start_ignoring(self) -> None:  # runs in the child, before exec: an ignored signal stays ignored
        for sig in self.ignore:
            signal.signal(sig, signal.SIG_IGN)

    def run(self) -> int:
        """Start the child, wait for it, return its exit status (negative: killed by that signal)."""
        with self:
            self.proc = subprocess.Popen(self.command, env=self.env,
                                         preexec_fn=self._start_ignoring if self.ignore else None)
            if self.signalled:  # it came before the child existed
                self.proc.send_signal(signal.Signals[self.signalled])
            while self.proc.poll() is None:  # polling, not wait(): the handlers may run meanwhile
                time.sleep(0.1)
        return self.proc.returncode

    def stop(self, sig: signal.Signals = signal.SIGTERM, poll_s: float = 0.2) -> None:
        """Send ``sig`` to the child and return once it has exited. Safe inside a signal handler that
        interrupted ``run``: it waits with ``waitid(WNOWAIT)``, which neither reaps the child nor takes
        ``Popen``'s lock."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(sig)
        while True:
            try:
                if os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return
            except ChildProcessError:  # reaped by run() meanwhile
                return
            time.sleep(poll_s)
