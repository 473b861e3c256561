"""Passing a scheduler's signals on to a child command (the pipeline's stages, a Slurm task's command).

The stop flag, the exit status and the loader workers' shield are ``dspnet_d2.runtime.stopping``'s, shared with the
detectron2 trainer; they are imported here for the trainers of this package.
"""
from __future__ import annotations

import ctypes
import glob
import logging
import os
import signal
import subprocess
import sys
import time

from dspnet_d2.runtime.stopping import (
    EXIT_PREEMPTED,
    ForwardSignals,
    Preempted,
    StopProtocol,
    StopSignals,
    parse_signals,
)

__all__ = ["EXIT_PREEMPTED", "Preempted", "StopSignals", "StopProtocol", "ForwardedChild", "parse_signals",
           "FORWARDED_SIGNALS"]

logger = logging.getLogger(__name__)

FORWARDED_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")  # what a parent (the pipeline) passes on to its child


class ForwardedChild:
    """Run ``command`` as a child process and pass the ``signals`` this process receives on to it, as SIGTERM
    (``ForwardSignals``).

    While the child runs, this process is the child subreaper of its whole tree: a process the child leaves behind
    (a rank whose launcher died) is re-parented here, and is ended once the child has exited, however ``run`` ends
    (SIGTERM, then SIGKILL after ``orphan_grace_s``, time for a rank to write its checkpoint; one that outlives
    SIGKILL by ``orphan_grace_s`` again, stuck in uninterruptible I/O, is left to init and logged).
    ``orphans_ended`` counts them.

    ``ignore``: signals the child starts with ignored (a Slurm task's requeue signal, which its wrapper
    handles). ``signalled`` is the first signal received, ``None`` when there was none.
    """

    def __init__(self, command: list[str], signals=FORWARDED_SIGNALS, env: dict | None = None, ignore=(),
                 orphan_grace_s: float = 60.0):
        self.command, self.env, self.ignore = command, env, parse_signals(ignore)
        self.orphan_grace_s = orphan_grace_s
        self.forwarding = ForwardSignals(signals, lambda: [self.proc.pid] if self.proc is not None else [])
        self.proc: subprocess.Popen | None = None
        self.orphans_ended = 0

    @property
    def signalled(self) -> str | None:
        return self.forwarding.signalled

    def _start_ignoring(self) -> None:  # runs in the child, before exec: an ignored signal stays ignored
        for sig in self.ignore:
            signal.signal(sig, signal.SIG_IGN)

    def run(self) -> int:
        """Start the child, wait for it, end what it left running; return its exit status (negative: killed by
        that signal)."""
        before = set(children(os.getpid()))
        with self.forwarding, ChildSubreaper():
            try:
                self.proc = subprocess.Popen(self.command, env=self.env,
                                             preexec_fn=self._start_ignoring if self.ignore else None)
                if self.signalled:  # it came before the child existed
                    self.forwarding.forward()
                while self.proc.poll() is None:  # polling, not wait(): the handlers may run meanwhile
                    time.sleep(0.1)
            finally:
                if self.proc is not None and self.proc.poll() is None:  # run() itself was interrupted
                    self._end_child()
                self._end_leftovers(before)
        return self.proc.returncode

    def _end_child(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=self.orphan_grace_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            try:
                self.proc.wait(timeout=self.orphan_grace_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s outlived SIGKILL; not waiting for it", self.proc.pid)

    def _end_leftovers(self, before: set[int]) -> None:
        leftover = set(children(os.getpid())) - before
        while leftover:  # again: ending a process may orphan its own children (a rank's loader workers)
            self.orphans_ended += len(leftover)
            unkillable = end_processes(leftover, self.orphan_grace_s, kill_grace_s=self.orphan_grace_s)
            before |= unkillable
            leftover = set(children(os.getpid())) - before

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


def children(pid: int) -> list[int]:
    """``pid``'s child processes (Linux's /proc; none where it is missing)."""
    found = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(task) as f:
                found += [int(c) for c in f.read().split()]
        except OSError:  # the thread ended meanwhile
            pass
    return found


def end_processes(pids, grace_s: float, poll_s: float = 0.1, kill_grace_s: float = 10.0) -> set[int]:
    """SIGTERM to each of ``pids`` (children of this process), SIGKILL to those alive after ``grace_s``; all
    reaped, but for those still alive ``kill_grace_s`` after SIGKILL (uninterruptible I/O), which are returned
    (and logged) instead of waited for without bound."""
    alive = set(pids)
    for pid in alive:
        _send(pid, signal.SIGTERM)
    deadline, killed = time.monotonic() + grace_s, False
    while alive:
        for pid in list(alive):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0] == pid
            except ChildProcessError:
                done = True
            if done:
                alive.discard(pid)
        if alive and time.monotonic() > deadline:
            if killed:
                logger.warning("processes %s outlived SIGKILL by %.0f s; not waiting for them", sorted(alive),
                               kill_grace_s)
                return alive
            for pid in alive:
                _send(pid, signal.SIGKILL)
            deadline, killed = time.monotonic() + kill_grace_s, True
        time.sleep(poll_s if alive else 0)
    return set()


def _send(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class ChildSubreaper:
    """While active, orphaned descendants are re-parented to this process instead of init (Linux's
    ``PR_SET_CHILD_SUBREAPER``; nothing elsewhere)."""

    _PR_SET_CHILD_SUBREAPER = 36

    def __init__(self):
        self._prctl = None
        if sys.platform.startswith("linux"):
            self._prctl = ctypes.CDLL(None, use_errno=True).prctl

    def __enter__(self):
        if self._prctl is not None:
            self._prctl(self._PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return self

    def __exit__(self, *exc) -> None:
        if self._prctl is not None:
            self._prctl(self._PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
