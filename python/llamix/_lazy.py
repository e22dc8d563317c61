"""A package's public names imported on first use (PEP 562), so that importing the package does
not import the modules behind every name (llamix.export, llamix.tokenizer: see their docstrings)."""
from __future__ import annotations

import importlib
import sys
from typing import Callable


def lazy_names(package: str, table: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The package's ``__getattr__`` and ``__dir__``: a name of ``table`` (name -> module, relative
    to ``package``) is imported from its module when first asked for, then kept in the package."""
    namespace = sys.modules[package].__dict__

    def getattr_(name: str):
        if name in table:
            value = getattr(importlib.import_module(table[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(table))

    return getattr_, dir_
