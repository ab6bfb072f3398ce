"""Drawing synthetic 2-D cells: instance layouts (seeded weighted Voronoi cells in blobs,
isolated and border-cut cells) and one renderer per microscopy modality, each with its quirk."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

SMALL_PX = 10.0  #: a cell whose equivalent diameter is below this counts as small


# --------------------------------------------------------------------------------------
# Cell layouts
# --------------------------------------------------------------------------------------
def _smooth_field(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Smooth random field of unit standard deviation (built coarse, then zoomed)."""
    f = max(1, int(sigma // 4))
    coarse = (-(-shape[0] // f) + 2, -(-shape[1] // f) + 2)
    g = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma / f, mode="wrap")
    g = ndimage.zoom(g, f, order=1)[: shape[0], : shape[1]]
    return ((g - g.mean()) / (g.std() + 1e-12)).astype(np.float32)


def _place_seeds(shape: tuple[int, int], rng: np.random.Generator, diameter: tuple[float, float],
                 small_fraction: float, blob_fraction: float, n_isolated: int, n_border: int,
                 packing: float) -> list[tuple[float, float, float, bool]]:
    """Dart-throwing of ``(cy, cx, radius, clustered)``; clustered pairs overlap (touch)."""
    h, w = shape
    r_lo, r_hi = diameter[0] / 2, diameter[1] / 2
    seeds: list[tuple[float, float, float, bool]] = []
    cell = 2.6 * r_hi + 4.0
    grid: dict[tuple[int, int], list[int]] = {}

    def add(cy: float, cx: float, r: float, clustered: bool) -> bool:
        gy, gx = int(cy // cell), int(cx // cell)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for y, x, rj, cj in grid.get((gy + dy, gx + dx), ()):
                    need = packing * (r + rj) if (clustered and cj) else 1.3 * (r + rj) + 3.0
                    if (cy - y) ** 2 + (cx - x) ** 2 < need * need:
                        return False
        seed = (float(cy), float(cx), float(r), clustered)
        grid.setdefault((gy, gx), []).append(seed)
        seeds.append(seed)
        return True

    for _ in range(n_border):  # big cells whose centre lies near (or past) an edge
        for _ in range(30):
            r = float(rng.uniform((r_lo + r_hi) / 2, r_hi))
            side, off = int(rng.integers(4)), float(rng.uniform(-0.3, 0.5)) * r
            along = float(rng.uniform(r, (w if side < 2 else h) - r))
            cy, cx = {0: (off, along), 1: (h - 1 - off, along),
                      2: (along, off), 3: (along, w - 1 - off)}[side]
            if add(cy, cx, r, False):
                break
    blob = np.zeros(shape, dtype=bool)
    if blob_fraction > 0:
        field = _smooth_field(shape, rng, min(shape) / 7)
        blob = field > np.quantile(field, 1.0 - blob_fraction)
    free_y, free_x = np.nonzero(~blob)
    for _ in range(n_isolated):
        for _ in range(30):
            k, r = int(rng.integers(free_y.size)), float(rng.uniform(r_lo, r_hi))
            if add(free_y[k] + rng.random(), free_x[k] + rng.random(), r, False):
                break
    ys, xs = np.nonzero(blob)
    n_try = int(8 * ys.size / (math.pi * max(r_lo, 3.0) ** 2))
    pick = rng.integers(max(ys.size, 1), size=2 * n_try)
    pys = (ys[pick] + rng.random(2 * n_try)).tolist()
    pxs = (xs[pick] + rng.random(2 * n_try)).tolist()
    rad = np.concatenate([rng.uniform(r_lo, r_hi, n_try), rng.uniform(3.0, 4.5, n_try)]).tolist()
    fails = 0
    for k in range(n_try):  # ordinary cells first, until the blobs are full
        fails = 0 if add(pys[k], pxs[k], rad[k], True) else fails + 1
        if fails > 500:
            break
    n_small = round(small_fraction / (1.0 - small_fraction + 1e-9) * len(seeds))
    for k in range(n_try, 2 * n_try):  # then 6-9 px cells squeezed in between
        if n_small <= 0:
            break
        n_small -= add(pys[k], pxs[k], rad[k], True)
    return seeds


def cell_layout(shape: tuple[int, int], rng: np.random.Generator, *,
                diameter: tuple[float, float] = (10.0, 26.0), small_fraction: float = 0.15,
                blob_fraction: float = 0.5, n_isolated: int = 3, n_border: int = 2,
                packing: float = 0.75, min_area: int = 20) -> np.ndarray:
    """Random instance mask of touching, isolated and border-cut cells.

    Seeds of ordinary cells (``diameter`` range, px), then ``small_fraction`` of 6-9 px
    ones, are thrown into a random blob mask covering ``blob_fraction`` of the image with
    centre distances ``>= packing * (r_i + r_j)``, so neighbours overlap. Each pixel goes
    to the seed with the smallest elliptical distance over radius (a weighted Voronoi
    diagram, which keeps small cells whole) and is foreground where that is below a noisy
    1, so overlapping neighbours share a border. ``n_isolated`` cells sit apart outside
    the blobs, ``n_border`` big ones straddle the edge. Each cell keeps its largest
    component; cells under ``min_area`` px are dropped.

    Returns
    -------
    numpy.ndarray of int32
        ``shape`` (H, W); 0 background, cells ``1..N`` (sequential).

    Examples
    --------
    >>> lab = cell_layout((96, 96), np.random.default_rng(0))
    >>> lab.dtype, lab.shape, int(lab.max()) == len(np.unique(lab)) - 1
    (dtype('int32'), (96, 96), True)
    """
    h, w = shape
    seeds = _place_seeds(shape, rng, diameter, small_fraction, blob_fraction,
                         n_isolated, n_border, packing)
    best = np.full(shape, np.inf, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.int32)
    for k, (cy, cx, r, _) in enumerate(seeds, start=1):
        aspect = float(rng.uniform(0.9, 1.0) if r < 5 else rng.uniform(0.72, 1.0))
        theta = float(rng.uniform(0.0, math.pi))
        reach = math.ceil(1.35 * r / aspect) + 1
        y0, y1 = max(0, int(cy) - reach), min(h, int(cy) + reach + 1)
        x0, x1 = max(0, int(cx) - reach), min(w, int(cx) + reach + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        u = (dy * math.cos(theta) + dx * math.sin(theta)) / (r * aspect)
        v = (dx * math.cos(theta) - dy * math.sin(theta)) * aspect / r
        nd = np.sqrt(u * u + v * v)
        sub_best, sub_owner = best[y0:y1, x0:x1], owner[y0:y1, x0:x1]
        take = nd < sub_best
        sub_best[take], sub_owner[take] = nd[take], k
    owner[best > 1.0 + np.clip(0.1 * _smooth_field(shape, rng, 2.0), -0.3, 0.3)] = 0
    labels = np.zeros(shape, dtype=np.int32)
    n = 0
    for k, sl in enumerate(ndimage.find_objects(owner), start=1):
        if sl is None:
            continue
        comp, _ = ndimage.label(owner[sl] == k)
        mask = comp == int(np.argmax(np.bincount(comp.ravel())[1:])) + 1
        if int(mask.sum()) >= min_area:
            n += 1
            labels[sl][mask] = n
    return labels


def relabel_ids(labels: np.ndarray, rng: np.random.Generator, dtype: str,
                sequential: bool = True) -> np.ndarray:
    """Cast ids ``1..N`` to ``dtype``, or (``sequential=False``) to shuffled ids with gaps.

    Examples
    --------
    >>> lab = np.array([[0, 1], [2, 3]], dtype=np.int32)
    >>> out = relabel_ids(lab, np.random.default_rng(0), "int16", sequential=False)
    >>> out.dtype, len(np.unique(out)), int(out[0, 0])
    (dtype('int16'), 4, 0)
    """
    n = int(labels.max())
    lut = np.arange(n + 1, dtype=np.int64)
    if not sequential and n:
        lut[1:] = rng.permutation(np.sort(rng.choice(np.arange(1, 3 * n + 2), n, replace=False)))
    if lut.max() > np.iinfo(np.dtype(dtype)).max:
        raise ValueError(f"id {lut.max()} does not fit {dtype}")
    return lut[labels].astype(dtype)


def cell_stats(labels: np.ndarray) -> dict[str, Any]:
    """Cell count, ids, equivalent diameters, border cells and touching (4-neighbour) pairs.

    Examples
    --------
    >>> cell_stats(np.array([[1, 1, 0], [0, 2, 0], [0, 0, 0]]))["n_touching_pairs"]
    1
    """
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    diam = 2.0 * np.sqrt(areas / math.pi) if ids.size else np.zeros(1)
    frame = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    pairs = set()
    for a, b in ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:])):
        m = (a > 0) & (b > 0) & (a != b)
        pairs |= set(zip(np.minimum(a[m], b[m]).tolist(), np.maximum(a[m], b[m]).tolist(),
                           strict=True))
    return {"n_cells": int(ids.size), "max_id": int(ids.max()) if ids.size else 0,
            "ids_sequential": bool(np.array_equal(ids, np.arange(1, ids.size + 1))),
            "min_diameter_px": round(float(diam.min()), 2),
            "max_diameter_px": round(float(diam.max()), 2),
            "n_small_cells": int((diam[: ids.size] < SMALL_PX).sum()),
            "n_border_cells": int(np.unique(frame[frame > 0]).size),
            "n_touching_pairs": len(pairs)}


# --------------------------------------------------------------------------------------
# Renderers: (labels with ids 1..N, rng) -> image
# --------------------------------------------------------------------------------------
def _per_cell(labels: np.ndarray, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    lut = rng.uniform(lo, hi, int(labels.max()) + 1)
    lut[0] = 0.0
    return lut[labels]


def _edges(labels: np.ndarray) -> np.ndarray:
    """Cell pixels with a 4-neighbour of another id (or background)."""
    e = np.zeros(labels.shape, dtype=bool)
    d0, d1 = labels[1:] != labels[:-1], labels[:, 1:] != labels[:, :-1]
    e[1:] |= d0
    e[:-1] |= d0
    e[:, 1:] |= d1
    e[:, :-1] |= d1
    return e & (labels > 0)


def _inner_distance(labels: np.ndarray) -> np.ndarray:
    """Distance (px) of each cell pixel to its own cell's edge."""
    return ndimage.distance_transform_edt((labels > 0) & ~_edges(labels))


def render_fluorescence(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """16-bit grayscale fluorescence (H, W): blurred bright cells, Poisson noise.

    Photon counts times a camera gain on an offset of ~27000, saturating at 65535, like a
    real CellSeg image whose values span 27199-65535.

    Examples
    --------
    >>> img = render_fluorescence(np.eye(8, dtype=np.int32), np.random.default_rng(0))
    >>> img.dtype, img.shape, bool(img.min() > 20000)
    (dtype('uint16'), (8, 8), True)
    """
    prof = 0.55 + 0.45 * np.clip(_inner_distance(labels) / 4.0, 0.0, 1.0)
    photons = ndimage.gaussian_filter(_per_cell(labels, rng, 120.0, 330.0) * prof, 1.2)
    photons += 18.0 * (1.0 + 0.3 * _smooth_field(labels.shape, rng, min(labels.shape) / 4))
    counts = rng.poisson(np.clip(photons, 0.0, None))
    img = float(rng.integers(26500, 28500)) + 125.0 * counts
    return np.clip(img, 0, 65535).astype(np.uint16)


HEMATOXYLIN = np.array([0.65, 0.70, 0.29])  #: optical density per RGB unit of stain
EOSIN = np.array([0.07, 0.99, 0.11])


def render_brightfield(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB stained brightfield (H, W, 3) uint8: purple cells on pink/white (Beer-Lambert).

    Examples
    --------
    >>> render_brightfield(np.eye(8, dtype=np.int32), np.random.default_rng(0)).shape
    (8, 8, 3)
    """
    prof = 0.6 + 0.4 * np.clip(_inner_distance(labels) / 3.0, 0.0, 1.0)
    hema = _per_cell(labels, rng, 0.5, 1.1) * prof + 0.5 * _edges(labels)
    eos = 0.12 + 0.04 * _smooth_field(labels.shape, rng, min(labels.shape) / 4)
    hema = ndimage.gaussian_filter(hema, 0.8)
    eos = ndimage.gaussian_filter(eos + 0.25 * (labels > 0), 0.8)
    od = hema[..., None] * HEMATOXYLIN + eos[..., None] * EOSIN
    rgb = 250.0 * np.exp(-od) + rng.normal(0.0, 3.0, od.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def render_multiplex(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """4-channel uint16 (4, H, W): membrane, nucleus, cytoplasm, then an unrelated channel.

    Only the first 3 channels show the cells; channel 3 is smooth out-of-focus junk.

    Examples
    --------
    >>> render_multiplex(np.eye(8, dtype=np.int32), np.random.default_rng(0)).shape
    (4, 8, 8)
    """
    dist = _inner_distance(labels)
    mem = ndimage.gaussian_filter(_edges(labels) * _per_cell(labels, rng, 0.6, 1.0), 0.8)
    nuc = _per_cell(labels, rng, 0.5, 1.0) * np.clip((dist - 1.5) / 2.0, 0.0, 1.0)
    cyto = ndimage.gaussian_filter(_per_cell(labels, rng, 0.3, 0.7), 1.0)
    junk = np.clip(0.5 + 0.25 * _smooth_field(labels.shape, rng, 6.0), 0.0, None)
    chans = np.stack([mem, ndimage.gaussian_filter(nuc, 1.0), cyto, junk])
    counts = rng.poisson(chans * np.array([2500.0, 3000.0, 1500.0, 800.0])[:, None, None] + 60)
    return np.clip(100 + counts, 0, 65535).astype(np.uint16)


def render_phase_contrast(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """8-bit grayscale phase contrast (H, W): dark cells, dark edges, bright halos.

    Examples
    --------
    >>> render_phase_contrast(np.eye(8, dtype=np.int32), np.random.default_rng(0)).dtype
    dtype('uint8')
    """
    fg = (labels > 0).astype(np.float64)
    halo = np.clip(ndimage.gaussian_filter(fg, 2.5) - fg, 0.0, None)
    body = ndimage.gaussian_filter(fg * _per_cell(labels, rng, 0.6, 1.0), 1.0)
    edge = ndimage.gaussian_filter(_edges(labels).astype(np.float64), 0.7)
    img = (140.0 + 12.0 * _smooth_field(labels.shape, rng, min(labels.shape) / 4)
           - 45.0 * body - 30.0 * edge + 160.0 * halo + rng.normal(0.0, 4.0, labels.shape))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_fluorescence_rgb(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB 8-bit fluorescence (H, W, 3): green cytoplasm, blue nuclei, dark background.

    Examples
    --------
    >>> render_fluorescence_rgb(np.eye(8, dtype=np.int32), np.random.default_rng(0)).shape
    (8, 8, 3)
    """
    dist = _inner_distance(labels)
    green = _per_cell(labels, rng, 90.0, 200.0) * (0.7 + 0.3 * np.clip(dist / 3.0, 0.0, 1.0))
    blue = _per_cell(labels, rng, 120.0, 240.0) * np.clip((dist - 1.0) / 2.0, 0.0, 1.0)
    rgb = np.stack([ndimage.gaussian_filter(c, 1.0) for c in (0.15 * green, green, blue)], -1)
    rgb += 8.0 + rng.normal(0.0, 5.0, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


Renderer = Callable[[np.ndarray, np.random.Generator], np.ndarray]
#: modality -> (renderer, image dtype, channels, channel layout)
MODALITIES: dict[str, tuple[Renderer, str, int, str]] = {
    "fluo_gray16": (render_fluorescence, "uint16", 1, "HW"),
    "brightfield_rgb8": (render_brightfield, "uint8", 3, "HWC"),
    "multiplex_4ch16": (render_multiplex, "uint16", 4, "CHW"),
    "phase_gray8": (render_phase_contrast, "uint8", 1, "HW"),
    "fluo_rgb8": (render_fluorescence_rgb, "uint8", 3, "HWC"),
}


