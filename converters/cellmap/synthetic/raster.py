"""Rasterizing a :class:`~converters.cellmap.synthetic.cell_scene.CellScene` on any block of any grid, and
the per-class ground truth of a rasterized block.

Every voxel is a function of its physical position only: the same voxel gets the same
class, cell and owner whatever block it is computed in (only IEEE-exact arithmetic and
comparisons, no transcendental functions). Only the pieces whose bounds meet the block
are evaluated, each on its own window; an ellipsoid is a quadratic form (two full-size
additions of 2-D tables), and its approximate signed distance is computed only where the
layers need it (the shell band), bounded by ``depth >= (1 - k0) * min(semi_axes)``.

Examples
--------
>>> from converters.cellmap.synthetic.cell_scene import CropNeed, build_cell_scene
>>> need = CropNeed((0.0, 0.0, 0.0), (384.0, 640.0, 640.0), ("mito",))
>>> scene = build_cell_scene("d", (0, 1), need.lo, need.hi, [need], anchor=need)
>>> r = rasterize_block(scene, (4.0, 4.0, 4.0), (8.0, 8.0, 8.0), (0, 0, 0), (48, 80, 80))
>>> r.atomic.shape, bool((class_block("mito", r, scene) > 0).any())
((48, 80, 80), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

from datalists.cellmap_classes import CELLMAP_CLASSES

from .cell_scene import Body, BoxedEllipsoid, CellScene, Disc
from .layout import _cid
from .scale_classes import HCHROM_BAND_NM, PORE_INNER_NM, layer_class_ids, semantic_lut
from .shapes import Ellipsoid, Tube

_ECS, _NUCPL, _HCHROM, _NP_IN = _cid("ecs"), _cid("nucpl"), _cid("hchrom"), _cid("np_in")
SLAB = 16  #: planes of a piece's window evaluated at a time


@dataclass
class Raster:
    """A rasterized block: atomic class ids, cell index (1-based, 0 = ecs) and owner body
    (1-based, 0 = none) per voxel, and the block's voxel-centre axes (nm)."""

    atomic: np.ndarray
    cell: np.ndarray
    owner: np.ndarray
    axes: tuple[np.ndarray, np.ndarray, np.ndarray]


def wave(phase: np.ndarray) -> np.ndarray:
    """A smooth periodic function of period 1 in ``[-1, 1]`` (a cosine look-alike built from
    a smoothstepped triangle wave: exact arithmetic only, so it is reproducible anywhere).

    >>> [round(float(v), 3) for v in wave(np.array([0.0, 0.25, 0.5]))]
    [1.0, 0.0, -1.0]
    """
    t = np.abs(2.0 * (phase - np.floor(phase)) - 1.0)
    return 2.0 * t * t * (3.0 - 2.0 * t) - 1.0


def grid_axes(origin: Sequence[float], spacing: Sequence[float], start: Sequence[int],
              shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates ``origin + i * spacing`` of indices ``start .. start + shape``."""
    return tuple(float(origin[k]) + (int(start[k]) + np.arange(int(shape[k]), dtype=np.float64)) * float(spacing[k])
                 for k in range(3))  # type: ignore[return-value]


def _window(axes, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    sl = []
    for k in range(3):
        a, b = int(np.searchsorted(axes[k], lo[k], "left")), int(np.searchsorted(axes[k], hi[k], "right"))
        if b <= a:
            return None
        sl.append(slice(a, b))
    return tuple(sl)  # type: ignore[return-value]


@lru_cache(maxsize=4096)
def _quadratic(semi: tuple, rotation: tuple, power: int) -> np.ndarray:
    """``M = R^T diag(r^-power) R``: ``(p - c)^T M (p - c)`` is ``k0^2`` (power 2) or ``k1^2`` (4)."""
    rot = np.asarray(rotation, dtype=np.float64)
    return rot.T @ np.diag(np.asarray(semi, dtype=np.float64) ** -power) @ rot


def _quad_form(m: np.ndarray, dz: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """``d^T M d`` on the grid ``dz x dy x dx`` as float32: three 2-D tables, two full additions."""
    zy = (m[0, 0] * dz * dz)[:, None] + (m[1, 1] * dy * dy)[None, :] + 2.0 * m[0, 1] * dz[:, None] * dy[None, :]
    zx = (m[2, 2] * dx * dx)[None, :] + 2.0 * m[0, 2] * dz[:, None] * dx[None, :]
    yx = 2.0 * m[1, 2] * dy[:, None] * dx[None, :]
    out = zy.astype(np.float32)[:, :, None] + zx.astype(np.float32)[:, None, :]
    out += yx.astype(np.float32)[None, :, :]
    return out


def _quad_points(m: np.ndarray, d: tuple) -> np.ndarray:
    """``d^T M d`` per point, element-wise in a fixed order (no BLAS: the same bits for a voxel
    whatever else is in the batch)."""
    return (m[0, 0] * d[0] * d[0] + m[1, 1] * d[1] * d[1] + m[2, 2] * d[2] * d[2]
            + 2.0 * m[0, 1] * d[0] * d[1] + 2.0 * m[0, 2] * d[0] * d[2] + 2.0 * m[1, 2] * d[1] * d[2])


def _ellipsoid_depth(e: Ellipsoid, ax, max_depth: float, box: BoxedEllipsoid | None = None
                     ) -> tuple[np.ndarray, tuple, np.ndarray]:
    """Inside mask, indices of inside voxels shallower than ``max_depth`` (by the bound) and their
    approximate depth ``k0 (1 - k0) / k1`` in nm (with a box: at most the distance to its faces;
    the window lies inside the box)."""
    c = e.centre
    dz, dy, dx = ax[0] - c[0], ax[1] - c[1], ax[2] - c[2]
    k0sq = _quad_form(_quadratic(e.semi_axes, e.rotation, 2), dz, dy, dx)
    inside = k0sq <= 1.0
    rmin = min(e.semi_axes)
    if max_depth <= 0:
        return inside, (), np.zeros(0)
    shallow = k0sq > ((1.0 - max_depth / rmin) ** 2 if max_depth < rmin else -1.0)
    if box is not None:
        face = [np.minimum(ax[k] - box.lo[k], box.hi[k] - ax[k]) for k in range(3)]
        shallow |= ((face[0] < max_depth)[:, None, None] | (face[1] < max_depth)[None, :, None]
                    | (face[2] < max_depth)[None, None, :])
    idx = np.nonzero(inside & shallow)
    d = (dz[idx[0]], dy[idx[1]], dx[idx[2]])
    k0 = np.sqrt(_quad_points(_quadratic(e.semi_axes, e.rotation, 2), d))
    k1 = np.sqrt(_quad_points(_quadratic(e.semi_axes, e.rotation, 4), d))
    depth = np.where(k1 > 0, k0 * (1.0 - k0) / np.where(k1 > 0, k1, 1.0), rmin)
    if box is not None:
        depth = np.minimum(depth, np.minimum(np.minimum(face[0][idx[0]], face[1][idx[1]]), face[2][idx[2]]))
    return inside, idx, depth


def _capsule_depth(t: Tube, ax) -> np.ndarray:
    """Depth below the surface (nm, negative outside) of a one-segment tube, float32."""
    a, b = np.asarray(t.points[0]), np.asarray(t.points[1])
    ab = b - a
    l2 = float(ab @ ab)
    d = [ax[k] - a[k] for k in range(3)]
    dot = (ab[0] * d[0])[:, None, None] + (ab[1] * d[1])[None, :, None] + (ab[2] * d[2])[None, None, :]
    sq = (d[0] ** 2)[:, None, None] + (d[1] ** 2)[None, :, None] + (d[2] ** 2)[None, None, :]
    s = np.clip(dot / l2, 0.0, 1.0) if l2 > 0 else np.zeros_like(dot)
    dist2 = np.maximum(sq - s * (2.0 * dot - s * l2), 0.0)
    return t.radius - np.sqrt(dist2)


def _disc_classes(disc: Disc, ax) -> tuple[np.ndarray, np.ndarray]:
    """Inside mask of a pore and, inside, whether each voxel is in its core (``np_in``)."""
    n, c = disc.axis, disc.centre
    d = [ax[k] - c[k] for k in range(3)]
    s = (n[0] * d[0])[:, None, None] + (n[1] * d[1])[None, :, None] + (n[2] * d[2])[None, None, :]
    sq = (d[0] ** 2)[:, None, None] + (d[1] ** 2)[None, :, None] + (d[2] ** 2)[None, None, :]
    rad2 = sq - s * s
    inside = (np.abs(s) <= disc.half_height) & (rad2 <= disc.radius**2)
    return inside, rad2 <= PORE_INNER_NM**2


def _hchrom(scene: CellScene, pts: np.ndarray) -> np.ndarray:
    """Where the chromatin band is heterochromatin: two crossed waves above a threshold."""
    w = scene.hchrom_waves / (2 * np.pi)
    ph = [pts[:, 0] * a + pts[:, 1] * b + pts[:, 2] * c + p for a, b, c, p in w[:2]]
    return (wave(ph[0]) + wave(ph[1])) > -0.4


def _classes(scene: CellScene, body: Body, shape, ax, sub_a, sub_o) -> tuple[np.ndarray, np.ndarray]:
    """Inside mask of one piece on its window and the class of each voxel of the window."""
    edges, ids = layer_class_ids(body.kind)
    if isinstance(shape, Disc):
        inside, core = _disc_classes(shape, ax)
        return inside, np.where(core, np.uint8(_NP_IN), ids[0])
    if isinstance(shape, Tube):
        depth = _capsule_depth(shape, ax)
        cls = ids[np.searchsorted(edges, depth, side="right")]
        # pieces of one tube: a later piece's shell never covers an earlier piece's lumen
        keep = (sub_o == body.owner) & (sub_a == ids[-1])
        return depth >= 0, np.where(keep, ids[-1], cls)
    nucleus = body.kind == "nucleus"
    band = HCHROM_BAND_NM[1] if nucleus else (float(edges[-1]) if len(edges) else 0.0)
    if isinstance(shape, BoxedEllipsoid):
        inside, idx, depth = _ellipsoid_depth(shape.ellipsoid, ax, band, shape)
    else:
        inside, idx, depth = _ellipsoid_depth(shape, ax, band)
    cls = np.full(inside.shape, ids[-1], dtype=np.uint8)
    if len(depth):
        layer = ids[np.searchsorted(edges, depth, side="right")]
        if nucleus:
            deep = (depth >= HCHROM_BAND_NM[0]) & (depth < HCHROM_BAND_NM[1])
            pts = np.stack([ax[k][idx[k][deep]] for k in range(3)], axis=1)
            layer[deep] = np.where(_hchrom(scene, pts), np.uint8(_HCHROM), np.uint8(_NUCPL))
        cls[idx] = layer
    return inside, cls


def _paint(r: Raster, scene: CellScene, body: Body, shape, win) -> None:
    # slabs of SLAB planes bound the temporaries of a big window (a cell, a nucleus)
    for z0 in range(win[0].start, win[0].stop, SLAB):
        w = (slice(z0, min(z0 + SLAB, win[0].stop)), win[1], win[2])
        ax = tuple(r.axes[k][w[k]] for k in range(3))
        sub_a, sub_c, sub_o = r.atomic[w], r.cell[w], r.owner[w]
        inside, cls = _classes(scene, body, shape, ax, sub_a, sub_o)
        np.copyto(sub_a, cls, where=inside)
        np.copyto(sub_c, np.int32(body.cell), where=inside)
        np.copyto(sub_o, np.int32(body.owner), where=inside)


def rasterize_block(scene: CellScene, origin: Sequence[float], spacing: Sequence[float],
                    start: Sequence[int], shape: Sequence[int]) -> Raster:
    """Rasterize the voxels ``start .. start + shape`` of the grid ``origin + i * spacing`` (nm).

    Returns
    -------
    Raster
        ``atomic`` uint8 (``ecs`` outside every cell), ``cell`` int32, ``owner`` int32.
    """
    axes = grid_axes(origin, spacing, start, shape)
    shp = tuple(int(s) for s in shape)
    r = Raster(np.full(shp, _ECS, dtype=np.uint8), np.zeros(shp, np.int32), np.zeros(shp, np.int32), axes)
    lo = np.array([a[0] for a in axes])
    hi = np.array([a[-1] for a in axes])
    for p in scene.pieces_in(lo, hi):
        win = _window(axes, scene.piece_lo[p], scene.piece_hi[p])
        if win is not None:
            b = int(scene.piece_body[p])
            _paint(r, scene, scene.bodies[b], scene.piece_shape[p], win)
    return r


def class_block(name: str, r: Raster, scene: CellScene) -> np.ndarray:
    """Ground truth of class ``name`` on a rasterized block.

    Instance classes give uint32 ids (``cell`` and ``nuc``: the cell's index; the others:
    the owning body's id); every other class gives a uint8 0/1 mask of its atomic parts.
    """
    cls = CELLMAP_CLASSES[name]
    if not cls.instance:
        return semantic_lut(name)[r.atomic]
    if name in ("cell", "nuc"):
        return np.where(semantic_lut(name)[r.atomic] > 0, r.cell, 0).astype(np.uint32)
    return scene.instance_lut(name)[r.owner]
