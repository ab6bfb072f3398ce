"""Physical grids, NIfTI affines and EM level choice for CellMap crops.

Conventions (documented in the README):

* CellMap arrays and every ``Grid`` here are in **z, y, x** order, in **nanometres**.
  The physical position of voxel index ``i`` is ``origin + i * spacing`` (the voxel
  centre), exactly as OME-NGFF ``translation`` + ``scale`` define it.
* NIfTI files we write hold the array transposed to **x, y, z** (NIfTI's i, j, k), so the
  affine is diagonal: world x = i·sx + ox, world y = j·sy + oy, world z = k·sz + oz, with
  world units nm. A C-ordered z,y,x array transposed is Fortran-ordered x,y,z, which is
  how NIfTI stores data, so the transpose costs no copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "Grid",
    "output_grid",
    "grid_from_extent",
    "nifti_affine",
    "grid_from_nifti_affine",
    "source_coordinates",
    "split_into_tiles",
    "longest_axis",
    "max_slabs",
    "split_into_slabs",
    "split_into_fold_tiles",
]

# Relative tolerance when comparing voxel sizes (float noise in OME metadata).
_REL_TOL = 1e-3


@dataclass(frozen=True)
class Grid:
    """A regular 3D voxel grid in physical space (z, y, x; nm; voxel centres).

    Examples
    --------
    >>> g = Grid(origin=(4.0, 4.0, 4.0), spacing=(8.0, 8.0, 8.0), shape=(2, 3, 4))
    >>> g.lower_edge.tolist(), g.upper_edge.tolist()
    ([0.0, 0.0, 0.0], [16.0, 24.0, 32.0])
    """

    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        if any(s <= 0 for s in self.spacing):
            raise ValueError(f"voxel size must be positive, got {self.spacing}")

    @property
    def lower_edge(self) -> np.ndarray:
        """Physical position of the outer face of voxel 0 on each axis."""
        return np.asarray(self.origin) - np.asarray(self.spacing) / 2

    @property
    def upper_edge(self) -> np.ndarray:
        """Physical position of the outer face of the last voxel on each axis."""
        return np.asarray(self.origin) + (np.asarray(self.shape) - 0.5) * np.asarray(self.spacing)

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def sub_grid(self, start: Sequence[int], stop: Sequence[int]) -> "Grid":
        """The grid of the voxels ``start:stop`` (per axis) of this grid."""
        start_a = np.asarray(start)
        origin = np.asarray(self.origin) + start_a * np.asarray(self.spacing)
        return Grid(tuple(origin), self.spacing, tuple(np.asarray(stop) - start_a))


def grid_from_extent(lower: Sequence[float], upper: Sequence[float], spacing: Sequence[float]) -> Grid:
    """The grid of voxel size ``spacing`` that tiles the box ``[lower, upper]`` (voxel edges).

    The number of voxels is rounded to the nearest integer, at least 1, so the grid's
    extent equals the box up to half a voxel when the box is not a whole number of voxels.
    """
    lower_a, upper_a, sp = (np.asarray(v, dtype=np.float64) for v in (lower, upper, spacing))
    shape = np.maximum(1, np.round((upper_a - lower_a) / sp + 1e-9)).astype(np.int64)
    return Grid(tuple(lower_a + sp / 2), tuple(sp), tuple(shape))


def output_grid(source: Grid, target_spacing: Sequence[float]) -> Grid:
    """The grid at ``target_spacing`` covering the same physical box as ``source``.

    When ``target_spacing`` equals the source voxel size the result is ``source`` itself,
    so a label converted at its own resolution maps back voxel for voxel.

    >>> src = Grid((203.0, 331.0, 467.0), (8.0, 8.0, 8.0), (10, 20, 30))
    >>> output_grid(src, (8, 8, 8)) == src
    True
    >>> output_grid(src, (16, 16, 16)).shape
    (5, 10, 15)
    """
    if np.allclose(source.spacing, target_spacing, rtol=_REL_TOL, atol=0):
        return source
    return grid_from_extent(source.lower_edge, source.upper_edge, target_spacing)


def nifti_affine(grid: Grid) -> np.ndarray:
    """The 4×4 NIfTI affine (x, y, z world order, nm) of a z, y, x grid.

    >>> nifti_affine(Grid((1.0, 2.0, 3.0), (40.0, 6.0, 6.0), (2, 2, 2)))[:3].tolist()
    [[6.0, 0.0, 0.0, 3.0], [0.0, 6.0, 0.0, 2.0], [0.0, 0.0, 40.0, 1.0]]
    """
    aff = np.eye(4)
    aff[[0, 1, 2], [0, 1, 2]] = grid.spacing[::-1]
    aff[:3, 3] = grid.origin[::-1]
    return aff


def grid_from_nifti_affine(affine: np.ndarray, shape_xyz: Sequence[int]) -> Grid:
    """Inverse of :func:`nifti_affine`: the z, y, x grid of a NIfTI image we wrote.

    Raises
    ------
    ValueError
        If the affine has rotations or flips (not an image this project wrote).
    """
    aff = np.asarray(affine, dtype=np.float64)
    lin = aff[:3, :3]
    if not np.allclose(lin, np.diag(np.diag(lin)), atol=1e-6) or np.any(np.diag(lin) <= 0):
        raise ValueError("affine is not axis-aligned with positive voxel sizes; cannot map it to a CellMap grid")
    return Grid(tuple(aff[:3, 3][::-1]), tuple(np.diag(lin)[::-1]), tuple(shape_xyz[::-1]))


def source_coordinates(out_grid: Grid, src_origin: Sequence[float], src_spacing: Sequence[float]) -> list[np.ndarray]:
    """Fractional source indices of every output voxel centre, one array per axis.

    >>> c = source_coordinates(Grid((203.0, 0, 0), (8.0, 8, 8), (2, 1, 1)), (4.0, 4, 4), (16.0, 16, 16))
    >>> c[0].tolist()
    [12.4375, 12.9375]
    """
    coords = []
    for ax in range(3):
        pos = out_grid.origin[ax] + np.arange(out_grid.shape[ax], dtype=np.float64) * out_grid.spacing[ax]
        coords.append((pos - float(src_origin[ax])) / float(src_spacing[ax]))
    return coords


def split_into_tiles(shape: Sequence[int], max_voxels: int | None) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Split a z, y, x shape into near-equal boxes of at most ``max_voxels`` voxels.

    Returns ``(start, stop)`` pairs in C order. The largest axis is halved first, so
    tiles stay close to cubes.

    >>> [t for t in split_into_tiles((4, 4, 8), 64)]
    [((0, 0, 0), (4, 4, 4)), ((0, 0, 4), (4, 4, 8))]
    """
    shape_a = np.asarray(shape, dtype=np.int64)
    n_split = np.ones(3, dtype=np.int64)
    if max_voxels is not None and max_voxels > 0:
        while np.prod(-(-shape_a // n_split)) > max_voxels:
            tile = -(-shape_a // n_split)
            ax = int(np.argmax(tile))
            if tile[ax] <= 1:
                break
            n_split[ax] += 1
    bounds = [np.linspace(0, shape_a[ax], n_split[ax] + 1).round().astype(np.int64) for ax in range(3)]
    tiles = []
    for i in range(n_split[0]):
        for j in range(n_split[1]):
            for k in range(n_split[2]):
                start = (int(bounds[0][i]), int(bounds[1][j]), int(bounds[2][k]))
                stop = (int(bounds[0][i + 1]), int(bounds[1][j + 1]), int(bounds[2][k + 1]))
                tiles.append((start, stop))
    return tiles


def longest_axis(shape: Sequence[int]) -> int:
    """The axis with the most voxels (the first of equals): where a crop is cut into slabs.

    >>> longest_axis((16, 768, 704))
    1
    """
    return int(np.argmax(np.asarray(shape)))


def max_slabs(length: int, gap: int, min_thickness: int) -> int:
    """How many slabs of at least ``min_thickness`` voxels, ``gap`` voxels apart, fit in ``length``.

    >>> max_slabs(64, 16, 16), max_slabs(47, 16, 16), max_slabs(768, 16, 16)
    (2, 1, 24)
    """
    return max(1, (int(length) + int(gap)) // (max(1, int(min_thickness)) + int(gap)))


def split_into_slabs(length: int, parts: int, gap: int) -> list[tuple[int, int]]:
    """Cut ``0..length`` into ``parts`` near-equal runs with ``gap`` voxels left out between runs.

    Returns ``(start, stop)`` pairs in order; the voxels between one run's stop and the
    next run's start belong to no run.

    >>> split_into_slabs(64, 2, 16)
    [(0, 24), (40, 64)]
    >>> split_into_slabs(10, 1, 16)
    [(0, 10)]
    """
    if parts < 1 or gap < 0:
        raise ValueError(f"need parts >= 1 and gap >= 0, got parts={parts}, gap={gap}")
    usable = int(length) - (parts - 1) * int(gap)
    if usable < parts:
        raise ValueError(f"{length} voxels cannot hold {parts} slabs {gap} voxels apart")
    edges = np.linspace(0, usable, parts + 1).round().astype(np.int64)
    return [(int(edges[p]) + p * gap, int(edges[p + 1]) + p * gap) for p in range(parts)]


def split_into_fold_tiles(shape: Sequence[int], max_voxels: int | None, parts: int = 1, gap: int = 0,
                          axis: int | None = None) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """Tiles of a z, y, x shape cut first into ``parts`` slabs (one per fold) along ``axis``.

    Slabs are ``gap`` voxels apart (:func:`split_into_slabs`; default axis: the longest);
    each slab is then tiled with :func:`split_into_tiles`. Returns ``(start, stop, part)``
    triples. With ``parts=1`` the tiles are exactly :func:`split_into_tiles`'s.

    >>> [(t[0][1], t[1][1], t[2]) for t in split_into_fold_tiles((4, 64, 8), None, parts=2, gap=16)]
    [(0, 24, 0), (40, 64, 1)]
    """
    ax = longest_axis(shape) if axis is None else int(axis)
    slabs = split_into_slabs(int(shape[ax]), parts, gap) if parts > 1 else [(0, int(shape[ax]))]
    out = []
    for part, (lo, hi) in enumerate(slabs):
        slab_shape = list(shape)
        slab_shape[ax] = hi - lo
        for start, stop in split_into_tiles(slab_shape, max_voxels):
            shift = [lo if a == ax else 0 for a in range(3)]
            out.append((tuple(s + d for s, d in zip(start, shift)), tuple(s + d for s, d in zip(stop, shift)), part))
    return out
