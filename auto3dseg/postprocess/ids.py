"""Instance ids: a dtype that never wraps, physical sizes in voxels, the size filter."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cc3d
import fastremap
import numpy as np

__all__ = ["label_components", "remove_small_objects", "renumber_by_size", "smallest_id_dtype", "voxels_for_volume"]


def smallest_id_dtype(n_max: int) -> np.dtype:
    """Smallest unsigned dtype for instance ids up to ``n_max``; never uint8.

    The CellMap scorer relabels instance arrays, so ids must not wrap: uint8 is never
    used (it would on the 256th object), uint16 up to 65,535 ids, uint32 up to
    2**32 - 1, else uint64.

    Examples
    --------
    >>> [smallest_id_dtype(n).name for n in (0, 255, 65_535, 65_536, 2**32)]
    ['uint16', 'uint16', 'uint16', 'uint32', 'uint64']
    """
    if n_max < 0:
        raise ValueError(f"n_max must be >= 0, got {n_max}")
    for dtype in (np.uint16, np.uint32):
        if n_max <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def voxels_for_volume(size_nm3: float, spacing: Sequence[float]) -> int:
    """Fewest voxels of ``spacing`` (nm per axis) whose volume reaches ``size_nm3``.

    Examples
    --------
    >>> voxels_for_volume(5000, (10, 10, 10)), voxels_for_volume(5001, (10, 10, 10)), voxels_for_volume(0, (8, 8, 8))
    (5, 6, 0)
    """
    # the tolerance keeps 3 * 512 nm³ at 3 voxels despite floating-point rounding
    return max(0, math.ceil(size_nm3 / math.prod(float(s) for s in spacing) - 1e-9))


def remove_small_objects(labels: np.ndarray, min_voxels: int, *, in_place: bool = False) -> np.ndarray:
    """Set to 0 every id of ``labels`` with fewer than ``min_voxels`` voxels.

    One count over the array (``fastremap.unique``) and one masking pass
    (``fastremap.mask``), whatever the number of ids. Ids are counted as a whole,
    connected or not; the others keep their values (not renumbered).

    Parameters
    ----------
    labels : ndarray of int
        Instance ids, 0 background.
    min_voxels : int
        Objects with fewer voxels than this are removed.
    in_place : bool
        Modify ``labels`` instead of a copy.

    Examples
    --------
    >>> labels = np.array([1, 1, 1, 0, 2, 0, 3, 3], dtype=np.uint16)
    >>> remove_small_objects(labels, 2)
    array([1, 1, 1, 0, 0, 0, 3, 3], dtype=uint16)
    """
    ids, counts = fastremap.unique(labels, return_counts=True)
    small = ids[(counts < min_voxels) & (ids != 0)]
    if small.size == 0:
        return labels if in_place else labels.copy()
    return fastremap.mask(labels, small, in_place=in_place)


def renumber_by_size(labels: np.ndarray, min_voxels: int = 1, mask: np.ndarray | None = None) -> np.ndarray:
    """Ids ``1..N`` in order of first id, objects under ``min_voxels`` removed, in
    :func:`smallest_id_dtype` ``(N)``.

    Memory stays within the output plus a few bytes per voxel whatever the foreground: a sparse
    mask (at most 1/8 of the voxels) is relabelled through its foreground voxels only, a dense
    one through a lookup table over every voxel (``fastremap`` counts, no 8-byte index per
    voxel: a 1000³ ``cell`` mask would need 8 GB of them).

    Parameters
    ----------
    labels : ndarray of int
        Ids, 0 background (any order, gaps allowed).
    min_voxels : int
        Objects with fewer voxels are set to 0.
    mask : ndarray of bool, optional
        ``labels != 0`` when the caller already has it.

    Examples
    --------
    >>> renumber_by_size(np.array([0, 7, 7, 3, 9, 9, 9], dtype=np.int64), min_voxels=2)
    array([0, 1, 1, 0, 2, 2, 2], dtype=uint16)
    """
    mask = labels != 0 if mask is None else mask
    if np.count_nonzero(mask) <= labels.size // 8:
        fg = np.flatnonzero(mask)
        ids = labels.ravel()[fg]
        keep = np.bincount(ids, minlength=1) >= max(int(min_voxels), 1)
        keep[0] = False
        n = int(keep.sum())
        new_ids = np.zeros(keep.size, dtype=smallest_id_dtype(n))
        new_ids[keep] = np.arange(1, n + 1)
        out = np.zeros(labels.shape, dtype=new_ids.dtype)
        out.ravel()[fg] = new_ids[ids]
        return out
    ids, counts = fastremap.unique(labels, return_counts=True)
    kept = ids[(ids != 0) & (counts >= max(int(min_voxels), 1))]
    lut = np.zeros(int(ids.max(initial=0)) + 1, dtype=smallest_id_dtype(kept.size))
    lut[kept] = np.arange(1, kept.size + 1)
    return lut[labels]


def label_components(mask: np.ndarray, connectivity: int, *, out_dtype: type | None = None,
                     return_N: bool = False) -> np.ndarray | tuple[np.ndarray, int]:
    """``cc3d.connected_components`` of a binary mask, safe in 2-D.

    connected-components-3d 4.1.1 labels boolean 2-D arrays wrongly with connectivity 8
    (some background pixels get ids; found here on random masks against
    ``scipy.ndimage.label``); the same mask viewed as uint8 is labelled right, and costs
    no copy. Every binary labelling in the project goes through this function.

    Examples
    --------
    >>> label_components(np.array([[1, 1, 0, 0, 1, 0, 1]], dtype=bool), 8, out_dtype=np.uint32)
    array([[1, 1, 0, 0, 2, 0, 3]], dtype=uint32)
    """
    m = np.ascontiguousarray(mask)
    if m.dtype == bool:
        m = m.view(np.uint8)
    return cc3d.connected_components(m, connectivity=connectivity, out_dtype=out_dtype, return_N=return_N)
