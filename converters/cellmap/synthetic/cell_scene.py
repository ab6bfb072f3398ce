"""The procedural scene of one dataset: a lattice of cells, a nucleus in each (envelope, pores,
chromatin), and seeded organelles in the cytoplasm, with a bounding-box index of its pieces.

Cells fill a cubic lattice of pitch :data:`CELL_PITCH_NM`: each is an ellipsoid clipped by its
lattice box, so neighbours face each other across a thin ``ecs`` gap, wider at the corners.
Organelles are placed in two passes: first one of each family a crop needs, centred inside
that crop (so each crop shows what it annotates), then a density pass over every cell near
the EM box. An *anchor* crop gets a
cell laid out around it: its plasma membrane crosses the crop near one face along the
crop's longest axis and its nucleus's envelope (with a pore and a chromatin blob) near the
other, so that crop holds every tested class.

Examples
--------
>>> need = CropNeed((0.0, 0.0, 0.0), (384.0, 640.0, 640.0), ("mito", "ves"))
>>> scene = build_cell_scene("demo", (0, 1), need.lo, need.hi, [need], anchor=need)
>>> scene.n_cells >= 1, sorted({b.kind for b in scene.bodies} & {"cell", "nucleus", "mito"})
(True, ['cell', 'mito', 'nucleus'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .layout import Vec3
from .organelles import CellRoom, Draft, draw, ellipsoid_k0
from .scale_classes import FAMILY_KINDS, INSTANCE_KIND_CLASS
from .scenes import _random_rotation
from .shapes import Ellipsoid, Tube, shape_bounds

CELL_PITCH_NM, ECS_GAP_NM = 1800.0, 50.0
PORE_RADIUS_NM, PORE_HALF_HEIGHT_NM, ENVELOPE_NM = 48.0, 30.0, 44.0
#: organelles per cell in the density pass (scaled by the share of the cell near the EM)
DENSITY: dict[str, int] = {"mito": 30, "golgi": 4, "er": 60, "mt": 30, "endo": 12, "lyso": 10,
                           "ld": 6, "perox": 12, "ves": 200}
_NEED_TRIES, _FILL_TRIES = 80, 20
_BIG_FIRST = ("golgi", "mito", "er", "ld", "lyso", "endo", "perox", "mt", "ves")


@dataclass(frozen=True)
class Disc:
    """A capped cylinder (a nuclear pore): axis ``axis`` (unit) through ``centre``."""

    centre: Vec3
    axis: Vec3
    radius: float
    half_height: float


@dataclass(frozen=True)
class BoxedEllipsoid:
    """A cell: an ellipsoid clipped by the axis-aligned box ``[lo, hi]`` (nm)."""

    ellipsoid: Ellipsoid
    lo: Vec3
    hi: Vec3


@dataclass(frozen=True)
class Body:
    """One painted body. ``cell`` is its cell (1-based); ``owner`` the body (1-based index)
    whose instance id its voxels carry: itself, or the mitochondrion of a ``ribo`` granule."""

    kind: str
    shape: Ellipsoid | Tube | Disc | BoxedEllipsoid
    cell: int
    owner: int
    instance_id: int = 0
    wave: Vec3 = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class CropNeed:
    """A crop's physical box (nm, voxel edges) and the organelle families it should show."""

    lo: Vec3
    hi: Vec3
    families: tuple[str, ...]


@dataclass(eq=False)
class CellScene:
    """Bodies in paint order and a bounding-box index of their pieces (a tube is cut in short
    capsules so a long diagonal microtubule is not evaluated over a huge box)."""

    name: str
    bodies: tuple[Body, ...]
    n_cells: int
    max_id: dict[str, int]
    hchrom_waves: np.ndarray  # (2, 4): wave vector (nm^-1) and phase of the chromatin patches
    piece_body: np.ndarray = field(init=False)  # 0-based body index per piece
    piece_lo: np.ndarray = field(init=False)
    piece_hi: np.ndarray = field(init=False)
    piece_shape: list = field(init=False)
    _luts: dict = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        body, lo, hi, shapes = [], [], [], []
        for i, b in enumerate(self.bodies):
            for s in _pieces(b.shape):
                a, z = _bounds(s)
                body.append(i)
                lo.append(a)
                hi.append(z)
                shapes.append(s)
        self.piece_body = np.asarray(body, dtype=np.int64)
        self.piece_lo = np.asarray(lo, dtype=np.float64).reshape(-1, 3)
        self.piece_hi = np.asarray(hi, dtype=np.float64).reshape(-1, 3)
        self.piece_shape = shapes

    def instance_lut(self, name: str) -> np.ndarray:
        """uint32 lookup from owner (1-based body index) to its id in instance class ``name``."""
        if name not in self._luts:
            lut = np.zeros(len(self.bodies) + 1, dtype=np.uint32)
            for i, b in enumerate(self.bodies):
                if INSTANCE_KIND_CLASS.get(b.kind) == name and b.owner == i + 1:
                    lut[i + 1] = b.instance_id
            self._luts[name] = lut
        return self._luts[name]

    def pieces_in(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Indices (paint order) of the pieces whose bounds meet the box ``[lo, hi]`` (nm)."""
        hit = np.all(self.piece_lo <= np.asarray(hi), axis=1) & np.all(self.piece_hi >= np.asarray(lo), axis=1)
        return np.nonzero(hit)[0]


def _pieces(shape: Ellipsoid | Tube | Disc) -> list:
    if not isinstance(shape, Tube):
        return [shape]
    out, step = [], max(6.0 * shape.radius, 64.0)
    pts = np.asarray(shape.points, dtype=np.float64)
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        cut = [a + (b - a) * k / n for k in range(n + 1)]
        out += [Tube((tuple(map(float, p)), tuple(map(float, q))), shape.radius) for p, q in zip(cut[:-1], cut[1:])]
    return out


def _bounds(shape: Ellipsoid | Tube | Disc | BoxedEllipsoid) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(shape, BoxedEllipsoid):
        lo, hi = shape_bounds(shape.ellipsoid)
        return np.maximum(lo, shape.lo), np.minimum(hi, shape.hi)
    if isinstance(shape, Disc):
        r = float(np.hypot(shape.radius, shape.half_height))
        c = np.asarray(shape.centre)
        return c - r, c + r
    return shape_bounds(shape)


def _vec(v: np.ndarray) -> Vec3:
    return (float(v[0]), float(v[1]), float(v[2]))


# ------------------------------------------------------------------------------ cells and nuclei
def _lattice(rng: np.random.Generator, box_lo: np.ndarray, box_hi: np.ndarray, anchor: CropNeed | None
             ) -> tuple[list[BoxedEllipsoid], list[Ellipsoid], list[np.ndarray]]:
    """Cells, their nuclei and (for the anchor cell) the envelope point with its normal.

    Lattice point ``c`` owns the box ``c ± (pitch - ECS_GAP_NM) / 2``; its cell is an ellipsoid
    larger than that box, clipped by it, so neighbours face each other across a thin ``ecs``
    gap with wider ``ecs`` where the ellipsoids' corners are cut off.
    """
    p, half = CELL_PITCH_NM, (CELL_PITCH_NM - ECS_GAP_NM) / 2.0
    forced: list[np.ndarray] = []
    if anchor is not None:
        alo, ahi = np.asarray(anchor.lo), np.asarray(anchor.hi)
        ax = int(np.argmax(ahi - alo))
        ext = float(ahi[ax] - alo[ax])
        x_pm = alo[ax] + 0.88 * ext
        origin = (alo + ahi) / 2.0
        origin[ax] = x_pm - half
        rn = 0.27 * p
        n_c = origin.copy()
        n_c[ax] = x_pm - min(0.62 * ext, 480.0) - rn
        forced = [n_c + rn * np.eye(3)[ax], np.eye(3)[ax]]
    else:
        origin = box_lo + rng.uniform(0.0, p, 3)
    i0 = np.floor((box_lo - origin) / p - 0.5).astype(int)
    i1 = np.ceil((box_hi - origin) / p + 0.5).astype(int)
    cells, nuclei = [], []
    for i in range(i0[0], i1[0] + 1):
        for j in range(i0[1], i1[1] + 1):
            for k in range(i0[2], i1[2] + 1):
                c = origin + p * np.array([i, j, k])
                semi, rot = rng.uniform(0.64, 0.76, 3) * p, _random_rotation(rng)
                e_c = c + rng.uniform(-0.05, 0.05, 3) * p
                n_semi = rng.uniform(0.23, 0.31) * p * rng.uniform(0.85, 1.0, 3)
                n_rot, n_off = _random_rotation(rng), rng.standard_normal(3)
                n_off *= rng.uniform(0.0, 0.06) * p / np.linalg.norm(n_off)
                if np.any(c + half < box_lo) or np.any(c - half > box_hi):
                    continue
                lo, hi = _vec(c - half), _vec(c + half)
                if forced and (i, j, k) == (0, 0, 0):
                    r = 0.62 * p
                    cells.append(BoxedEllipsoid(Ellipsoid(_vec(c), (r, r, r)), lo, hi))
                    nuclei.append(Ellipsoid(_vec(forced[0] - rn * forced[1]), (rn, rn, rn)))
                    continue
                cells.append(BoxedEllipsoid(Ellipsoid(_vec(e_c), _vec(semi), rot), lo, hi))
                nuclei.append(Ellipsoid(_vec(c + n_off), _vec(n_semi), n_rot))
    return cells, nuclei, forced


def _surface_point(e: Ellipsoid, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the ray from the centre along unit ``w`` leaves the ellipsoid, and the normal there."""
    rot, r = np.asarray(e.rotation), np.asarray(e.semi_axes)
    t = 1.0 / np.linalg.norm((rot @ w) / r)
    q = rot @ (t * w)
    n = rot.T @ (q / r**2)
    return np.asarray(e.centre) + t * w, n / np.linalg.norm(n)


def _nuclear_parts(rng: np.random.Generator, nuc: Ellipsoid, forced: Sequence[np.ndarray]
                   ) -> list[tuple[str, Ellipsoid | Disc]]:
    """Chromatin blobs below the chromatin band and pores across the envelope."""
    parts: list[tuple[str, Ellipsoid | Disc]] = []
    rmin = min(nuc.semi_axes)
    rot, semi = np.asarray(nuc.rotation), np.asarray(nuc.semi_axes)
    if forced:
        point, normal = forced
        rho = 50.0
        parts.append(("echrom", Ellipsoid(_vec(point - (104.0 + rho + 10.0) * normal), (rho, rho, rho))))
    for _ in range(int(rng.integers(3, 7))):
        rho = rng.uniform(40.0, 90.0)
        s_max = 1.0 - (110.0 + rho) / rmin
        w = rng.standard_normal(3)
        if s_max > 0:
            q = semi * w / np.linalg.norm(w) * rng.uniform(0.0, s_max)
            parts.append(("echrom", Ellipsoid(_vec(np.asarray(nuc.centre) + q @ rot),
                                              _vec(rho * rng.uniform(0.7, 1.0, 3)), _random_rotation(rng))))
    pores: list[np.ndarray] = []
    area = 4.0 * np.pi * float(np.mean(semi)) ** 2 / 1e6
    candidates = [tuple(forced)] if forced else []
    for _ in range(int(round(3.0 * area)) + 2):
        p, n = _surface_point(nuc, rng.standard_normal(3))
        candidates.append((p, n))
    for p, n in candidates:
        if all(np.linalg.norm(p - q) > 150.0 for q in pores):
            pores.append(p)
            parts.append(("np", Disc(_vec(p - n * ENVELOPE_NM / 2.0), _vec(n), PORE_RADIUS_NM, PORE_HALF_HEIGHT_NM)))
    return parts


def _unit_rows(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------ organelles
def _cell_at(cells: Sequence[BoxedEllipsoid], p: np.ndarray) -> int:
    for i, c in enumerate(cells):
        if np.all(p >= c.lo) and np.all(p <= c.hi) and ellipsoid_k0(c.ellipsoid, p[None])[0] < 1.0:
            return i
    return -1


def _place_needed(rng, cells, rooms, needs, anchor, placed) -> None:
    """One organelle of each family a crop needs, centred in the crop (the anchor crop first,
    with more tries), the biggest kinds first so the small ones fill the gaps."""
    for need in ([anchor] if anchor else []) + [n for n in needs if n != anchor]:
        tries = 4 * _NEED_TRIES if need == anchor else _NEED_TRIES
        lo, hi = np.asarray(need.lo), np.asarray(need.hi)
        kinds = [k for f in need.families for k in FAMILY_KINDS.get(f, ())]
        for kind in sorted(kinds, key=_BIG_FIRST.index):
            # an ER tube starts at its exit site: from the middle of the crop, both stay inside
            a, b = (0.75 * lo + 0.25 * hi, 0.25 * lo + 0.75 * hi) if kind == "er" else (lo, hi)
            for attempt in range(tries):
                centre = rng.uniform(a, b)
                ci = _cell_at(cells, centre)
                if ci < 0:
                    continue
                d = draw(kind, rng, centre, size=1.0 - 0.5 * attempt / tries, eres=True)
                if rooms[ci].fits(d):
                    rooms[ci].add(d)
                    placed.append((ci, d))
                    break


def _fill(rng, cells, rooms, box_lo, box_hi, placed) -> None:
    for ci, cell in enumerate(cells):
        clo, chi = _bounds(cell)
        lo, hi = np.maximum(clo, box_lo - 200.0), np.minimum(chi, box_hi + 200.0)
        if np.any(hi <= lo):
            continue
        share = float(np.prod(hi - lo) / np.prod(chi - clo))
        for kind, base in DENSITY.items():
            for _ in range(int(np.floor(base * share + rng.random()))):
                for _attempt in range(_FILL_TRIES):
                    d = draw(kind, rng, rng.uniform(lo, hi))
                    if rooms[ci].fits(d):
                        rooms[ci].add(d)
                        placed.append((ci, d))
                        break


def _assemble(cells, nuclei, nuclear, placed: list[tuple[int, Draft]]) -> tuple[list[Body], dict[str, int]]:
    """Bodies in paint order (cells, nuclei, nuclear parts, organelles) with ids and owners."""
    bodies: list[Body] = []
    next_id = {k: 1 for k in INSTANCE_KIND_CLASS}

    def add(kind: str, shape, cell: int, parent: int = -1, wave: Vec3 = (0.0, 0.0, 0.0)) -> int:
        index = len(bodies) + 1
        owner, iid = index, 0
        if parent > 0:
            owner, iid = parent, bodies[parent - 1].instance_id
        elif kind in next_id:
            iid = next_id[kind]
            next_id[kind] += 1
        bodies.append(Body(kind, shape, cell, owner, iid, wave))
        return index

    for i, c in enumerate(cells):
        add("cell", c, i + 1)
    for i, n in enumerate(nuclei):
        add("nucleus", n, i + 1)
    for i, parts in enumerate(nuclear):
        for kind, shape in parts:
            add(kind, shape, i + 1)
    for ci, d in placed:
        first = -1
        for k, part in enumerate(d.bodies):
            idx = add(part.kind, part.shape, ci + 1, first if part.parent >= 0 else -1, part.wave)
            if k == 0:
                first = idx
    max_id = {INSTANCE_KIND_CLASS[k]: v - 1 for k, v in next_id.items()}
    max_id.update(cell=len(cells), nuc=len(cells))
    return bodies, max_id


def build_cell_scene(name: str, words: Sequence[int], box_lo: Sequence[float], box_hi: Sequence[float],
                     needs: Sequence[CropNeed], anchor: CropNeed | None = None) -> CellScene:
    """The seeded scene of one dataset whose EM covers ``[box_lo, box_hi]`` (nm).

    Parameters
    ----------
    name : str
        Dataset name.
    words : sequence of int
        Seed words (``SeedSequence(words)``): the same words give the same scene.
    box_lo, box_hi : sequence of float
        The EM's physical box; cells are laid out over it (and a cell beyond).
    needs : sequence of CropNeed
        Crops and the organelle families to place one of inside each.
    anchor : CropNeed, optional
        The crop a cell is laid out around (plasma membrane and nuclear envelope inside it).

    Returns
    -------
    CellScene
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))
    lo, hi = np.asarray(box_lo, dtype=np.float64), np.asarray(box_hi, dtype=np.float64)
    cells, nuclei, forced = _lattice(rng, lo, hi, anchor)
    anchor_cell = _cell_at(cells, forced[0] - 100.0 * forced[1]) if forced else -1
    nuclear = [_nuclear_parts(rng, n, forced if i == anchor_cell else ()) for i, n in enumerate(nuclei)]
    rooms = [CellRoom(c.ellipsoid, np.asarray(c.lo), np.asarray(c.hi), n) for c, n in zip(cells, nuclei)]
    placed: list[tuple[int, Draft]] = []
    _place_needed(rng, cells, rooms, needs, anchor, placed)
    _fill(rng, cells, rooms, lo, hi, placed)
    bodies, max_id = _assemble(cells, nuclei, nuclear, placed)
    waves = np.concatenate([_unit_rows(rng.standard_normal((2, 3))) * (2 * np.pi / rng.uniform(200.0, 320.0, (2, 1))),
                            rng.uniform(0.0, 2 * np.pi, (2, 1))], axis=1)
    return CellScene(name, tuple(bodies), len(cells), max_id, waves)
