"""The class table of 2-D cell data: a training target that gives every cell back.

Instance masks (``<stem>_label.tiff``) are turned into one label map per image with
three values, and the datalist's ``class_table`` says what each means:

====  ================  ==========================================================
 id   name              pixels
====  ================  ==========================================================
 1    ``cell_interior``  a cell's pixels that do not touch another cell
 2    ``cell_contact``   a cell's pixels with an 8-neighbour in *another* cell
 3    ``cell``           group of 1 and 2: every cell pixel; scored as instances
====  ================  ==========================================================

Only borders *between* cells are marked, never a cell's border with the background, so
a small isolated cell keeps all its pixels as interior: the challenge baseline's target
(interior = cell minus a dilated inner boundary) erases cells a few pixels across, and
connected components of it cannot separate what the band does not cut. Post-processing
(:mod:`auto3dseg.postprocess.cells`) labels the interiors (8-connected) as seeds and grows
them through the ``cell`` mask; the band is two pixels wide across every contact, so
touching cells' seeds never join. On the real pairs in ``../shared/data/cells2d`` the
round trip target → instances scores official F1 1.0.

The outputs are sigmoid per class (``cell`` is a group, so the engine never uses
softmax here); ``cell`` carries ``instance: true`` like CellMap's instance classes.

Examples
--------
>>> [r["name"] for r in CELL_CLASS_TABLE]
['cell_interior', 'cell_contact', 'cell']
>>> CELL_INSTANCE_CLASS, CELL_SEED_CLASS
('cell', 'cell_interior')
"""

from __future__ import annotations

__all__ = [
    "CELL_CLASS_TABLE",
    "CELL_CONTACT",
    "CELL_DATA_KIND",
    "CELL_INSTANCE_CLASS",
    "CELL_INTERIOR",
    "CELL_SEED_CLASS",
    "is_cell_datalist",
]

#: label values of the target map (0 is background)
CELL_INTERIOR = 1
CELL_CONTACT = 2

#: ``datalist["kind"]`` of datalists written by ``converters.cells.convert``
CELL_DATA_KIND = "cells2d"

CELL_CLASS_TABLE: list[dict] = [
    {"id": CELL_INTERIOR, "name": "cell_interior", "instance": False, "parts": [],
     "description": "cell pixels with no 8-neighbour in another cell (the seeds of instances)"},
    {"id": CELL_CONTACT, "name": "cell_contact", "instance": False, "parts": [],
     "description": "cell pixels with an 8-neighbour in another cell (only where cells touch)"},
    {"id": 3, "name": "cell", "instance": True, "parts": [CELL_INTERIOR, CELL_CONTACT],
     "description": "every cell pixel (interior and contact); written as instances"},
]

#: the class written as ``<stem>_label.tiff`` instances, and the one whose components seed them
CELL_INSTANCE_CLASS = "cell"
CELL_SEED_CLASS = "cell_interior"


def is_cell_datalist(datalist: dict) -> bool:
    """True for a datalist of 2-D cell images (written by the cell converter).

    >>> is_cell_datalist({"kind": "cells2d"}), is_cell_datalist({"modality": "em"})
    (True, False)
    """
    return datalist.get("kind") == CELL_DATA_KIND
