"""From CellMap classes annotated in crops to our label ids and class table.

Our label maps hold, per voxel, the id of the most specific *selected* class (like
CellMap's ``all`` array). Group classes are listed in the class table with their atomic
parts, so training and post-processing can build e.g. ``mito = mito_mem ∪ mito_lum``.

A class is a *leaf* of a crop when it is annotated there and none of its parts is: in a
crop that annotates only ``mito`` as a whole, ``mito`` is the leaf; in one that annotates
``mito_mem`` and ``mito_lum``, those are.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from converters.cellmap.zarr_tree import NOT_LISTED, CellMapFormatError, ClassStatus
from datalists.annotated import UNANNOTATED  # CellMap's unknown, values that are no class
from datalists.cellmap_classes import (CELLMAP_BY_ID, CELLMAP_CLASSES, class_by_name, close_class_names,
                                       uncovered_overlaps)

__all__ = ["UNANNOTATED", "leaf_classes", "default_classes", "build_class_table", "cellmap_lookup", "annotated_ids",
           "listed_class_names", "overlap_warnings", "restrict_to_listed"]



def _annotated(statuses: Mapping[str, ClassStatus]) -> set[str]:
    return {n for n, s in statuses.items() if s.annotated and n in CELLMAP_CLASSES}


def leaf_classes(statuses: Mapping[str, ClassStatus]) -> set[str]:
    """Annotated classes of a crop none of whose parts is annotated in that crop.

    >>> st = {n: ClassStatus(n, True, "annotated") for n in ["mito", "mito_mem", "mito_lum", "er"]}
    >>> sorted(leaf_classes(st))
    ['er', 'mito_lum', 'mito_mem']
    """
    annotated = _annotated(statuses)
    annotated_ids = {CELLMAP_CLASSES[n].cellmap_id for n in annotated}
    return {n for n in annotated if not (set(CELLMAP_CLASSES[n].parts) & annotated_ids)}


def default_classes(per_crop: Iterable[Mapping[str, ClassStatus]]) -> list[str]:
    """Every leaf class found in any crop, plus the annotated groups made of them.

    Ordered atomic classes first, then groups, each by CellMap id.
    """
    per_crop = list(per_crop)
    leaves: set[str] = set()
    for st in per_crop:
        leaves |= leaf_classes(st)
    leaf_ids = {CELLMAP_CLASSES[n].cellmap_id for n in leaves}
    groups = set()
    for st in per_crop:
        for n in _annotated(st):
            if n not in leaves and set(CELLMAP_CLASSES[n].parts) & leaf_ids:
                groups.add(n)
    chosen = leaves | groups
    return sorted(chosen, key=lambda n: (CELLMAP_CLASSES[n].is_group, CELLMAP_CLASSES[n].cellmap_id))


def build_class_table(names: Sequence[str]) -> list[dict]:
    """The datalist's class table for ``names`` (ids 1..K in the given order).

    ``parts`` lists our ids of the selected classes whose CellMap ids are parts of a group.

    >>> [(r["id"], r["name"], r["parts"]) for r in build_class_table(["mito_mem", "mito_lum", "mito"])]
    [(1, 'mito_mem', []), (2, 'mito_lum', []), (3, 'mito', [1, 2])]
    """
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in {list(names)}")
    classes = [class_by_name(n) for n in names]
    our_id = {c.cellmap_id: i + 1 for i, c in enumerate(classes)}
    table = []
    for i, c in enumerate(classes):
        parts = sorted(our_id[p] for p in c.parts if p in our_id)
        table.append({"id": i + 1, "name": c.name, "cellmap_id": c.cellmap_id, "instance": c.instance, "parts": parts})
    return table


def _atomic(cellmap_id: int) -> set[int]:
    c = CELLMAP_BY_ID[cellmap_id]
    return set(c.parts) if c.parts else {cellmap_id}


def overlap_warnings(annotated: Sequence[str]) -> list[str]:
    """Pairs of annotated classes that overlap (neither inside the other) where no annotated class
    covers what they share: one label value per voxel cannot say "both" there, so one of the two is
    trained as absent on those voxels. Each warning names the pair and the shared atomic classes.

    >>> overlap_warnings(["nuc", "er"])[0][:70]
    'nuc and er are both annotated and share ne_lum, ne_mem, np_in, np_out,'

    >>> overlap_warnings(["nuc", "er", "ne"]), overlap_warnings(["er", "er_mem_all"])
    ([], [])
    """
    return [f"{a} and {b} are both annotated and share {', '.join(shared)}, which no class annotated in this crop "
            "covers: a voxel in both holds one label value, so training counts it for one of the two only (the other "
            "learns 'absent' there); to train without that error, list only one of the two in this crop's "
            "datasplit.csv row (its class list)" for a, b, shared in uncovered_overlaps(annotated)]


def cellmap_lookup(class_table: Sequence[Mapping]) -> np.ndarray:
    """Lookup table from CellMap ids (0..255) to our ids.

    A CellMap id maps to its own class when selected, else to the smallest selected
    group that contains it, else to 0 (background: annotated as another class). When two
    selected groups hold it and neither holds the other (``ne_mem`` with ``nuc`` and ``er``
    selected), no id says both: it maps to :data:`UNANNOTATED`, as does a value that is no
    CellMap class (255 ``unknown``, say).

    >>> lut = cellmap_lookup(build_class_table(["mito", "er_mem"]))
    >>> lut[[0, 3, 4, 50, 16, 17, 255, 200]].tolist()
    [0, 1, 1, 1, 2, 0, 255, 255]
    >>> from datalists.cellmap_classes import CELLMAP_CLASSES as C
    >>> lut = cellmap_lookup(build_class_table(["nuc", "er"]))
    >>> lut[[C["ne_mem"].cellmap_id, C["er_lum"].cellmap_id, C["chrom"].cellmap_id]].tolist()
    [255, 2, 1]
    """
    if len(class_table) >= UNANNOTATED:
        raise ValueError(f"{len(class_table)} classes: at most {UNANNOTATED - 1} fit beside the "
                         f"not-annotated value {UNANNOTATED}; select fewer with --classes")
    lut = np.full(256, UNANNOTATED, dtype=np.uint8)
    lut[0] = 0
    selected = {int(r["cellmap_id"]): int(r["id"]) for r in class_table}
    for cid in CELLMAP_BY_ID:
        if cid >= lut.size:
            continue
        lut[cid] = 0
        if cid in selected:
            lut[cid] = selected[cid]
            continue
        mine = _atomic(cid)
        holders = {sid: _atomic(sid) for sid in selected if CELLMAP_BY_ID[sid].parts and mine <= _atomic(sid)}
        smallest = [sid for sid, a in holders.items() if not any(b < a for b in holders.values())]
        if len(smallest) == 1:  # it counts for every bigger group too (channels hold the classes inside them)
            lut[cid] = selected[smallest[0]]
        elif smallest:  # in two selected groups neither holding the other (ne_mem: nuc and er): no one id says
            lut[cid] = UNANNOTATED  # both, and either would train the other as absent: left out of training
    return lut


def annotated_ids(statuses: Mapping[str, ClassStatus], class_table: Sequence[Mapping]) -> list[int]:
    """Our ids of the selected classes a crop annotates.

    A group counts as annotated when the crop annotates it, or annotates every one of
    its CellMap parts.
    """
    annotated = _annotated(statuses)
    annotated_cm = {CELLMAP_CLASSES[n].cellmap_id for n in annotated}
    ids = []
    for row in class_table:
        c = CELLMAP_CLASSES[row["name"]]
        if row["name"] in annotated or (c.parts and set(c.parts) <= annotated_cm):
            ids.append(int(row["id"]))
    return ids


def listed_class_names(text: str, where: str) -> tuple[str, ...]:
    """The class names of a ``datasplit.csv`` row's ``[cls,cls,...]`` (``all`` dropped).

    An unknown name raises :class:`~converters.cellmap.zarr_tree.CellMapFormatError` naming
    ``where`` (``file:line``), the name and the closest known names.

    >>> listed_class_names("mito, er_mem,all", "split.csv:2")
    ('mito', 'er_mem')
    >>> listed_class_names("mito,er_mme", "split.csv:2")
    Traceback (most recent call last):
    ...
    converters.cellmap.zarr_tree.CellMapFormatError: split.csv:2: unknown class 'er_mme' in the row's class list \
(closest known: er, er_mem, eres_mem); fix the name or remove it (CellMap class names, as in the toolbox's classes.csv)
    """
    names = [c.strip() for c in text.split(",") if c.strip()]
    for name in names:
        if name not in CELLMAP_CLASSES and name != "all":
            close = close_class_names(name)
            hint = f"closest known: {', '.join(close)}" if close else "no known class is close"
            raise CellMapFormatError(f"{where}: unknown class {name!r} in the row's class list ({hint}); fix the "
                                     "name or remove it (CellMap class names, as in the toolbox's classes.csv)")
    return tuple(dict.fromkeys(n for n in names if n != "all"))


def restrict_to_listed(statuses: Mapping[str, ClassStatus], listed: Sequence[str] | None,
                       where: str = "datasplit.csv") -> tuple[dict[str, ClassStatus], list[str]]:
    """A crop's class statuses restricted to the classes its ``datasplit.csv`` row lists.

    A class the crop annotates but the row does not list becomes not annotated
    (:data:`~converters.cellmap.zarr_tree.NOT_LISTED`): it leaves the crop's annotated set,
    so training neither learns it nor learns its absence there (its voxels are never
    made background). A listed group the crop has no array for counts as annotated when
    every one of its parts is. ``listed`` None (no list in the row) changes nothing.

    Returns the new statuses and notes (listed classes the crop does not have).

    >>> st = {n: ClassStatus(n, True, "annotated") for n in ["mito_mem", "mito_lum", "mito_ribo", "er"]}
    >>> new, notes = restrict_to_listed(st, ["mito", "ecs"], "split.csv:3")
    >>> sorted(n for n, s in new.items() if s.annotated), new["er"].reason
    (['mito'], 'not listed in datasplit.csv')
    >>> notes
    ['split.csv:3 lists ecs, which this crop has no array for: not annotated']
    """
    if listed is None:
        return dict(statuses), []
    wanted = set(listed)
    out = {n: (s if n in wanted or not s.annotated else ClassStatus(n, False, NOT_LISTED, s.instance))
           for n, s in statuses.items()}
    annotated_cm = {CELLMAP_CLASSES[n].cellmap_id for n in _annotated(statuses)}
    missing = []
    for name in listed:
        if name in statuses or name not in CELLMAP_CLASSES:
            continue
        c = CELLMAP_CLASSES[name]
        if c.parts and set(c.parts) <= annotated_cm:
            out[name] = ClassStatus(name, True, "annotated (every part is)", c.instance)
        else:
            missing.append(name)
    notes = [f"{where} lists {', '.join(missing)}, which this crop has no array for: not annotated"] if missing else []
    return out, notes
