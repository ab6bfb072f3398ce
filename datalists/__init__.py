"""Datalist schema and validation (see :mod:`datalists.validate`).

The names below are imported lazily so that ``python -m datalists.validate`` runs
without Python warning that the module was imported twice.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DatalistError", "load_datalist", "validate_datalist"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import validate

        return getattr(validate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
