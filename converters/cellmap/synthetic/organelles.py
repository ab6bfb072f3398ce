"""Seeded organelles of the procedural scene and their placement inside a cell's cytoplasm.

Each draw returns a :class:`Draft`: the bodies of one organelle (a golgi stack is several
cisternae, a mitochondrion carries its ``mito_ribo`` granules, an ER tube may carry an
``eres`` blob) and spheres that cover it, for the inside-the-cytoplasm and no-overlap tests.
:class:`CellRoom` keeps what was placed in one
cell and accepts a draft only if it is clear of everything there.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> d = draw("mito", rng, np.zeros(3))
>>> d.bodies[0].kind, {b.kind for b in d.bodies[1:]} <= {"ribo"}
('mito', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .scenes import _random_rotation
from .shapes import Ellipsoid, Tube

GAP_NM = 16.0  #: minimum distance between organelles (sphere covers), nm
PM_CLEAR_NM = 28.0  #: organelle surfaces stay this deep inside the cell (pm is 16 nm)
NUC_CLEAR_NM = 24.0  #: and this far outside the nucleus (pores reach 8 nm out)
HASH_NM = 320.0  #: grid of the placed-sphere hash


@dataclass(frozen=True)
class Part:
    """One painted body of an organelle, before it is numbered in its scene.

    ``parent`` is the index (in the draft) of the part whose instance id this one carries
    (``-1``: its own); ``wave`` is a cristae wave vector (nm⁻¹, mito only).
    """

    kind: str
    shape: Ellipsoid | Tube
    parent: int = -1
    wave: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class Draft:
    """A drawn organelle: its parts and spheres ``(n, 4)`` (centre, radius) that cover it."""

    bodies: list[Part]
    spheres: np.ndarray


def _as_vec(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def ellipsoid_k0(e: Ellipsoid, pts: np.ndarray) -> np.ndarray:
    """``|R (p - c) / r|`` at points ``(n, 3)``: below 1 inside, 1 on the surface.

    For a point inside at ``k0`` its depth is at least ``(1 - k0) * min(r)``; outside, its
    distance at least ``(k0 - 1) * min(r)`` (the bounds the placement relies on).
    """
    q = (np.asarray(pts, dtype=np.float64) - np.asarray(e.centre)) @ np.asarray(e.rotation).T
    return np.sqrt(((q / np.asarray(e.semi_axes)) ** 2).sum(axis=1))


def ellipsoid_spheres(e: Ellipsoid) -> np.ndarray:
    """Spheres ``(n, 4)`` that cover an ellipsoid: along its longest body axis, each covering a
    slice of the circumscribed cylinder (so a long mitochondrion does not claim a huge ball)."""
    r = np.asarray(e.semi_axes, dtype=np.float64)
    ax = int(np.argmax(r))
    rest = float(np.delete(r, ax).max())
    n = max(1, int(np.ceil(2.0 * r[ax] / rest)))
    step = 2.0 * r[ax] / n
    radius = float(np.hypot(rest, step / 2.0))
    axis = np.asarray(e.rotation, dtype=np.float64)[ax]
    s = -r[ax] + step * (np.arange(n) + 0.5)
    centres = np.asarray(e.centre) + s[:, None] * axis[None, :]
    return np.concatenate([centres, np.full((n, 1), radius)], axis=1)


def tube_spheres(t: Tube) -> np.ndarray:
    """Spheres ``(n, 4)`` along a polyline tube, spaced by its radius."""
    pts = np.asarray(t.points, dtype=np.float64)
    out = []
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / t.radius)) + 1)
        s = np.linspace(0.0, 1.0, n)[:, None]
        out.append(a + s * (b - a))
    c = np.concatenate(out)
    return np.concatenate([c, np.full((len(c), 1), t.radius * 1.01)], axis=1)


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def _frame(axis: np.ndarray, rng: np.random.Generator) -> tuple:
    """A rotation whose first row (body axis 0) is ``axis``."""
    a = axis / np.linalg.norm(axis)
    b = np.cross(a, _unit(rng))
    b /= np.linalg.norm(b)
    return tuple(_as_vec(v) for v in (a, b, np.cross(a, b)))


def _ellipsoid(centre: np.ndarray, semi, rot) -> Ellipsoid:
    return Ellipsoid(_as_vec(centre), tuple(float(v) for v in semi), rot)  # type: ignore[arg-type]


def _polyline(start: np.ndarray, rng: np.random.Generator, n_seg: int, length: float,
              bend: float) -> list[np.ndarray]:
    pts, heading = [start], _unit(rng)
    for _ in range(n_seg):
        pts.append(pts[-1] + heading * length / n_seg)
        heading = heading + bend * rng.standard_normal(3)
        heading /= np.linalg.norm(heading)
    return pts


def _draw_mito(rng: np.random.Generator, c: np.ndarray, sf: float) -> Draft:
    semi = (rng.uniform(50, 85), rng.uniform(50, 85), rng.uniform(130, 380) * sf)
    rot = _random_rotation(rng)
    body = _ellipsoid(c, semi, rot)
    wave = np.asarray(rot[2]) * (2 * np.pi / rng.uniform(50.0, 70.0))
    parts = [Part("mito", body, wave=_as_vec(wave))]
    rmin = min(semi)
    for _ in range(int(rng.integers(2, 6))):
        rho = rng.uniform(12.0, 16.0)
        s_max = 1.0 - (14.0 + rho + 4.0) / rmin
        if s_max <= 0:
            break
        q = np.asarray(semi) * _unit(rng) * rng.uniform(0.0, s_max)
        p = c + q @ np.asarray(rot)
        parts.append(Part("ribo", _ellipsoid(p, (rho, rho, rho), body.rotation), parent=0))
    sph = ellipsoid_spheres(body)
    return Draft(parts, sph)


def _draw_round(kind: str, rng: np.random.Generator, c: np.ndarray, sf: float) -> Draft:
    lo, hi, aspect = {"ves": (22, 40, 0.95), "endo": (60, 110, 0.8), "lyso": (70, 120, 0.9),
                      "ld": (70, 140, 0.95), "perox": (50, 90, 0.9)}[kind]
    r = rng.uniform(lo, hi) * (1.0 if kind == "ves" else sf)
    semi = (r, r * rng.uniform(aspect, 1.0), r * rng.uniform(aspect, 1.0))
    body = _ellipsoid(c, semi, _random_rotation(rng))
    return Draft([Part(kind, body)], ellipsoid_spheres(body))


def _draw_golgi(rng: np.random.Generator, c: np.ndarray, sf: float) -> Draft:
    n = int(rng.integers(3, 6))
    rot = _frame(_unit(rng), rng)
    normal = np.asarray(rot[0])
    big = rng.uniform(100.0, 150.0) * sf
    parts, spheres = [], []
    for j in range(n):
        r = big * (1.0 - 0.12 * abs(j - (n - 1) / 2.0))
        e = _ellipsoid(c + (j - (n - 1) / 2.0) * 64.0 * normal,
                       (rng.uniform(22.0, 26.0), r, r * rng.uniform(0.8, 1.0)), rot)
        parts.append(Part("golgi", e))
        spheres.append([*e.centre, r])
    return Draft(parts, np.asarray(spheres))


def _draw_tube(kind: str, rng: np.random.Generator, c: np.ndarray, sf: float, eres: bool | None) -> Draft:
    if kind == "mt":
        radius, n_seg = 14.0, int(rng.integers(2, 4))
        pts = _polyline(c, rng, n_seg, rng.uniform(250.0, 700.0) * sf, 0.25)
    else:
        radius, n_seg = rng.uniform(22.0, 30.0), int(rng.integers(2, 5))
        pts = _polyline(c, rng, n_seg, rng.uniform(100.0, 200.0) * n_seg * sf, 0.6)
    tube = Tube(tuple(_as_vec(p) for p in pts), float(radius))
    parts = [Part(kind, tube)]
    sph = tube_spheres(tube)
    with_eres = bool(rng.random() < 0.4) if eres is None else eres
    if kind == "er" and with_eres:
        r = rng.uniform(34.0, 46.0)
        at = pts[0] if eres else pts[int(rng.integers(0, len(pts)))]
        parts.append(Part("eres", _ellipsoid(at, (r, r, r), _random_rotation(rng))))
        sph = np.concatenate([sph, [[*at, r]]])
    return Draft(parts, sph)


def draw(kind: str, rng: np.random.Generator, centre: np.ndarray, size: float = 1.0,
         eres: bool | None = None) -> Draft:
    """Draw one organelle of ``kind`` at ``centre`` (nm); ``size`` < 1 shrinks it.

    ``eres`` True puts an ER exit site on an ``er`` tube at its start (``centre``), False
    none; by default 40 % of the tubes have one, at a random vertex.
    """
    c = np.asarray(centre, dtype=np.float64)
    if kind == "mito":
        return _draw_mito(rng, c, size)
    if kind == "golgi":
        return _draw_golgi(rng, c, size)
    if kind in ("er", "mt"):
        return _draw_tube(kind, rng, c, size, eres)
    return _draw_round(kind, rng, c, size)


@dataclass
class CellRoom:
    """The free cytoplasm of one cell: inside ``cell`` and its box ``[lo, hi]``, outside
    ``nucleus``, clear of what was placed. Placed spheres are hashed on a grid of
    :data:`HASH_NM` so a test only looks at the neighbourhood of the draft."""

    cell: Ellipsoid
    lo: np.ndarray
    hi: np.ndarray
    nucleus: Ellipsoid
    grid: dict = field(default_factory=dict)
    rmax: float = 0.0

    def _near(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        i0, i1 = np.floor(lo / HASH_NM).astype(int), np.floor(hi / HASH_NM).astype(int)
        rows = [r for i in range(i0[0], i1[0] + 1) for j in range(i0[1], i1[1] + 1)
                for k in range(i0[2], i1[2] + 1) for r in self.grid.get((i, j, k), ())]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 4)

    def fits(self, d: Draft) -> bool:
        """True if every covering sphere is deep in the cytoplasm and meets no placed one.

        Conservative: a sphere of radius ``r`` at ``k0`` is inside the cell when
        ``(1 - k0) * min(semi_axes) >= r + clearance`` (see :func:`ellipsoid_k0`).
        """
        c, r = d.spheres[:, :3], d.spheres[:, 3]
        reach = (r + PM_CLEAR_NM)[:, None]
        if np.any(c - reach < self.lo) or np.any(c + reach > self.hi):
            return False
        k_cell = ellipsoid_k0(self.cell, c)
        if np.any((1.0 - k_cell) * min(self.cell.semi_axes) < r + PM_CLEAR_NM):
            return False
        k_nuc = ellipsoid_k0(self.nucleus, c)
        if np.any((k_nuc - 1.0) * min(self.nucleus.semi_axes) < r + NUC_CLEAR_NM):
            return False
        pad = float(r.max()) + GAP_NM + self.rmax
        near = self._near(c.min(axis=0) - pad, c.max(axis=0) + pad)
        if len(near):
            diff = c[:, None, :] - near[None, :, :3]
            need = r[:, None] + near[None, :, 3] + GAP_NM
            if np.any((diff * diff).sum(axis=2) < need * need):
                return False
        return True

    def add(self, d: Draft) -> None:
        for row in d.spheres:
            key = tuple(int(v) for v in np.floor(row[:3] / HASH_NM))
            self.grid.setdefault(key, []).append(tuple(float(v) for v in row))
        self.rmax = max(self.rmax, float(d.spheres[:, 3].max()))
