"""Errors caused by the user's input, and the command-line wrapper that reports them without a traceback.

Each class also derives from the builtin a caller would expect (``ValueError``, ``FileNotFoundError``,
``FileExistsError``), so library code can keep catching the builtin.
"""
from __future__ import annotations

import sys
from typing import Callable

__all__ = ["UserError", "InvalidInputError", "MissingFileError", "ExistingFileError", "MissingDependencyError",
           "cli_main"]


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


def one_line(message: str) -> str:
    """``message`` on one line: each line break becomes "; ", or a space after a full stop or colon."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    for line in lines[1:]:
        text += (" " if text.endswith((".", ":")) else "; ") + line
    return text


def cli_main(main: Callable[[], "int | None"]) -> int:
    """Run a command's ``main``; a UserError ends it with ``error: <message>`` on stderr and status 2, a stop
    signal after its checkpoint (``dspnet_d2.stopping.Preempted``) with one line and status 75.

    Any other exception is a bug and propagates with its traceback.
    """
    from .stopping import EXIT_PREEMPTED, Preempted  # stopping imports this module

    try:
        return main() or 0
    except UserError as err:
        print(f"error: {one_line(str(err))}", file=sys.stderr)
        return 2
    except Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        return EXIT_PREEMPTED
