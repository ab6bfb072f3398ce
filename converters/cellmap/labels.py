"""Where a crop's label voxels come from, and their mapping to our class ids.

A voxel nobody annotated — CellMap's ``unknown`` (255 in ``all``, or the value an array's
``encoding`` declares unknown), or a value that is no CellMap class — is written as
:data:`~converters.cellmap.class_mapping.UNANNOTATED`, the value the bundles leave out of the loss:
never background, never a class. :class:`LabelMapper` counts those voxels per source value
so that the report says how many there were.
"""

from __future__ import annotations

from typing import Any, Sequence

import fastremap
import numpy as np
import zarr

from converters.cellmap import zarr_tree as cz
from converters.cellmap.class_mapping import UNANNOTATED, overlap_warnings
from converters.cellmap.multiscale_checks import check_level_extents, grid_text, same_grid
from converters.geometry import Grid
from datalists.cellmap_classes import CELLMAP_BY_ID, CELLMAP_CLASSES

__all__ = ["ComposedLabels", "LabelMapper", "UNANNOTATED", "check_label_dtype", "label_source", "lookup"]

#: CellMap's value for "not annotated" in ``all`` and in semantic class arrays
CELLMAP_UNKNOWN = 255


def _encoding(arr: zarr.Array, group: zarr.hierarchy.Group | None) -> dict[str, int]:
    for attrs in ([group.attrs] if group is not None else []) + [arr.attrs]:
        enc = attrs.get("cellmap", {}).get("annotation", {}).get("annotation_type", {}).get("encoding")
        if enc:
            return {str(k): int(v) for k, v in enc.items()}
    return {}


class ComposedLabels:
    """A lazily read CellMap-id volume built from per-class arrays (when ``all`` is absent).

    Groups are painted first and atomic classes last, so the most specific id wins. A voxel
    no array marks present but some array marks unknown (its declared ``unknown`` value;
    for a semantic array also any value but absent and present) becomes 255 (unknown).

    Parameters
    ----------
    arrays : sequence of (cellmap id, array, instance, encoding)
        ``encoding`` is the array's ``cellmap`` annotation encoding (``{"absent": 0,
        "present": 1, "unknown": 255}``); missing keys take CellMap's defaults for
        semantic arrays; an instance array without ``unknown`` has none.
    """

    def __init__(self, arrays: Sequence[tuple[int, Any, bool, dict[str, int]]]):
        self._arrays = sorted(arrays, key=lambda a: -len(_parts(a[0])))
        self.shape = self._arrays[0][1].shape
        self.chunks = getattr(self._arrays[0][1], "chunks", None)
        # a voxel in two classes that overlap without one holding the other (nuc and er) takes the class
        # of what they share (ne), which counts for both; 255 (unknown) when CellMap has no such class
        ids = [a[0] for a in self._arrays]
        self._meets = [{p: meet_of(p, c) for p in ids[:i] if overlap_only(p, c)} for i, c in enumerate(ids)]

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        out = unknown = None
        for (cid, arr, instance, enc), meets in zip(self._arrays, self._meets):
            block = np.asarray(arr[key])
            if out is None:
                out = np.zeros(block.shape, dtype=np.uint8)
                unknown = np.zeros(block.shape, dtype=bool)
            absent = enc.get("absent", 0)
            if instance:
                unk = block == enc["unknown"] if "unknown" in enc else np.zeros(block.shape, dtype=bool)
                present = (block != absent) & ~unk
            else:
                present = block == enc.get("present", 1)
                unk = ~present & (block != absent)
            unknown |= unk
            if meets:
                before = out[present]
                painted = np.full(before.shape, cid, dtype=np.uint8)
                for earlier, meet in meets.items():
                    painted[before == earlier] = meet
                out[present] = painted
            else:
                out[present] = cid
        out[unknown & (out == 0)] = CELLMAP_UNKNOWN
        return out


def _atoms(cellmap_id: int) -> frozenset[int]:
    return frozenset(_parts(cellmap_id) or (cellmap_id,))


def overlap_only(a: int, b: int) -> bool:
    """Two CellMap classes that share atomic parts, neither holding the other (nuc 37, er 16)."""
    x, y = _atoms(a), _atoms(b)
    return bool(x & y) and not x <= y and not y <= x


def meet_of(a: int, b: int) -> int:
    """The CellMap class made of exactly the parts ``a`` and ``b`` share, else 255 (unknown).

    >>> from datalists.cellmap_classes import CELLMAP_CLASSES as C
    >>> CELLMAP_BY_ID[meet_of(C["nuc"].cellmap_id, C["er"].cellmap_id)].name
    'ne'
    """
    shared = _atoms(a) & _atoms(b)
    return next((c for c in sorted(CELLMAP_BY_ID) if _atoms(c) == shared), CELLMAP_UNKNOWN)


def _parts(cellmap_id: int) -> tuple[int, ...]:
    return CELLMAP_BY_ID[cellmap_id].parts


def _store_path(group: zarr.hierarchy.Group) -> str:
    return str(getattr(group.store, "path", "") or "")


def check_label_dtype(arr: Any, where: str, allow_bool: bool = False) -> None:
    """Refuse a label array whose values are not integers (float, complex, strings, ...).

    Labels are class ids or instance ids: a float array cannot index the class lookup and
    a value like 2.5 has no class, so it is never cast silently (not even 2.0: an
    integral-looking float array usually means a wrong export).

    >>> check_label_dtype(np.zeros(2, np.float32), "c/all/s0")
    Traceback (most recent call last):
    ...
    converters.cellmap.zarr_tree.CellMapFormatError: c/all/s0: label array of dtype float32; labels must be \
integer class ids / instance ids: cast it with astype (e.g. np.uint8, or np.uint32 for instance ids; round or \
fix non-integral values first) before writing it, then run the same command again
    """
    kind = np.dtype(arr.dtype).kind
    if kind in "ui" or (allow_bool and kind == "b"):
        return
    raise cz.CellMapFormatError(
        f"{where}: label array of dtype {np.dtype(arr.dtype)}; labels must be integer class ids / instance ids: cast "
        "it with astype (e.g. np.uint8, or np.uint32 for instance ids; round or fix non-integral values first) "
        "before writing it, then run the same command again")


def label_source(gt: zarr.hierarchy.Group, gt_group: str, statuses: dict[str, cz.ClassStatus],
                 grid: Grid | None = None):
    """The CellMap-id volume of a crop: its ``all`` array, or one composed from class arrays.

    Returns ``(source, how)``; ``source`` is None when no annotated class has an array.
    Arrays are wrapped in :class:`~converters.cellmap.zarr_tree.CheckedArray`, so a damaged
    chunk is reported with its array and chunk key. ``grid`` is the crop's grid (what the
    labels are resampled from): a class array composed on another grid, or a multiscale
    group whose levels disagree, raises :class:`~converters.cellmap.zarr_tree.CellMapFormatError`
    naming the array.
    """
    crop = gt[gt_group]
    where = f"{_store_path(gt)}/{gt_group}"
    partial_all = ""
    # one value per voxel in `all` cannot say "nuc and er" where a crop annotates both as groups: their
    # arrays can (ComposedLabels writes what they share), so they are read instead
    with_arrays = [n for n, st in statuses.items() if st.annotated and n in CELLMAP_CLASSES and n in crop]
    if "all" in crop and not overlap_warnings(with_arrays):
        levels = _levels(crop["all"], f"{where}/all")
        arr = cz.level_array(crop["all"], levels[0], f"{where}/all")
        gone = cz.missing_chunks(arr)
        # chunks missing from `all` read as 0: the class arrays (checked against their counts) say more, if any
        if arr.nchunks_initialized > 0 and not (gone and any(
                st.annotated and name in CELLMAP_CLASSES and name in crop for name, st in statuses.items())):
            check_label_dtype(arr, f"{where}/all/{levels[0].path}")
            return cz.CheckedArray(arr, f"{where}/all/{levels[0].path}"), f"all array {where}/all/{levels[0].path}" + (
                f" ({len(gone)} of {arr.nchunks} chunk(s) not on disk, read as {arr.fill_value})" if gone else "")
        if arr.nchunks_initialized > 0:
            partial_all = f"; {where}/all/{levels[0].path} lacks {len(gone)} of {arr.nchunks} chunk(s)"
    arrays, grids = [], []
    for name, st in statuses.items():
        # a class annotated but not listed in the datasplit still says what its voxels are
        if (st.annotated or st.reason == cz.NOT_LISTED) and name in CELLMAP_CLASSES and name in crop:
            levels = _levels(crop[name], f"{where}/{name}")
            arr = cz.level_array(crop[name], levels[0], f"{where}/{name}")
            path = f"{where}/{name}/{levels[0].path}"
            check_label_dtype(arr, path, allow_bool=True)
            grids.append((path, Grid(levels[0].translation, levels[0].scale, arr.shape)))
            arrays.append((CELLMAP_CLASSES[name].cellmap_id, cz.CheckedArray(arr, path),
                           st.instance, _encoding(arr, crop[name])))
    if not arrays:
        return None, "none"
    _check_same_grid(grids, grid, where)
    return ComposedLabels(arrays), f"per-class arrays of {where}{partial_all}"


def _levels(group: zarr.hierarchy.Group, where: str) -> list:
    """A label group's levels, refused when they disagree (:func:`check_level_extents`)."""
    levels = cz.read_levels(group, where)
    check_level_extents(group, levels, where, cz.CellMapFormatError)
    return levels


def _check_same_grid(grids: Sequence[tuple[str, Grid]], crop_grid: Grid | None, where: str) -> None:
    """Refuse class arrays (composed voxel by voxel) that do not share one grid, the crop's."""
    ref_path, ref = (f"the crop {where}", crop_grid) if crop_grid is not None else grids[0]
    for path, g in grids:
        if not same_grid(g, ref):
            raise cz.CellMapFormatError(
                f"{path}: this class array ({grid_text(g)}) is not on the grid of {ref_path} ({grid_text(ref)}); "
                "the crop has no 'all' array with data, so its labels are composed voxel by voxel from the class "
                "arrays, which must all have the same shape, scale and translation: download the crop again (or "
                "fix that array or its .zattrs), or leave the crop out of the datasplit")


def lookup(lut: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Map CellMap ids to ours; values past the table are not annotated.

    >>> lookup(np.array([0, 7, 255], np.uint8), np.array([0, 1, 300, -1]))
    array([  0,   7, 255, 255], dtype=uint8)
    """
    if block.dtype.itemsize > 1 or block.dtype.kind != "u":
        block = np.where((block >= 0) & (block < lut.size), block, lut.size - 1)
    return lut[block]


class LabelMapper:
    """``post`` of the label resampling: CellMap ids to ours, counting unknown source values.

    ``counts`` maps each source value the lookup sends to :data:`UNANNOTATED` (with
    :func:`~converters.cellmap.class_mapping.cellmap_lookup`: every value that is no CellMap class,
    255 unknown say) to the number of output voxels it gave. Only those voxels are counted,
    so a crop without unknown values costs one comparison, not a ``unique`` of every voxel.

    >>> m = LabelMapper(np.r_[np.zeros(255, np.uint8), [255]].astype(np.uint8))
    >>> m(np.array([0, 255, 255, 3000])).tolist(), m.counts
    ([0, 255, 255, 255], {255: 2, 3000: 1})
    """

    def __init__(self, lut: np.ndarray):
        self.lut = lut
        self.counts: dict[int, int] = {}

    def __call__(self, block: np.ndarray) -> np.ndarray:
        out = lookup(self.lut, block)
        unknown = out == UNANNOTATED
        if unknown.any():
            values, n = fastremap.unique(block[unknown], return_counts=True)
            for v, c in zip(values.tolist(), n.tolist()):
                self.counts[int(v)] = self.counts.get(int(v), 0) + int(c)
        return out
