"""``--import FILE_OR_MODULE``: code of a user's that registers a method (or a family, an export format)
before the recipe is loaded, so its name and its config keys are known."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from dspnet_d2.errors import InvalidInputError, MissingFileError

__all__ = ["import_plugins"]


def import_plugins(names: list[str]) -> None:
    """Import each ``.py`` file (by path) or module (by dotted name) once."""
    for name in names:
        if name.endswith(".py"):
            if not os.path.isfile(name):
                raise MissingFileError(f"--import {name}: no such file")
            module_name = "dspnet_plugin_" + os.path.splitext(os.path.basename(name))[0]
            if module_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(module_name, os.path.abspath(name))
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as err:
                raise InvalidInputError(f"--import {name}: {err}") from None
