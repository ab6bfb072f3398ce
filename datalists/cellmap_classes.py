"""The CellMap class table: names, CellMap ids, group structure, instance/semantic.

This is the one place the project keeps class facts. The table itself lives in
``datalists/cellmap_classes.csv`` so a person can read and extend it.

A class is *atomic* when it has no parts (``mito_mem``); a *group* is the union of
its atomic parts (``mito`` = ``mito_mem`` ∪ ``mito_lum`` ∪ ``mito_ribo``).

Examples
--------
>>> from datalists.cellmap_classes import CELLMAP_CLASSES
>>> CELLMAP_CLASSES["mito"].parts
(3, 4, 5)
>>> CELLMAP_CLASSES["mito"].instance, CELLMAP_CLASSES["mito_mem"].instance
(True, False)
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "CELLMAP_BY_ID",
    "CELLMAP_CLASSES",
    "INSTANCE_CLASSES",
    "CellMapClass",
    "atomic_ids",
    "class_by_name",
    "load_class_table",
]


@dataclass(frozen=True)
class CellMapClass:
    """One row of the CellMap class table.

    Attributes
    ----------
    name : str
        The CellMap label name (``"mito_mem"``).
    cellmap_id : int
        The id used in CellMap ``all`` arrays.
    parts : tuple of int
        CellMap ids of the atomic parts of a group; empty for an atomic class.
    instance : bool
        True if the challenge scores this class as instances.
    tested : bool
        True if the class appears in the challenge's test set.
    """

    name: str
    cellmap_id: int
    parts: tuple[int, ...]
    instance: bool
    tested: bool

    @property
    def is_group(self) -> bool:
        return bool(self.parts)


def load_class_table(path: str | None = None) -> dict[str, CellMapClass]:
    """Read a class table CSV (the packaged one by default) keyed by class name."""
    if path is None:
        text = resources.files("datalists").joinpath("cellmap_classes.csv").read_text()
    else:
        with open(path) as fh:
            text = fh.read()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    table: dict[str, CellMapClass] = {}
    for row in csv.DictReader(lines):
        parts = tuple(int(p) for p in row["parts"].split()) if row["parts"].strip() else ()
        table[row["name"]] = CellMapClass(
            name=row["name"],
            cellmap_id=int(row["cellmap_id"]),
            parts=parts,
            instance=row["instance"].strip() == "1",
            tested=row["tested"].strip() == "1",
        )
    return table


CELLMAP_CLASSES: Mapping[str, CellMapClass] = load_class_table()
CELLMAP_BY_ID: Mapping[int, CellMapClass] = {c.cellmap_id: c for c in CELLMAP_CLASSES.values()}
INSTANCE_CLASSES: frozenset[str] = frozenset(n for n, c in CELLMAP_CLASSES.items() if c.instance)


def close_class_names(name: str, n: int = 3) -> list[str]:
    """CellMap class names a misspelt or spelt-out ``name`` may mean: a class the name starts
    with (``mitochondria`` -> ``mito``), then names spelt alike.

    >>> close_class_names("mitochondria")[0], close_class_names("nucleus")[0], close_class_names("xyzzy")
    ('mito', 'nuc', [])
    """
    import difflib

    low = name.strip().lower()
    prefixed = sorted((c for c in CELLMAP_CLASSES if len(c) >= 2 and low.startswith(c)), key=len, reverse=True)
    alike = difflib.get_close_matches(low, list(CELLMAP_CLASSES), n=n, cutoff=0.5)
    return list(dict.fromkeys(prefixed + alike))[:n]


def class_by_name(name: str) -> CellMapClass:
    """Look a class up by name, with an error that lists close names."""
    try:
        return CELLMAP_CLASSES[name]
    except KeyError:
        close = close_class_names(name)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown CellMap class {name!r}.{hint}") from None


def atomic_ids(names: Iterable[str]) -> set[int]:
    """CellMap ids of the atomic classes that make up ``names`` (a group expands to its parts).

    >>> sorted(atomic_ids(["mito", "ecs"]))
    [1, 3, 4, 5]
    """
    ids: set[int] = set()
    for n in names:
        c = class_by_name(n)
        ids.update(c.parts if c.parts else (c.cellmap_id,))
    return ids
