"""From a class mask to instance ids: components, optional split, size filter, renumbering."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auto3dseg.postprocess.ids import (
    label_components,
    remove_small_objects,
    renumber_by_size,
    smallest_id_dtype,
    voxels_for_volume,
)
from auto3dseg.postprocess.split import split_touching

__all__ = ["label_instances", "remove_small_objects", "smallest_id_dtype", "split_touching", "voxels_for_volume"]


def label_instances(mask: np.ndarray, spacing: Sequence[float], *, connectivity: int = 26,
                    min_size_nm3: float = 0.0, watershed: bool = False, min_distance_nm: float = 40.0,
                    h_nm: float = 0.0, parallel: int = 1) -> np.ndarray:
    """Instance ids of a binary mask, ready for a CellMap submission.

    Connected components (``cc3d``), optionally split where objects touch
    (:func:`split_touching`), objects below ``min_size_nm3`` removed, ids renumbered
    1..N and stored in :func:`smallest_id_dtype` ``(N)`` (never uint8, never wrapping).
    Sizes are counted and ids rewritten on the foreground voxels only, in one pass.

    Parameters
    ----------
    mask : ndarray of bool
        Foreground of the class, 2-D or 3-D.
    spacing : sequence of float
        Voxel size per axis in nm, in the axis order of ``mask``.
    connectivity : int
        6, 18 or 26 (3-D), 4 or 8 (2-D).
    min_size_nm3 : float
        Objects with a smaller volume (voxels × voxel volume) are removed.
    watershed : bool
        Split touching objects (seeded watershed on the distance transform).
    min_distance_nm, h_nm : float
        Seed spacing and h-maxima height of the split, see :func:`split_touching`.
    parallel : int
        Threads for the distance transform.

    Returns
    -------
    ndarray of uint16, uint32 or uint64
        0 background, objects 1..N.

    Examples
    --------
    >>> mask = np.zeros((1, 4, 9), dtype=bool)
    >>> mask[0, 1:3, 0:2] = True   # 4 voxels
    >>> mask[0, 1:3, 4:9] = True   # 10 voxels
    >>> label_instances(mask, (8.0, 8.0, 8.0), min_size_nm3=5 * 512)[0]
    array([[0, 0, 0, 0, 0, 0, 0, 0, 0],
           [0, 0, 0, 0, 1, 1, 1, 1, 1],
           [0, 0, 0, 0, 1, 1, 1, 1, 1],
           [0, 0, 0, 0, 0, 0, 0, 0, 0]], dtype=uint16)
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if watershed:
        labels = split_touching(mask, spacing, min_distance_nm, h_nm=h_nm, connectivity=connectivity,
                                parallel=parallel)
    else:
        labels = label_components(mask, connectivity)
    # both give ids 1..N: size filter and renumbering in one lookup table over the foreground
    return renumber_by_size(labels, voxels_for_volume(min_size_nm3, spacing), mask=mask)
