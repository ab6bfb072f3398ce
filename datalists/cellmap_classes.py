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
    "LABEL_RULES",
    "CellMapClass",
    "atomic_ids",
    "class_by_name",
    "load_class_table",
    "uncovered_overlaps",
]

#: Version of the rules that turn CellMap annotations into one label value per voxel, written
#: into the datalist as ``label_rules``. 2: a voxel of two overlapping classes (nuc and er) takes
#: the class of what they share (ne), or 255 (not annotated) where none is selected; before, it
#: took one of the two, and the other was trained as absent there.
LABEL_RULES = 2


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
        parts = [p.strip() for p in str(name).replace(";", ",").split(",") if p.strip()]
        if len(parts) > 1:  # --classes mito,er
            unknown = [p for p in parts if p not in CELLMAP_CLASSES]
            also = "; ".join(f"{p!r} is no class either" + (f" (did you mean {', '.join(close_class_names(p))}?)"
                                                            if close_class_names(p) else "") for p in unknown)
            raise KeyError(f"unknown CellMap class {name!r}: give classes separated by spaces, not commas "
                           f"(--classes {' '.join(parts)})" + (f"; {also}" if also else "")) from None
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


def uncovered_overlaps(names: Iterable[str]) -> list[tuple[str, str, list[str]]]:
    """Pairs of ``names`` that overlap, neither inside the other, where no class of ``names``
    covers what they share: ``(a, b, shared atomic class names)``. One label value per voxel
    cannot say "both" there. Names that are no CellMap class are left out.

    >>> uncovered_overlaps(["nuc", "er"])[0][:2]
    ('nuc', 'er')
    >>> uncovered_overlaps(["nuc", "er", "ne"]), uncovered_overlaps(["er", "er_mem_all"])
    ([], [])
    """
    known = [CELLMAP_CLASSES[n] for n in names if n in CELLMAP_CLASSES]
    atoms = {c.name: set(c.parts) if c.parts else {c.cellmap_id} for c in known}
    out = []
    for i, a in enumerate(known):
        for b in known[i + 1:]:
            shared = atoms[a.name] & atoms[b.name]
            if not shared or atoms[a.name] <= atoms[b.name] or atoms[b.name] <= atoms[a.name]:
                continue
            # a class inside the shared part labels those voxels, and counts for both
            covered = set().union(*[atoms[c.name] for c in known if atoms[c.name] <= shared] or [set()])
            if shared - covered:
                out.append((a.name, b.name, sorted(CELLMAP_BY_ID[x].name for x in shared - covered)))
    return out
