"""Scenes (one cell with mitochondria, vesicles and ER per dataset, seeded) and the synthetic EM
rendered from their atomic class map.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from .layout import DATASETS, EM_INTENSITY, EM_SHAPE, EM_VOXEL_NM, INSTANCE_KINDS, MEMBRANE_NM, Shape3, Vec3, _cid
from .shapes import Ellipsoid, Scene, SceneObject, Tube, ellipsoid_sdf, shape_bounds, touching_pair


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


