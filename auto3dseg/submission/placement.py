"""Put a label array defined on one physical grid onto another (CellMap's scorer rules).

A CellMap array is placed by its ``voxel_size`` and ``translation`` (z, y, x, nm; the
translation is the centre of voxel 0). Moving a prediction to a test crop's grid, or a
submission to the truth's grid, is the same operation: instance ids by nearest neighbour,
semantic masks linearly and then ``> 0.5``, zero outside the source.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from converters.geometry import Grid, source_coordinates
from converters.resample import resample_into

__all__ = ["grid_of", "grids_align", "outside_share", "place_on_grid"]


def grids_align(src: Grid, dst: Grid, tol: float = 1e-3) -> bool:
    """True when ``dst``'s voxels are a subset of ``src``'s lattice (same voxel size and an
    integer offset): placing is then a crop/pad with no resampling."""
    if not np.allclose(src.spacing, dst.spacing, rtol=tol, atol=0):
        return False
    offset = (np.asarray(dst.origin) - np.asarray(src.origin)) / np.asarray(src.spacing)
    return bool(np.allclose(offset, np.round(offset), atol=tol))


def place_on_grid(array: np.ndarray, src: Grid, dst: Grid, kind: str, out_dtype: np.dtype | type | None = None,
                  ) -> np.ndarray:
    """``array`` (z, y, x, on grid ``src``) resampled onto grid ``dst``.

    Parameters
    ----------
    array : ndarray
        Label array on ``src``: 0/1 (``kind="semantic"``) or instance ids (``"instance"``).
    src, dst : Grid
        Physical grids (voxel centres, nm, z/y/x).
    kind : {"semantic", "instance"}
        Semantic: linear interpolation, then ``> 0.5`` (uint8 0/1). Instance: nearest.
    out_dtype : dtype, optional
        Output dtype for instances (default: the input's).

    Examples
    --------
    >>> a = np.zeros((1, 1, 4), np.uint8); a[0, 0, 2:] = 1
    >>> src = Grid((0.0, 0.0, 0.0), (8.0, 8.0, 8.0), (1, 1, 4))
    >>> dst = Grid((0.0, 0.0, 4.0), (8.0, 8.0, 4.0), (1, 1, 6))     # finer, shifted by half a voxel
    >>> place_on_grid(a, src, dst, "semantic")[0, 0].tolist()
    [0, 0, 0, 1, 1, 1]
    """
    if kind not in ("semantic", "instance"):
        raise ValueError(f"kind must be 'semantic' or 'instance', got {kind!r}")
    if tuple(array.shape) != tuple(src.shape):
        raise ValueError(f"array shape {array.shape} does not match its grid {src.shape}")
    coords = source_coordinates(dst, src.origin, src.spacing)
    if kind == "instance":
        out = np.zeros(dst.shape, dtype=out_dtype or array.dtype)
        resample_into(array, coords, out, "nearest", pad_value=0)
        return out
    if grids_align(src, dst):
        out = np.zeros(dst.shape, dtype=np.uint8)
        resample_into((array > 0).astype(np.uint8, copy=False), coords, out, "nearest", pad_value=0)
        return out
    out = np.zeros(dst.shape, dtype=np.uint8)
    resample_into(np.asarray(array > 0, dtype=np.float32), coords, out, "linear", pad_value=0,
                  post=lambda block: (block > 0.5).astype(np.uint8))
    return out


def grid_of(voxel_size: Sequence[float], translation: Sequence[float], shape: Sequence[int]) -> Grid:
    """The Grid of a CellMap array from its ``voxel_size``, ``translation`` and ``shape``."""
    return Grid(tuple(translation), tuple(voxel_size), tuple(shape))


def outside_share(dst: Grid, sources: Sequence[Grid]) -> float:
    """Share of ``dst``'s voxel centres that no grid of ``sources`` covers (they are written 0).

    ``sources`` are the tiles of one image, which do not overlap. A test crop placed partly or
    wholly outside its converted image (a manifest of another conversion) gets an empty margin.

    Examples
    --------
    >>> image = Grid((0.0, 0.0, 0.0), (8.0, 8.0, 8.0), (4, 4, 4))
    >>> outside_share(Grid((0.0, 0.0, 16.0), (8.0, 8.0, 8.0), (4, 4, 4)), [image])
    0.5
    >>> outside_share(image, [image]), outside_share(Grid((0.0, 0.0, 1e5), (8.0, 8.0, 8.0), (4, 4, 4)), [image])
    (0.0, 1.0)
    """
    total = int(np.prod(dst.shape))
    if not total:
        return 0.0
    covered = 0
    for src in sources:
        inside = 1
        for ax in range(3):
            pos = dst.origin[ax] + np.arange(dst.shape[ax], dtype=np.float64) * dst.spacing[ax]
            inside *= int(np.count_nonzero((pos >= src.lower_edge[ax]) & (pos < src.upper_edge[ax])))
        covered += inside
    return max(0.0, 1.0 - min(covered, total) / total)
