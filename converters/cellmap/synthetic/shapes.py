"""Analytic shapes in nanometre coordinates ``(z, y, x)``, their signed distances, and their
rasterization onto any voxel grid (atomic class map + instance ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from datalists.cellmap_classes import CELLMAP_CLASSES

from .layout import _IDENTITY, INSTANCE_KINDS, KIND_CLASSES, MEMBRANE_NM, Shape3, Vec3, _cid


# --------------------------------------------------------------------------------------
# Shapes and their signed distances
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid in nm.

    Attributes
    ----------
    centre : tuple of float
        Centre (z, y, x).
    semi_axes : tuple of float
        Semi-axes along the body axes.
    rotation : 3x3 tuple
        Rows map a world offset ``p - centre`` to body coordinates (``q = R @ (p - c)``).
    """

    centre: Vec3
    semi_axes: Vec3
    rotation: tuple[Vec3, Vec3, Vec3] = _IDENTITY


@dataclass(frozen=True)
class Tube:
    """A polyline tube (union of capsules) of constant ``radius`` in nm."""

    points: tuple[Vec3, ...]
    radius: float


@dataclass(frozen=True)
class HalfSpace:
    """The half-space ``(p - point) · normal <= 0`` (``normal`` need not be unit)."""

    point: Vec3
    normal: Vec3


@dataclass(frozen=True)
class SceneObject:
    """One organelle (or the cell) of a scene.

    Attributes
    ----------
    kind : str
        ``"cell"``, ``"mito"``, ``"ves"`` or ``"er"`` (see :data:`KIND_CLASSES`).
    shape : Ellipsoid or Tube
    cuts : tuple of HalfSpace
        The object is ``shape`` intersected with these half-spaces (a flat face where it
        is pressed against a neighbour).
    instance_id : int
        Instance id for ``mito`` / ``ves`` objects (0 for the others).
    tag : str
        A human-readable note (``"crop1 touching mito A"``).
    """

    kind: str
    shape: Ellipsoid | Tube
    cuts: tuple[HalfSpace, ...] = ()
    instance_id: int = 0
    tag: str = ""


@dataclass(frozen=True)
class Scene:
    """A dataset's analytic scene: one cell and the organelles inside it."""

    name: str
    cell: Ellipsoid
    objects: tuple[SceneObject, ...]


def _rotation_array(e: Ellipsoid) -> np.ndarray:
    return np.asarray(e.rotation, dtype=np.float64).reshape(3, 3)


def ellipsoid_sdf(e: Ellipsoid, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Approximate signed distance (nm, negative inside) to an ellipsoid.

    Uses ``k0 (k0 - 1) / k1`` with ``k0 = |q / r|`` and ``k1 = |q / r**2|``: exact for a
    sphere and accurate near the surface, which is where shells are decided.
    """
    rot = _rotation_array(e)
    d = (z - e.centre[0], y - e.centre[1], x - e.centre[2])
    r = np.asarray(e.semi_axes, dtype=np.float64)
    k0sq = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=np.float64)
    k1sq = np.zeros_like(k0sq)
    for k in range(3):
        q = rot[k, 0] * d[0] + rot[k, 1] * d[1] + rot[k, 2] * d[2]
        k0sq += (q / r[k]) ** 2
        k1sq += (q / r[k] ** 2) ** 2
    k0 = np.sqrt(k0sq)
    k1 = np.sqrt(k1sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        sdf = np.where(k1 > 0, k0 * (k0 - 1.0) / np.where(k1 > 0, k1, 1.0), -float(r.min()))
    return sdf


def tube_sdf(t: Tube, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Exact signed distance (nm) to a polyline tube."""
    p = (z, y, x)
    best: np.ndarray | None = None
    pts = np.asarray(t.points, dtype=np.float64)
    for a, b in zip(pts[:-1], pts[1:]):
        ab = b - a
        denom = float(ab @ ab)
        ap = [p[i] - a[i] for i in range(3)]
        s = (ap[0] * ab[0] + ap[1] * ab[1] + ap[2] * ab[2]) / denom
        s = np.clip(s, 0.0, 1.0)
        dist2 = sum((ap[i] - s * ab[i]) ** 2 for i in range(3))
        best = dist2 if best is None else np.minimum(best, dist2)
    assert best is not None
    return np.sqrt(best) - t.radius


def halfspace_sdf(h: HalfSpace, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Signed distance (nm) to the plane of a half-space, negative on the kept side."""
    n = np.asarray(h.normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    return n[0] * (z - h.point[0]) + n[1] * (y - h.point[1]) + n[2] * (x - h.point[2])


def object_sdf(obj: SceneObject, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Signed distance (nm) of an object: its shape intersected with its cuts."""
    if isinstance(obj.shape, Ellipsoid):
        d = ellipsoid_sdf(obj.shape, z, y, x)
    else:
        d = tube_sdf(obj.shape, z, y, x)
    for cut in obj.cuts:
        d = np.maximum(d, halfspace_sdf(cut, z, y, x))
    return np.broadcast_to(d, np.broadcast_shapes(z.shape, y.shape, x.shape))


def shape_bounds(shape: Ellipsoid | Tube) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical bounding box ``(lo, hi)`` in nm of a shape."""
    if isinstance(shape, Ellipsoid):
        rot = _rotation_array(shape)
        r = np.asarray(shape.semi_axes, dtype=np.float64)
        half = np.sqrt(((rot * r[:, None]) ** 2).sum(axis=0))
        c = np.asarray(shape.centre, dtype=np.float64)
        return c - half, c + half
    pts = np.asarray(shape.points, dtype=np.float64)
    return pts.min(axis=0) - shape.radius, pts.max(axis=0) + shape.radius


def support(shape: Ellipsoid, direction: np.ndarray) -> float:
    """Support function ``max_{p in shape} (p - centre) · u`` of an ellipsoid."""
    u = np.asarray(direction, dtype=np.float64)
    u = u / np.linalg.norm(u)
    rot = _rotation_array(shape)
    r = np.asarray(shape.semi_axes, dtype=np.float64)
    return float(np.sqrt(((rot @ u) ** 2 * r**2).sum()))


def touching_pair(
    kind: str, a: Ellipsoid, b: Ellipsoid, tag: str
) -> tuple[SceneObject, SceneObject]:
    """Two overlapping ellipsoids split by one plane: they share a flat face, no gap.

    The plane is perpendicular to the centre line, halfway through the overlap.
    """
    ca = np.asarray(a.centre, dtype=np.float64)
    cb = np.asarray(b.centre, dtype=np.float64)
    dist = float(np.linalg.norm(cb - ca))
    u = (cb - ca) / dist
    ha, hb = support(a, u), support(b, -u)
    if ha + hb <= dist:
        raise ValueError(f"{tag}: the two shapes do not overlap, they cannot share a face")
    s = 0.5 * (ha + (dist - hb))
    point = tuple(float(v) for v in ca + s * u)
    # B's plane sits a hair further along u, so a voxel centre exactly on the plane
    # belongs to A only (the two masks never overlap; the faces still touch).
    point_b = tuple(float(v) for v in ca + (s + 1e-6) * u)
    normal = tuple(float(v) for v in u)
    back = tuple(float(-v) for v in u)
    return (
        SceneObject(kind, a, (HalfSpace(point, normal),), tag=f"{tag} A"),  # type: ignore[arg-type]
        SceneObject(kind, b, (HalfSpace(point_b, back),), tag=f"{tag} B"),  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------------------
# Rasterization
# --------------------------------------------------------------------------------------
def _grid_window(
    lo: np.ndarray, hi: np.ndarray, origin: np.ndarray, spacing: np.ndarray, shape: Shape3
) -> tuple[slice, slice, slice] | None:
    """Index window of the voxel centres ``origin + i * spacing`` inside ``[lo, hi]``."""
    i0 = np.maximum(np.ceil((lo - origin) / spacing - 1e-9).astype(np.int64), 0)
    i1 = np.minimum(np.floor((hi - origin) / spacing + 1e-9).astype(np.int64) + 1, shape)
    if np.any(i1 <= i0):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(i0, i1))  # type: ignore[return-value]


def _window_coords(
    window: tuple[slice, slice, slice], origin: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable physical coordinates (z, y, x) of the voxel centres of a window."""
    axes = [origin[k] + np.arange(window[k].start, window[k].stop, dtype=np.float64) * spacing[k]
            for k in range(3)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def _object_window(obj: SceneObject, origin: np.ndarray, spacing: np.ndarray, shape: Shape3):
    lo, hi = shape_bounds(obj.shape)
    return _grid_window(lo, hi, origin, spacing, shape)


def _as_grid(origin_nm: Sequence[float], spacing_nm: Sequence[float], shape: Sequence[int]):
    origin = np.asarray(origin_nm, dtype=np.float64).reshape(3)
    spacing = np.asarray(spacing_nm, dtype=np.float64).reshape(3)
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) <= 0 or np.any(spacing <= 0):
        raise ValueError(f"bad grid: origin {origin_nm}, spacing {spacing_nm}, shape {shape}")
    return origin, spacing, shp


def object_mask(
    obj: SceneObject, origin_nm: Sequence[float], spacing_nm: Sequence[float], shape: Sequence[int]
) -> np.ndarray:
    """Boolean mask of the voxel centres inside one object (shell and inside)."""
    origin, spacing, shp = _as_grid(origin_nm, spacing_nm, shape)
    mask = np.zeros(shp, dtype=bool)
    window = _object_window(obj, origin, spacing, shp)
    if window is not None:
        mask[window] = object_sdf(obj, *_window_coords(window, origin, spacing)) <= 0.0
    return mask


def rasterize(
    scene: Scene, origin_nm: Sequence[float], spacing_nm: Sequence[float], shape: Sequence[int]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Evaluate a scene at the voxel centres ``origin + i * spacing``.

    Parameters
    ----------
    scene : Scene
    origin_nm : sequence of float
        Physical position (z, y, x) of voxel ``(0, 0, 0)``'s centre, nm.
    spacing_nm : sequence of float
        Voxel size (z, y, x), nm.
    shape : sequence of int
        Grid shape.

    Returns
    -------
    atomic : numpy.ndarray of uint8
        CellMap atomic class id per voxel (``ecs`` outside the cell).
    instances : dict of str to numpy.ndarray of uint32
        ``"mito"`` and ``"ves"`` instance ids (0 = background), ids as in the scene.
    """
    origin, spacing, shp = _as_grid(origin_nm, spacing_nm, shape)
    atomic = np.full(shp, _cid("ecs"), dtype=np.uint8)
    instances = {k: np.zeros(shp, dtype=np.uint32) for k in INSTANCE_KINDS}
    cell = SceneObject("cell", scene.cell)
    for obj in (cell, *scene.objects):
        window = _object_window(obj, origin, spacing, shp)
        if window is None:
            continue
        d = object_sdf(obj, *_window_coords(window, origin, spacing))
        shell_name, inside_name = KIND_CLASSES[obj.kind]
        thickness = MEMBRANE_NM[obj.kind]
        inside = d <= 0.0
        sub = atomic[window]
        sub[inside & (d > -thickness)] = _cid(shell_name)
        sub[d <= -thickness] = _cid(inside_name)
        if obj.kind in instances:
            instances[obj.kind][window][inside] = np.uint32(obj.instance_id)
    return atomic, instances


def label_array(name: str, atomic: np.ndarray, instances: Mapping[str, np.ndarray]) -> np.ndarray:
    """Ground truth of one class from rasterized labels.

    Instance classes (``mito``, ``ves``) give their uint32 instance ids; every other class
    gives a uint8 0/1 mask of its atomic id, or of the union of its parts for a group.
    """
    cls = CELLMAP_CLASSES[name]
    if cls.instance and name in instances:
        return instances[name].astype(np.uint32, copy=True)
    ids = cls.parts if cls.parts else (cls.cellmap_id,)
    return np.isin(atomic, np.asarray(ids, dtype=np.uint8)).astype(np.uint8)


