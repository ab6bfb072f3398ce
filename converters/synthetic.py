"""Deterministic synthetic CellMap-like data: EM, partial ground truth and test crops.

Every dataset is an *analytic scene* in physical nanometre coordinates ``(z, y, x)``:
one big ellipsoidal cell (outside ``ecs``, a ~16 nm ``pm`` shell, ``cyto`` inside),
mitochondria (ellipsoids with a ``mito_mem`` shell and ``mito_lum`` inside), vesicles
(small spheres, ``ves_mem`` / ``ves_lum``) and ER tubes (polylines, ``er_mem`` /
``er_lum``). The EM volume and every ground-truth or test crop are rasterized from the
same scene with :func:`rasterize`, so a crop at any translation or voxel size agrees
with the EM.

The ground-truth crops are each one hard case a converter must handle (full
annotation, partial annotation, a crop past the EM bounds, ground truth coarser than
the downloaded EM, nothing annotated, an off-grid translation); they are listed with
their expected outcome in ``<out>/cases.json``.

Output tree (``--out DIR``)::

    DIR/
      synth-1/synth-1.zarr/recon-1/em/fibsem-uint8/{s0,s1,s2}
      synth-1/synth-1.zarr/recon-1/labels/groundtruth/crop{1,2,3}/<class>/s0
      synth-2/synth-2.zarr/...                       crop{4,5,6}
      test_truth.zarr/crop{101,102}/<label>         (truth of the test crops)
      test_crop_manifest.csv                        (toolbox format)
      datasplit.csv                                 (toolbox format, absolute paths)
      cases.json
      README.md

Examples
--------
Command line::

    python -m converters.synthetic --out /tmp/synthetic_cellmap --seed 0 --force

From Python:

>>> summary = generate_synthetic_cellmap("/tmp/synthetic_cellmap", overwrite=True)  # doctest: +SKIP
>>> sorted(summary["cases"])  # doctest: +SKIP
['crop1', 'crop2', 'crop3', 'crop4', 'crop5', 'crop6']
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import zarr
from numcodecs import Blosc
from scipy import ndimage

from datalists.cellmap_classes import CELLMAP_CLASSES

__all__ = [
    "Ellipsoid",
    "Tube",
    "HalfSpace",
    "SceneObject",
    "Scene",
    "CropSpec",
    "TestLabelSpec",
    "TestCropSpec",
    "DATASETS",
    "TRAIN_CROPS",
    "TEST_CROPS",
    "EM_SHAPE",
    "EM_VOXEL_NM",
    "EM_PATH",
    "GT_PATH",
    "build_scene",
    "rasterize",
    "object_mask",
    "label_array",
    "synthesize_em",
    "downsample_mean",
    "em_level_geometry",
    "s0_chunks_overlapping",
    "crop_bounds_nm",
    "touching_pair",
    "generate_synthetic_cellmap",
    "main",
]

Vec3 = tuple[float, float, float]
Shape3 = tuple[int, int, int]

# --------------------------------------------------------------------------------------
# Fixed layout
# --------------------------------------------------------------------------------------
DATASETS: tuple[str, ...] = ("synth-1", "synth-2")
EM_SHAPE: Shape3 = (64, 160, 160)
EM_VOXEL_NM: Vec3 = (8.0, 8.0, 8.0)
EM_LEVELS: int = 3
EM_CHUNKS: Shape3 = (32, 32, 32)
GT_CHUNKS: Shape3 = (32, 32, 32)
EM_PATH = "recon-1/em/fibsem-uint8"
GT_PATH = "recon-1/labels/groundtruth"
TEST_TRUTH_NAME = "test_truth.zarr"
COMPRESSOR = Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)

#: membrane (shell) thickness per object kind, nm
MEMBRANE_NM: Mapping[str, float] = {"cell": 16.0, "mito": 16.0, "ves": 12.0, "er": 12.0}
#: (shell class, inside class) per object kind
KIND_CLASSES: Mapping[str, tuple[str, str]] = {
    "cell": ("pm", "cyto"),
    "mito": ("mito_mem", "mito_lum"),
    "ves": ("ves_mem", "ves_lum"),
    "er": ("er_mem", "er_lum"),
}
#: object kinds whose objects carry instance ids
INSTANCE_KINDS: tuple[str, ...] = ("mito", "ves")
#: mean EM intensity per atomic class before texture, blur and noise
EM_INTENSITY: Mapping[str, float] = {
    "ecs": 210.0,
    "pm": 60.0,
    "cyto": 150.0,
    "mito_mem": 55.0,
    "mito_lum": 100.0,
    "ves_mem": 65.0,
    "ves_lum": 170.0,
    "er_mem": 60.0,
    "er_lum": 120.0,
}

SEMANTIC_ENCODING = {"absent": 0, "present": 1, "unknown": 255}
INSTANCE_ENCODING = {"absent": 0}
#: an unannotated instance array still needs a value for "unknown" (its fill value)
INSTANCE_UNKNOWN_ENCODING = {"absent": 0, "unknown": 255}
UNKNOWN_FILL = 255
_IDENTITY: tuple[Vec3, Vec3, Vec3] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _cid(name: str) -> int:
    """CellMap id of a class (the one table: :mod:`datalists.cellmap_classes`)."""
    return CELLMAP_CLASSES[name].cellmap_id


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


# --------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------
def _rot_z(deg: float) -> tuple[Vec3, Vec3, Vec3]:
    """Rotation about the z axis (in the y-x plane) by ``deg`` degrees."""
    a = np.deg2rad(deg)
    c, s = float(np.cos(a)), float(np.sin(a))
    return ((1.0, 0.0, 0.0), (0.0, c, s), (0.0, -s, c))


def _random_rotation(rng: np.random.Generator) -> tuple[Vec3, Vec3, Vec3]:
    """A uniformly random rotation matrix (from a random unit quaternion)."""
    w, a, b, c = rng.standard_normal(4)
    n = np.sqrt(w * w + a * a + b * b + c * c)
    w, a, b, c = w / n, a / n, b / n, c / n
    m = np.array(
        [
            [1 - 2 * (b * b + c * c), 2 * (a * b - c * w), 2 * (a * c + b * w)],
            [2 * (a * b + c * w), 1 - 2 * (a * a + c * c), 2 * (b * c - a * w)],
            [2 * (a * c - b * w), 2 * (b * c + a * w), 1 - 2 * (a * a + b * b)],
        ],
        dtype=np.float64,
    )
    return tuple(tuple(float(v) for v in row) for row in m)  # type: ignore[return-value]


def _anchor_objects(dataset: str) -> tuple[Ellipsoid, list[SceneObject]]:
    """The cell and the hand-placed organelles that make each crop's case real."""
    mito, ves, er = "mito", "ves", "er"
    if dataset == "synth-1":
        cell = Ellipsoid((252.0, 720.0, 700.0), (700.0, 560.0, 540.0))
        objs: list[SceneObject] = []
        # crop1: touching mito pair, touching vesicle pair, an ER tube, pm/ecs corner
        objs += touching_pair(
            mito,
            Ellipsoid((252.0, 470.0, 520.0), (70.0, 75.0, 140.0)),
            Ellipsoid((252.0, 600.0, 520.0), (70.0, 75.0, 140.0)),
            "crop1 touching mito",
        )
        objs += touching_pair(
            ves,
            Ellipsoid((200.0, 330.0, 600.0), (34.0, 34.0, 34.0)),
            Ellipsoid((200.0, 330.0, 662.0), (34.0, 34.0, 34.0)),
            "crop1 touching ves",
        )
        objs.append(SceneObject(er, Tube(((300.0, 420.0, 330.0), (280.0, 560.0, 335.0),
                                          (250.0, 660.0, 320.0)), 28.0), tag="crop1 er"))
        # crop2: a mitochondrion (annotated) and an ER tube (present, not annotated)
        objs.append(SceneObject(mito, Ellipsoid((160.0, 950.0, 460.0), (60.0, 140.0, 80.0)),
                                tag="crop2 mito"))
        objs.append(SceneObject(er, Tube(((130.0, 790.0, 620.0), (150.0, 950.0, 600.0),
                                          (140.0, 1100.0, 640.0)), 26.0), tag="crop2 er"))
        # crop3: a mitochondrion near the cell's x boundary, which lies inside the crop
        objs.append(SceneObject(mito, Ellipsoid((220.0, 560.0, 1060.0), (70.0, 120.0, 90.0),
                                                _rot_z(20.0)), tag="crop3 mito"))
        # crop101 (test): mito, vesicle, ER
        objs.append(SceneObject(mito, Ellipsoid((350.0, 950.0, 900.0), (70.0, 80.0, 130.0),
                                                _rot_z(-25.0)), tag="crop101 mito"))
        objs.append(SceneObject(ves, Ellipsoid((330.0, 1090.0, 790.0), (36.0, 36.0, 36.0)),
                                tag="crop101 ves"))
        objs.append(SceneObject(er, Tube(((458.0, 860.0, 760.0), (462.0, 1000.0, 880.0),
                                          (458.0, 1110.0, 940.0)), 26.0), tag="crop101 er"))
        return cell, objs
    if dataset == "synth-2":
        cell = Ellipsoid((252.0, 600.0, 640.0), (700.0, 600.0, 580.0))
        objs = []
        # crop4 (16 nm GT): a large mitochondrion, rotated in the y-x plane
        objs.append(SceneObject(mito, Ellipsoid((300.0, 860.0, 860.0), (90.0, 100.0, 190.0),
                                                _rot_z(45.0)), tag="crop4 mito"))
        # crop6 (off-grid): a mitochondrion and a touching vesicle pair
        objs.append(SceneObject(mito, Ellipsoid((330.0, 300.0, 600.0), (70.0, 80.0, 150.0)),
                                tag="crop6 mito"))
        objs += touching_pair(
            ves,
            Ellipsoid((290.0, 300.0, 830.0), (32.0, 32.0, 32.0)),
            Ellipsoid((290.0, 360.0, 830.0), (36.0, 36.0, 36.0)),
            "crop6 touching ves",
        )
        # crop102 (test): mito and ER
        objs.append(SceneObject(mito, Ellipsoid((230.0, 820.0, 330.0), (70.0, 140.0, 80.0)),
                                tag="crop102 mito"))
        objs.append(SceneObject(er, Tube(((110.0, 640.0, 220.0), (120.0, 850.0, 250.0),
                                          (110.0, 1000.0, 360.0)), 26.0), tag="crop102 er"))
        return cell, objs
    raise ValueError(f"unknown synthetic dataset {dataset!r}; expected one of {DATASETS}")


def _bounding_spheres(obj: SceneObject) -> list[tuple[np.ndarray, float]]:
    """Spheres that cover an object (for placing random objects without overlaps)."""
    if isinstance(obj.shape, Ellipsoid):
        return [(np.asarray(obj.shape.centre, dtype=np.float64), float(max(obj.shape.semi_axes)))]
    pts = np.asarray(obj.shape.points, dtype=np.float64)
    spheres = []
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / obj.shape.radius)) + 1)
        for s in np.linspace(0.0, 1.0, n):
            spheres.append((a + s * (b - a), float(obj.shape.radius)))
    return spheres


def _fits(
    candidate: SceneObject,
    cell: Ellipsoid,
    placed: Sequence[tuple[np.ndarray, float]],
    gap_nm: float,
) -> bool:
    """True if ``candidate`` is well inside the cell and the EM, and clear of ``placed``."""
    lo, hi = shape_bounds(candidate.shape)
    em_lo = -0.5 * np.asarray(EM_VOXEL_NM)
    em_hi = em_lo + np.asarray(EM_SHAPE) * np.asarray(EM_VOXEL_NM)
    if np.any(lo < em_lo) or np.any(hi > em_hi):
        return False
    dirs = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                     if (i, j, k) != (0, 0, 0)], dtype=np.float64)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    margin = MEMBRANE_NM["cell"] + gap_nm
    for c, r in _bounding_spheres(candidate):
        probe = c[None, :] + r * dirs
        d = ellipsoid_sdf(cell, probe[:, 0], probe[:, 1], probe[:, 2])
        if np.any(d > -margin):
            return False
        for pc, pr in placed:
            if np.linalg.norm(c - pc) < r + pr + gap_nm:
                return False
    return True


def _random_object(kind: str, rng: np.random.Generator) -> SceneObject:
    """One random organelle of ``kind`` somewhere in the EM volume."""
    extent = np.asarray(EM_SHAPE, dtype=np.float64) * np.asarray(EM_VOXEL_NM)
    centre = rng.uniform(0.0, 1.0, 3) * extent
    if kind == "mito":
        semi = (float(rng.uniform(55, 80)), float(rng.uniform(60, 90)),
                float(rng.uniform(100, 170)))
        shape: Ellipsoid | Tube = Ellipsoid(
            tuple(float(v) for v in centre), semi, _random_rotation(rng))  # type: ignore[arg-type]
    elif kind == "ves":
        r = float(rng.uniform(24.0, 40.0))
        shape = Ellipsoid(tuple(float(v) for v in centre), (r, r, r))  # type: ignore[arg-type]
    elif kind == "er":
        pts = [centre]
        heading = rng.standard_normal(3) * np.array([0.3, 1.0, 1.0])
        for _ in range(2):
            heading = heading / np.linalg.norm(heading)
            pts.append(pts[-1] + heading * rng.uniform(120.0, 180.0))
            heading = heading + rng.standard_normal(3) * np.array([0.2, 0.6, 0.6])
        shape = Tube(tuple(tuple(float(v) for v in p) for p in pts), 26.0)  # type: ignore[arg-type]
    else:
        raise ValueError(kind)
    return SceneObject(kind, shape, tag=f"random {kind}")


def build_scene(
    dataset: str, seed: int = 0, n_random: Mapping[str, int] | None = None
) -> Scene:
    """The scene of one synthetic dataset.

    Hand-placed organelles (fixed, so every crop holds the classes its case needs) plus
    a few seeded random ones placed clear of all others and inside the cell.

    Parameters
    ----------
    dataset : str
        ``"synth-1"`` or ``"synth-2"``.
    seed : int
        Seed of the random organelles.
    n_random : mapping, optional
        Number of random organelles tried per kind (default mito 3, ves 8, er 2); an
        organelle that finds no free place after a few hundred tries is dropped.

    Returns
    -------
    Scene
        Instance ids are numbered per kind from 1 in object order.
    """
    counts = dict(n_random) if n_random is not None else {"mito": 3, "ves": 8, "er": 2}
    cell, objs = _anchor_objects(dataset)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), DATASETS.index(dataset), 11]))
    gap_nm = 24.0
    placed = [s for o in objs for s in _bounding_spheres(o)]
    for kind in ("mito", "er", "ves"):
        for _ in range(int(counts.get(kind, 0))):
            for _attempt in range(300):
                cand = _random_object(kind, rng)
                if _fits(cand, cell, placed, gap_nm):
                    objs.append(cand)
                    placed += _bounding_spheres(cand)
                    break
    next_id = {k: 1 for k in INSTANCE_KINDS}
    numbered = []
    for o in objs:
        if o.kind in next_id:
            o = replace(o, instance_id=next_id[o.kind])
            next_id[o.kind] += 1
        numbered.append(o)
    return Scene(dataset, cell, tuple(numbered))


# --------------------------------------------------------------------------------------
# EM
# --------------------------------------------------------------------------------------
def _smooth_noise(shape: Shape3, rng: np.random.Generator, cell_vox: int) -> np.ndarray:
    """Unit-variance low-frequency noise (smoothed coarse random grid, linearly upsampled)."""
    coarse_shape = tuple(int(np.ceil(s / cell_vox)) + 3 for s in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), 0.7)
    fine = ndimage.zoom(coarse, cell_vox, order=1, mode="nearest")
    fine = fine[cell_vox: cell_vox + shape[0], cell_vox: cell_vox + shape[1],
                cell_vox: cell_vox + shape[2]]
    return ((fine - fine.mean()) / (fine.std() + 1e-6)).astype(np.float32)


def synthesize_em(atomic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """EM-like uint8 image from atomic labels (at the EM's finest scale).

    Class intensities (:data:`EM_INTENSITY`), low-frequency variation in ``cyto`` and
    ``ecs``, a cristae-like band-pass texture in ``mito_lum``, Gaussian blur of sigma 1
    voxel, then additive Gaussian noise of sigma 10, clipped to uint8.
    """
    lut = np.full(256, EM_INTENSITY["cyto"], dtype=np.float32)
    for name, value in EM_INTENSITY.items():
        lut[_cid(name)] = value
    img = lut[atomic]
    low = _smooth_noise(atomic.shape, rng, 8)
    background = np.isin(atomic, [_cid("cyto"), _cid("ecs")])
    img += np.where(background, 10.0 * low, 0.0).astype(np.float32)
    white = rng.standard_normal(atomic.shape).astype(np.float32)
    band = ndimage.gaussian_filter(white, 0.8) - ndimage.gaussian_filter(white, 2.0)
    band /= band.std() + 1e-6
    img += np.where(atomic == _cid("mito_lum"), 18.0 * band, 0.0).astype(np.float32)
    img = ndimage.gaussian_filter(img, 1.0)
    img += 10.0 * rng.standard_normal(atomic.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def downsample_mean(image: np.ndarray, factor: int = 2) -> np.ndarray:
    """``factor``-times mean downsampling of a uint8 volume (shape must divide)."""
    s = image.shape
    if any(n % factor for n in s):
        raise ValueError(f"shape {s} is not divisible by {factor}")
    blocks = image.astype(np.float32).reshape(
        s[0] // factor, factor, s[1] // factor, factor, s[2] // factor, factor)
    return np.clip(np.rint(blocks.mean(axis=(1, 3, 5))), 0, 255).astype(np.uint8)


def em_level_geometry(level: int) -> tuple[Vec3, Vec3]:
    """``(scale, translation)`` in nm of EM level ``s<level>``.

    Coarser levels are shifted by half the scale difference so voxel centres align:
    ``translation_k = translation_0 + (scale_k - scale_0) / 2``.
    """
    f = 2**level
    scale = tuple(v * f for v in EM_VOXEL_NM)
    trans = tuple((s - v) / 2.0 for s, v in zip(scale, EM_VOXEL_NM))
    return scale, trans  # type: ignore[return-value]


# --------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropSpec:
    """A ground-truth crop and the case it stands for.

    ``class_names`` lists the crop's classes (``all`` excluded), ``annotated`` the subset
    that was annotated. ``extra`` goes into ``cases.json`` unchanged.
    """

    crop_id: int
    dataset: str
    case: str
    voxel_size: Vec3
    translation: Vec3
    shape: Shape3
    class_names: tuple[str, ...]
    annotated: tuple[str, ...]
    expected_verdict: str
    description: str
    usage: str = "train"
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        return f"crop{self.crop_id}"

    @property
    def not_annotated(self) -> tuple[str, ...]:
        return tuple(c for c in self.class_names if c not in self.annotated)


@dataclass(frozen=True)
class TestLabelSpec:
    """One (label, voxel size, ROI) row of the test manifest."""

    __test__ = False  # not a pytest test class despite the name

    label: str
    voxel_size: Vec3
    translation: Vec3
    shape: Shape3


@dataclass(frozen=True)
class TestCropSpec:
    """A test crop: EM present, truth only in ``test_truth.zarr``."""

    __test__ = False  # not a pytest test class despite the name

    crop_id: int
    dataset: str
    labels: tuple[TestLabelSpec, ...]

    @property
    def name(self) -> str:
        return f"crop{self.crop_id}"


_ALL_FULL = ("ecs", "pm", "cyto", "mito_mem", "mito_lum", "mito",
             "ves_mem", "ves_lum", "ves", "er_mem", "er_lum", "er")
_V8: Vec3 = (8.0, 8.0, 8.0)
_V16: Vec3 = (16.0, 16.0, 16.0)

TRAIN_CROPS: tuple[CropSpec, ...] = (
    CropSpec(1, "synth-1", "full", _V8, (128.0, 160.0, 160.0), (32, 64, 64),
             _ALL_FULL, _ALL_FULL, "converted",
             "Every class annotated; 8 nm on the EM s0 grid; holds a touching mito pair and a "
             "touching vesicle pair (distinct instance ids, shared face), ER, pm and ecs."),
    CropSpec(2, "synth-1", "partial_annotation", _V8, (64.0, 760.0, 240.0), (24, 56, 56),
             ("mito_mem", "mito_lum", "mito", "er_mem", "er_lum", "er"),
             ("mito_mem", "mito_lum", "mito"), "converted",
             "Only mito classes annotated; er_mem/er_lum/er are listed but unannotated (no "
             "chunks, fill 255, complement_counts unknown = all) although ER is present in "
             "the EM; ves classes are not listed at all. `all` holds only mito atomic ids."),
    CropSpec(3, "synth-1", "past_em_bounds", _V8, (96.0, 304.0, 896.0), (32, 64, 64),
             ("ecs", "pm", "cyto", "mito_mem", "mito_lum", "mito"),
             ("ecs", "pm", "cyto", "mito_mem", "mito_lum", "mito"), "converted",
             "Sticks out of the EM volume by 16 of its 64 voxels in x (EM x extent is "
             "[-4, 1276) nm); the image must be padded, padded fraction 0.25.",
             usage="validate",
             extra={"expected_padded_fraction": 0.25}),
    CropSpec(4, "synth-2", "coarse_gt", _V16, (196.0, 660.0, 660.0), (16, 32, 32),
             ("mito_mem", "mito_lum", "mito", "cyto"),
             ("mito_mem", "mito_lum", "mito", "cyto"), "converted",
             "Ground truth at 16 nm; like `csc fetch-data`, the EM s0 (8 nm) chunks that "
             "overlap the crop were not downloaded (deleted), s1/s2 are present: the image "
             "must come from s1 (translation on the s1 grid), not be a blank s0 read.",
             extra={"em_level_expected": "s1"}),
    CropSpec(5, "synth-2", "nothing_annotated", _V8, (260.0, 104.0, 1000.0), (24, 48, 32),
             ("mito_mem", "mito_lum", "mito", "er_mem", "er_lum"), (), "skipped",
             "Every class listed but none annotated (all arrays without chunks, "
             "complement_counts unknown = all); `all` has no chunks.",
             extra={"reason": "nothing_annotated"}),
    CropSpec(6, "synth-2", "offgrid_translation", _V8, (203.0, 99.0, 467.0), (32, 48, 64),
             ("mito", "ves_mem", "ves_lum", "ves"), ("mito", "ves_mem", "ves_lum", "ves"),
             "converted",
             "8 nm but translation not a multiple of 8 (EM must be resampled/snapped); mito is "
             "annotated as a group only, so `all` holds 50 (mito) there; holds a touching "
             "vesicle pair."),
)

TEST_CROPS: tuple[TestCropSpec, ...] = (
    TestCropSpec(101, "synth-1", tuple(
        TestLabelSpec(lbl, _V8, (240.0, 840.0, 760.0), (32, 48, 56))
        for lbl in ("mito", "mito_mem", "ves", "er", "cyto"))),
    TestCropSpec(102, "synth-2", (
        TestLabelSpec("mito", _V8, (100.0, 600.0, 100.0), (32, 64, 48)),
        TestLabelSpec("cyto", _V8, (100.0, 600.0, 100.0), (32, 64, 48)),
        # same physical ROI [96, 352) x [596, 1108) x [96, 480) nm at 16 nm
        TestLabelSpec("er", _V16, (104.0, 604.0, 104.0), (16, 32, 24)),
    )),
)


def crop_bounds_nm(voxel_size: Sequence[float], translation: Sequence[float],
                   shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Physical voxel-edge box ``[lo, hi)`` in nm of a grid given by its first voxel centre."""
    vs = np.asarray(voxel_size, dtype=np.float64)
    lo = np.asarray(translation, dtype=np.float64) - vs / 2.0
    return lo, lo + vs * np.asarray(shape, dtype=np.float64)


def s0_chunks_overlapping(voxel_size: Sequence[float], translation: Sequence[float],
                          shape: Sequence[int]) -> list[tuple[int, int, int]]:
    """Chunk indices of EM s0 whose voxels overlap a crop's physical box."""
    lo, hi = crop_bounds_nm(voxel_size, translation, shape)
    vs = np.asarray(EM_VOXEL_NM)
    i0 = np.maximum(np.floor((lo + vs / 2) / vs).astype(int), 0)
    i1 = np.minimum(np.ceil((hi + vs / 2) / vs).astype(int) - 1, np.asarray(EM_SHAPE) - 1)
    if np.any(i1 < i0):
        return []
    c0, c1 = i0 // np.asarray(EM_CHUNKS), i1 // np.asarray(EM_CHUNKS)
    return [(a, b, c) for a in range(c0[0], c1[0] + 1) for b in range(c0[1], c1[1] + 1)
            for c in range(c0[2], c1[2] + 1)]


def _all_lut(annotated: Sequence[str]) -> np.ndarray:
    """Map an atomic id to the most specific annotated class id covering it (0 if none)."""
    lut = np.zeros(256, dtype=np.uint8)
    groups = sorted((CELLMAP_CLASSES[n] for n in annotated if CELLMAP_CLASSES[n].parts),
                    key=lambda c: len(c.parts), reverse=True)  # broad first, specific last
    for g in groups:
        lut[list(g.parts)] = g.cellmap_id
    for n in annotated:
        c = CELLMAP_CLASSES[n]
        if not c.parts:
            lut[c.cellmap_id] = c.cellmap_id
    return lut


# --------------------------------------------------------------------------------------
# Zarr writing
# --------------------------------------------------------------------------------------
def multiscale_attrs(name: str, levels: Sequence[tuple[str, Sequence[float], Sequence[float]]]
                     ) -> dict[str, Any]:
    """OME-NGFF 0.4 ``multiscales`` attrs (axes z, y, x in nanometer)."""
    return {
        "multiscales": [{
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in ("z", "y", "x")],
            "datasets": [{
                "coordinateTransformations": [
                    {"scale": [float(v) for v in scale], "type": "scale"},
                    {"translation": [float(v) for v in trans], "type": "translation"},
                ],
                "path": path,
            } for path, scale, trans in levels],
            "name": name,
            "version": "0.4",
        }]
    }


def _annotation_attrs(name: str, annotated: bool, counts: Mapping[str, int] | None) -> dict:
    cls = CELLMAP_CLASSES[name]
    if cls.instance:
        kind = "instance_segmentation"
        encoding = dict(INSTANCE_ENCODING if annotated else INSTANCE_UNKNOWN_ENCODING)
    else:
        kind = "semantic_segmentation"
        encoding = dict(SEMANTIC_ENCODING)
    ann: dict[str, Any] = {
        "annotation_type": {"encoding": encoding, "type": kind},
        "class_name": name,
    }
    if counts is not None:
        ann["complement_counts"] = dict(counts)
    return {"cellmap": {"annotation": ann}}


def _crop_group_attrs(spec: CropSpec) -> dict:
    return {"cellmap": {"annotation": {
        "class_names": sorted(("all", *spec.class_names)),
        "created_by": [],
        "created_with": ["converters.synthetic"],
        "description": f"synthetic case {spec.case}",
        "duration_days": None,
        "end_date": None,
        "name": spec.name,
        "protocol_uri": None,
        "start_date": None,
        "version": "0.1.1",
    }}}


def _write_array(group: zarr.Group, name: str, data: np.ndarray | None, shape: Shape3,
                 dtype: np.dtype | type, fill_value: int, chunks: Shape3) -> zarr.Array:
    """Create an array; write ``data`` with every chunk on disk, or none if ``data`` is None.

    Chunks are not clipped to the shape (as in CellMap stores, a chunk may exceed it).
    """
    arr = group.create_dataset(
        name, shape=shape, chunks=chunks, dtype=dtype,
        compressor=COMPRESSOR, fill_value=fill_value, write_empty_chunks=True,
        overwrite=False,
    )
    if data is not None:
        arr[...] = data
    return arr


def write_em(zarr_path: Path, em_s0: np.ndarray) -> None:
    """Write the three EM levels with their multiscales attrs."""
    root = zarr.open_group(str(zarr_path), mode="a")
    em = root.require_group(EM_PATH)
    levels = []
    img = em_s0
    for k in range(EM_LEVELS):
        if k:
            img = downsample_mean(img, 2)
        _write_array(em, f"s{k}", img, img.shape, np.uint8, 0, EM_CHUNKS)
        scale, trans = em_level_geometry(k)
        levels.append((f"s{k}", scale, trans))
    em.attrs.put(multiscale_attrs("fibsem-uint8", levels))


def write_gt_crop(zarr_path: Path, spec: CropSpec, scene: Scene) -> dict[str, Any]:
    """Write one ground-truth crop in CellMap layout; return per-class voxel counts."""
    atomic, inst = rasterize(scene, spec.translation, spec.voxel_size, spec.shape)
    root = zarr.open_group(str(zarr_path), mode="a")
    crop = root.require_group(f"{GT_PATH}/{spec.name}")
    crop.attrs.put(_crop_group_attrs(spec))
    ms_level = [("s0", spec.voxel_size, spec.translation)]
    n = int(np.prod(spec.shape))
    present: dict[str, int] = {}
    for name in spec.class_names:
        cls = CELLMAP_CLASSES[name]
        dtype = np.uint16 if cls.instance else np.uint8
        g = crop.require_group(name)
        annotated = name in spec.annotated
        if annotated:
            data = label_array(name, atomic, inst)
            if cls.instance and data.max() > np.iinfo(np.uint16).max:
                raise ValueError(f"{spec.name}/{name}: instance id does not fit uint16")
            data = data.astype(dtype)
            counts = {"absent": int(np.count_nonzero(data == 0))}
            present[name] = n - counts["absent"]
            arr = _write_array(g, "s0", data, spec.shape, dtype, 0, GT_CHUNKS)
        else:
            counts = {"unknown": n}
            arr = _write_array(g, "s0", None, spec.shape, dtype, UNKNOWN_FILL, GT_CHUNKS)
        g.attrs.put({**_annotation_attrs(name, annotated, None),
                     **multiscale_attrs(name, ms_level)})
        arr.attrs.put(_annotation_attrs(name, annotated, counts))
    g_all = crop.require_group("all")
    all_data = _all_lut(spec.annotated)[atomic] if spec.annotated else None
    _write_array(g_all, "s0", all_data, spec.shape, np.uint8, 0, GT_CHUNKS)
    g_all.attrs.put(multiscale_attrs("all", ms_level))
    return present


def write_test_truth(store_path: Path, spec: TestCropSpec, scene: Scene) -> dict[str, int]:
    """Write the truth of one test crop as plain arrays ``crop<N>/<label>``."""
    root = zarr.open_group(str(store_path), mode="a")
    crop = root.require_group(spec.name)
    present = {}
    for lab in spec.labels:
        atomic, inst = rasterize(scene, lab.translation, lab.voxel_size, lab.shape)
        data = label_array(lab.label, atomic, inst)
        arr = _write_array(crop, lab.label, data, lab.shape, data.dtype, 0, GT_CHUNKS)
        arr.attrs.put({"voxel_size": [float(v) for v in lab.voxel_size],
                       "translation": [float(v) for v in lab.translation],
                       "shape": [int(v) for v in lab.shape]})
        present[lab.label] = int(np.count_nonzero(data))
    return present


def _vec(values: Sequence[float], fmt=float) -> str:
    return "[" + ";".join(str(fmt(v)) for v in values) + "]"


def write_test_manifest(path: Path, crops: Sequence[TestCropSpec]) -> None:
    """``test_crop_manifest.csv`` in the toolbox format."""
    lines = ["crop_name,dataset,class_label,voxel_size,translation,shape"]
    for c in crops:
        for lab in c.labels:
            lines.append(",".join([str(c.crop_id), c.dataset, lab.label, _vec(lab.voxel_size),
                                   _vec(lab.translation), _vec(lab.shape, int)]))
    path.write_text("\n".join(lines) + "\n")


def write_datasplit(path: Path, final_root: Path, crops: Sequence[CropSpec]) -> None:
    """Header-less, fully quoted ``datasplit.csv`` with absolute FINAL paths."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for c in crops:
            zpath = str(final_root / c.dataset / f"{c.dataset}.zarr")
            classes = ",".join(sorted(c.class_names))
            w.writerow([c.usage, zpath, EM_PATH, zpath, f"{GT_PATH}/{c.name}/[{classes}]"])


def _case_record(spec: CropSpec, present: Mapping[str, int]) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "dataset": spec.dataset,
        "case": spec.case,
        "expected_verdict": spec.expected_verdict,
        "description": spec.description,
        "gt_voxel_size": [float(v) for v in spec.voxel_size],
        "translation": [float(v) for v in spec.translation],
        "shape": [int(v) for v in spec.shape],
        "annotated": list(spec.annotated),
        "not_annotated": list(spec.not_annotated),
        "usage": spec.usage,
        "present_voxels": dict(present),
    }
    rec.update(spec.extra)
    return rec


def _readme(cases: Mapping[str, Mapping[str, Any]], seed: int) -> str:
    rows = "\n".join(
        f"| {k} | {v['dataset']} | {v['case']} | {v['gt_voxel_size'][0]:g} | "
        f"{v['translation']} | {v['shape']} | {v['expected_verdict']} |"
        for k, v in cases.items())
    tests = "\n".join(
        f"| crop{c.crop_id} | {c.dataset} | "
        + ", ".join(f"{lab.label}@{lab.voxel_size[0]:g}nm" for lab in c.labels) + " |"
        for c in TEST_CROPS)
    return f"""# Synthetic CellMap-like data (seed {seed})

Generated by `python -m converters.synthetic`. Two datasets (`synth-1`, `synth-2`), each a
CellMap-layout Zarr v2 store with EM `{EM_PATH}/s0..s2` (8/16/32 nm) and ground-truth
crops under `{GT_PATH}/`. EM and every crop are rasterized from the same analytic scene
(a cell with mitochondria, vesicles and ER tubes), so any crop agrees with the EM.

Each training crop is one case a converter must handle (details in `cases.json`):

| crop | dataset | case | GT voxel (nm) | translation (nm) | shape | expected |
|---|---|---|---|---|---|---|
{rows}

Test crops (EM present, no ground truth under `groundtruth/`; truth in
`{TEST_TRUTH_NAME}`, rows in `test_crop_manifest.csv`):

| crop | dataset | labels |
|---|---|---|
{tests}

`datasplit.csv` lists all six training crops (crop3 as `validate`) with absolute paths.
"""


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------
def _prepare_target(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not overwrite:
            raise FileExistsError(
                f"refusing to write into non-empty directory {out}; "
                "pass overwrite=True (--force) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first, then removed."""
    trash = None
    if out.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, trash / "old")
    os.rename(tmp, out)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _generate_into(tmp: Path, final: Path, seed: int) -> dict[str, Any]:
    datasets: dict[str, str] = {}
    cases: dict[str, dict[str, Any]] = {}
    deleted: list[str] = []
    truth_path = tmp / TEST_TRUTH_NAME
    zarr.open_group(str(truth_path), mode="w")
    test_present: dict[str, dict[str, int]] = {}
    for ds in DATASETS:
        scene = build_scene(ds, seed)
        zpath = tmp / ds / f"{ds}.zarr"
        zarr.open_group(str(zpath), mode="w")
        atomic, _ = rasterize(scene, (0.0, 0.0, 0.0), EM_VOXEL_NM, EM_SHAPE)
        em_rng = np.random.default_rng(np.random.SeedSequence([int(seed), DATASETS.index(ds), 22]))
        write_em(zpath, synthesize_em(atomic, em_rng))
        zarr.open_group(str(zpath), mode="a").require_group(GT_PATH)
        for spec in (c for c in TRAIN_CROPS if c.dataset == ds):
            present = write_gt_crop(zpath, spec, scene)
            missing = [n for n in spec.annotated if present.get(n, 0) == 0]
            if missing:
                raise RuntimeError(f"{spec.name}: annotated classes with no voxels: {missing}")
            rec = _case_record(spec, present)
            if spec.extra.get("em_level_expected") == "s1":
                keys = [".".join(map(str, c)) for c in
                        s0_chunks_overlapping(spec.voxel_size, spec.translation, spec.shape)]
                for key in keys:
                    (zpath / EM_PATH / "s0" / key).unlink()
                rec["deleted_s0_chunks"] = keys
                deleted += [f"{ds}/{key}" for key in keys]
            cases[spec.name] = rec
        for tspec in (c for c in TEST_CROPS if c.dataset == ds):
            test_present[tspec.name] = write_test_truth(truth_path, tspec, scene)
        datasets[ds] = str(final / ds / f"{ds}.zarr")
    (tmp / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")
    write_datasplit(tmp / "datasplit.csv", final, TRAIN_CROPS)
    write_test_manifest(tmp / "test_crop_manifest.csv", TEST_CROPS)
    (tmp / "README.md").write_text(_readme(cases, seed))
    return {
        "out_dir": str(final),
        "seed": int(seed),
        "datasets": datasets,
        "cases": cases,
        "cases_json": str(final / "cases.json"),
        "datasplit": str(final / "datasplit.csv"),
        "test_manifest": str(final / "test_crop_manifest.csv"),
        "test_truth": str(final / TEST_TRUTH_NAME),
        "test_crops": {c.name: c.dataset for c in TEST_CROPS},
        "test_present_voxels": test_present,
        "deleted_s0_chunks": deleted,
        "readme": str(final / "README.md"),
    }


def generate_synthetic_cellmap(out_dir: str | os.PathLike[str], seed: int = 0,
                               overwrite: bool = False) -> dict[str, Any]:
    """Generate the synthetic CellMap-like tree into ``out_dir``.

    Everything is written into a temporary directory next to ``out_dir`` and renamed into
    place at the end, so ``out_dir`` is either complete or untouched.

    Parameters
    ----------
    out_dir : path-like
        Target directory; must not exist, or be empty, unless ``overwrite``.
    seed : int
        Seed of the random organelles and of the EM noise; the same seed gives identical
        arrays.
    overwrite : bool
        Replace a non-empty ``out_dir``.

    Returns
    -------
    dict
        ``out_dir``, ``seed``, ``datasets`` (name -> absolute zarr path), ``cases``
        (crop name -> the ``cases.json`` record), paths of ``cases_json``, ``datasplit``,
        ``test_manifest``, ``test_truth``, ``readme``, ``test_crops`` and
        ``deleted_s0_chunks``.

    Raises
    ------
    FileExistsError
        If ``out_dir`` is non-empty and ``overwrite`` is False.
    """
    final = Path(out_dir).expanduser().resolve()
    _prepare_target(final, overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        summary = _generate_into(tmp, final, int(seed))
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m converters.synthetic",
        description="Generate a small deterministic CellMap-like tree (two EM datasets with "
                    "multiscale EM, six ground-truth crops that each exercise one hard case, "
                    "two test crops with their truth, datasplit.csv, test_crop_manifest.csv, "
                    "cases.json). A few MB; a few seconds.")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created; written atomically via a temporary "
                        "directory next to it)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random organelles and the EM noise; the same seed gives "
                        "identical data (default: 0)")
    p.add_argument("--force", action="store_true",
                   help="replace DIR if it exists and is not empty (otherwise refuse)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    t0 = time.perf_counter()
    try:
        summary = generate_synthetic_cellmap(args.out, seed=args.seed, overwrite=args.force)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"wrote {summary['out_dir']} in {dt:.1f} s (seed {summary['seed']})")
    for name, rec in summary["cases"].items():
        print(f"  {name:7s} {rec['dataset']}  {rec['case']:20s} -> {rec['expected_verdict']}")
    print(f"  test crops: {', '.join(summary['test_crops'])} (truth in {summary['test_truth']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
