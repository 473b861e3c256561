"""Errors caused by the user's input, and the command-line wrapper that reports them without a traceback.

Each class also derives from the builtin a caller would expect (``ValueError``, ``FileNotFoundError``,
``FileExistsError``), so library code can keep catching the builtin.
"""
from __future__ import annotations

import sys
from typing import Callable

__all__ = ["UserError", "InvalidInputError", "MissingFileError", "ExistingFileError", "MissingDependencyError",
           "EXIT_PREEMPTED", "Preempted", "cli_main"]

# sysexits.h's EX_TEMPFAIL, "a temporary failure; the user is invited to retry": the checkpoint of the step
# the run stopped at is written, and the same command resumes from it (requeue the job on this status)
EXIT_PREEMPTED = 75


class UserError(Exception):
    """A mistake in the user's input; the CLIs print it as one line."""


class InvalidInputError(UserError, ValueError):
    """A bad DN, config key or value, or a file that is not what it should be."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the input names does not exist."""


class ExistingFileError(UserError, FileExistsError):
    """A file or folder is in the way and is not ours to overwrite."""


class MissingDependencyError(UserError, ImportError):
    """An optional dependency a command needs is not installed (detectron2, OpenCV, ONNX Runtime)."""


class Preempted(Exception):
    """The run stopped on a signal after writing the checkpoint of the step it had reached."""

    def __init__(self, signal_name: str, step: int, output_dir: str, seconds: float | None = None,
                 where: str | None = None):
        after = f" ({seconds:.1f} s after the signal)" if seconds is not None else ""
        super().__init__(f"stopped by {signal_name} after {where or f'step {step}'}{after}; its checkpoint is in "
                         f"{output_dir}. Exit status {EXIT_PREEMPTED}: run the same command again to resume")
        self.signal_name, self.step = signal_name, step


def one_line(message: str) -> str:
    """``message`` on one line: each line break becomes "; ", or a space after a full stop or colon."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    for line in lines[1:]:
        text += (" " if text.endswith((".", ":")) else "; ") + line
    return text


def cli_main(main: Callable[[], "int | None"]) -> int:
    """Run a command's ``main``; a UserError ends it with ``error: <message>`` on stderr and status 2, a stop
    signal after its checkpoint (``Preempted``) with one line and status 75.

    Any other exception is a bug and propagates with its traceback.
    """
    try:
        return main() or 0
    except UserError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return EXIT_PREEMPTED
