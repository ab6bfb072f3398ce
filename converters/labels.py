"""Where a crop's label voxels come from, and their mapping to our class ids."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import zarr

from datalists.cellmap_classes import CELLMAP_BY_ID, CELLMAP_CLASSES
from converters import cellmap_zarr as cz

__all__ = ["ComposedLabels", "label_source", "lookup"]


class ComposedLabels:
    """A lazily read CellMap-id volume built from per-class arrays (when ``all`` is absent).

    Groups are painted first and atomic classes last, so the most specific id wins.
    """

    def __init__(self, arrays: Sequence[tuple[int, zarr.Array, bool]]):
        order = sorted(arrays, key=lambda a: -len(_parts(a[0])))
        self._arrays = order
        self.shape = order[0][1].shape

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        out = None
        for cid, arr, instance in self._arrays:
            block = np.asarray(arr[key])
            if out is None:
                out = np.zeros(block.shape, dtype=np.uint8)
            present = block > 0 if instance else block == 1
            out[present] = cid
        return out


def _parts(cellmap_id: int) -> tuple[int, ...]:
    return CELLMAP_BY_ID[cellmap_id].parts


def label_source(gt: zarr.hierarchy.Group, gt_group: str, statuses: dict[str, cz.ClassStatus]):
    """The CellMap-id volume of a crop: its ``all`` array, or one composed from class arrays.

    Returns ``(source, how)``; ``source`` is None when no annotated class has an array.
    """
    crop = gt[gt_group]
    if "all" in crop:
        levels = cz.read_levels(crop["all"], f"{gt_group}/all")
        arr = crop["all"][levels[0].path]
        if arr.nchunks_initialized > 0:
            return arr, "all"
    arrays = []
    for name, st in statuses.items():
        if st.annotated and name in CELLMAP_CLASSES and name in crop:
            levels = cz.read_levels(crop[name], f"{gt_group}/{name}")
            arrays.append((CELLMAP_CLASSES[name].cellmap_id, crop[name][levels[0].path], st.instance))
    if not arrays:
        return None, "none"
    return ComposedLabels(arrays), "per-class arrays"



def lookup(lut: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Map CellMap ids to ours; ids past the table (not CellMap classes) become background."""
    if block.dtype.itemsize > 1 or block.dtype.kind != "u":
        block = np.where((block >= 0) & (block < lut.size), block, 0)
    return lut[block]
