"""Split touching instances: distance-map seeds and a seeded watershed, on foreground voxels.

``cc3d`` and ``edt`` run on the whole volume; every later step works on arrays of the
foreground voxels' flat indices, so the cost follows the foreground, not the volume,
and no Python loop runs over voxels or objects.

The watershed is computed as a *watershed cut* of the graph of steepest-ascent basins
of the distance map: each voxel climbs to its local maximum, and basins are joined
across their highest saddles to the seeds' regions. On a graph this is the partition
a flood from the seeds gives (Cousty et al., IEEE PAMI 2009), at basin resolution.
``skimage.segmentation.watershed`` from the same seeds gives the same split up to voxels
on the cuts (tested), but on a 512³ volume with 3 % foreground one call took 12.5 s, 7.7 s
of it in full-volume copies (float64 image, padding, cropping): with it the method is 4×
slower (``bench/bench_postprocess.py``).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence

import cc3d  # noqa: F401 (the docstring example uses it)
import edt
import numpy as np
from scipy.spatial import cKDTree

from auto3dseg.postprocess.ids import label_components, smallest_id_dtype

__all__ = ["WHOLE_VOLUME_VOXELS", "distance_maxima", "split_touching"]

#: foreground voxels up to which every object is split at once (~150 bytes each: 3 GB)
WHOLE_VOLUME_VOXELS = 20_000_000
#: maxima above which they are thinned through one per cell first (see :func:`_thin`)
DENSE_MAXIMA = 200_000
#: ... or when this many pairs of maxima could lie within reach of each other (maxima times the
#: voxels of a ball of radius min_distance_nm): a plateau of 27,000 maxima 12 voxels apart at
#: most made 10^8 pairs (1-9 GB) before
DENSE_PAIRS = 20_000_000
#: an object with more foreground voxels is kept whole (the same bound: 3 GB for real shapes,
#: up to ~10 GB for noise-like masks whose every voxel is a maximum)
MAX_SPLIT_VOXELS = WHOLE_VOLUME_VOXELS

#: connectivity -> how many axes a neighbour's offset may span
_RANK = {4: 1, 8: 2, 6: 1, 18: 2, 26: 3}


def _neighbours(ndim: int, connectivity: int, *, half: bool = False) -> list[tuple[int, ...]]:
    """Offsets of a voxel's neighbours, faces first; ``half`` keeps one of each ± pair."""
    rank = _RANK[connectivity]
    deltas = sorted((d for d in itertools.product((-1, 0, 1), repeat=ndim) if 0 < sum(map(abs, d)) <= rank),
                    key=lambda d: sum(map(abs, d)))
    return [d for d in deltas if d > (0,) * ndim] if half else deltas


def _border(coords: tuple[np.ndarray, ...], shape: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per axis, positions of the voxels on the array's first and last plane."""
    return [(np.flatnonzero(c == 0), np.flatnonzero(c == size - 1)) for c, size in zip(coords, shape)]


def _shifted(vox: np.ndarray, border: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...],
             delta: tuple[int, ...]) -> np.ndarray:
    """Flat index of each voxel's ``delta`` neighbour; the voxel's own where that is outside."""
    nb = vox + _offset(shape, delta)
    for (first, last), d in zip(border, delta):
        if d:
            out = first if d < 0 else last
            nb[out] = vox[out]
    return nb


def _offset(shape: tuple[int, ...], delta: tuple[int, ...]) -> int:
    """Flat (C-order) offset of ``delta`` in an array of ``shape``."""
    strides = np.cumprod((*shape[1:], 1)[::-1])[::-1]
    return int(np.dot(delta, strides))


def _ascent(fdist: np.ndarray, vox: np.ndarray, coords: tuple[np.ndarray, ...], shape: tuple[int, ...],
            spacing: Sequence[float], connectivity: int) -> np.ndarray:
    """For each voxel of ``vox`` (sorted flat indices of every foreground voxel), the
    position in ``vox`` of the local maximum that steepest ascent of ``fdist`` reaches.

    A voxel steps to its neighbour of steepest rise (per nm); where no face neighbour
    rises, the other neighbours of ``connectivity`` are tried (few voxels), so the end
    points are exactly the voxels no neighbour exceeds. Pointer jumping then takes every
    voxel to its end point in log(path length) passes.
    """
    value = fdist[vox]
    target = vox.copy()

    def climb(at: np.ndarray | None, deltas: list[tuple[int, ...]]) -> None:
        here, low = (vox, value) if at is None else (vox[at], value[at])
        border = _border(coords if at is None else tuple(c[at] for c in coords), shape)
        slope = np.zeros(here.size, dtype=np.float32)
        best = target if at is None else target[at]
        for delta in deltas:
            nb = _shifted(here, border, shape, delta)
            rise = fdist[nb] - low
            rise *= np.float32(1.0 / math.hypot(*(d * s for d, s in zip(delta, spacing))))
            up = rise > slope
            np.copyto(best, nb, where=up)
            np.maximum(slope, rise, out=slope)
        if at is not None:
            target[at] = best

    faces = _neighbours(len(shape), 2 * len(shape))
    climb(None, faces)
    others = [d for d in _neighbours(len(shape), connectivity) if d not in faces]
    if others:
        climb(np.flatnonzero(target == vox), others)
    # a rising neighbour has a larger distance, so it is foreground: it is in vox
    pointer = np.searchsorted(vox, target)
    moving = np.flatnonzero(pointer[pointer] != pointer)
    while moving.size:
        pointer[moving] = pointer[pointer[moving]]
        moving = moving[pointer[pointer[moving]] != pointer[moving]]
    return pointer


def _thin(points_nm: np.ndarray, value: np.ndarray, flat: np.ndarray, obj: np.ndarray,
          min_distance_nm: float, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Keep-mask of maxima: drop each one that a higher maximum of the same object (ties:
    the earlier in C order) lies within ``min_distance_nm`` of.

    With more than :data:`DENSE_MAXIMA` maxima (plateaus, or a noise-like mask where nearly every
    voxel is one), or more than :data:`DENSE_PAIRS` pairs that could be within reach (maxima
    times the voxels, of size ``spacing``, in a ball of radius ``min_distance_nm``), the pairs
    within reach grow with the square of their density: only the highest
    of each object in each cell of diagonal ``min_distance_nm`` is then compared (the others are
    within reach of it, so dropped exactly as before); a cell's top that only a lower-cell peak of
    a neighbouring cell would have dropped may stay."""
    keep = np.ones(value.size, dtype=bool)
    if value.size < 2:
        return keep
    rank = np.empty(value.size, dtype=np.intp)
    rank[np.lexsort((-flat, value))] = np.arange(value.size)
    cand = np.arange(value.size)
    ball = 4.0 / 3.0 * math.pi * float(min_distance_nm) ** 3 / float(np.prod(spacing)) if spacing is not None else 0.0
    if value.size > DENSE_MAXIMA or value.size * ball > DENSE_PAIRS:
        cell = np.floor(points_nm / (float(min_distance_nm) / math.sqrt(points_nm.shape[1]) + 1e-9)).astype(np.int64)
        group = np.unique(np.column_stack([obj.astype(np.int64), cell]), axis=0, return_inverse=True)[1].ravel()
        order = np.lexsort((rank, group))
        cand = order[np.r_[group[order][1:] != group[order][:-1], True]]  # the top of each group
        keep[:] = False
        keep[cand] = True
    pairs = cKDTree(points_nm[cand]).query_pairs(float(min_distance_nm), output_type="ndarray")
    i, j = cand[pairs[:, 0]], cand[pairs[:, 1]]
    same = obj[i] == obj[j]
    i, j = i[same], j[same]
    keep[np.where(rank[i] < rank[j], i, j)] = False
    return keep


def distance_maxima(dist: np.ndarray, labels: np.ndarray, spacing: Sequence[float], min_distance_nm: float,
                    *, connectivity: int = 26) -> np.ndarray:
    """Seeds for splitting: local maxima of a distance map, thinned per object.

    A voxel is a maximum when none of its neighbours (``connectivity``) has a larger
    distance; plateaus give several. A maximum is dropped when a higher one of the same
    object (ties: the earlier in C order) lies within ``min_distance_nm``, measured in
    nm with ``spacing``, so the same value holds on anisotropic voxels, and neighbouring
    objects never suppress each other's seeds.

    Parameters
    ----------
    dist : ndarray, float
        Distance to the background (0 outside the objects).
    labels : ndarray, int
        Object ids (0 background), same shape as ``dist``.
    spacing : sequence of float
        Voxel size per axis, nm.
    min_distance_nm : float
        Two seeds of one object are further apart than this.
    connectivity : int
        Neighbourhood of a maximum: 6, 18 or 26 (3-D), 4 or 8 (2-D).

    Returns
    -------
    ndarray of intp
        Flat (C-order) indices of the seeds, sorted.

    Examples
    --------
    >>> dist = np.array([[[0, 1, 2, 1, 2, 3, 2, 1, 0]]], dtype=np.float32)
    >>> labels = (dist > 0).astype(np.uint8)
    >>> distance_maxima(dist, labels, (1.0, 1.0, 1.0), 2.0).tolist()
    [2, 5]
    >>> distance_maxima(dist, labels, (1.0, 1.0, 1.0), 4.0).tolist()
    [5]
    """
    fg = np.flatnonzero(labels)
    coords = np.unravel_index(fg, dist.shape)
    fdist = np.ascontiguousarray(dist, dtype=np.float32).ravel()
    pointer = _ascent(fdist, fg, coords, dist.shape, spacing, connectivity)
    peaks = np.flatnonzero(pointer == np.arange(fg.size))
    points = np.stack([c[peaks] for c in coords], axis=1) * np.asarray(spacing, dtype=np.float64)
    keep = _thin(points, fdist[fg[peaks]], fg[peaks], labels.ravel()[fg[peaks]], min_distance_nm, spacing)
    return fg[peaks[keep]]


def _edges(flat: np.ndarray, vox: np.ndarray, basin: np.ndarray, first: int,
           border: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...], deltas: list[tuple[int, ...]],
           fdist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of touching basins and their saddle, highest saddle first, each pair once.

    ``flat`` holds basin ``k`` as id ``first + k`` (``basin`` at ``vox``) and lower ids
    elsewhere; the saddle of a pair is the highest ``min(dist)`` over the voxel pairs
    across their boundary.
    """
    own = basin + first
    lo_parts, hi_parts, s_parts = [], [], []
    for delta in deltas:
        nb = _shifted(vox, border, shape, delta)
        other = flat[nb]
        cross = np.flatnonzero((other != own) & (other >= first))  # another basin, not background
        lo_parts.append(basin[cross])
        hi_parts.append(other[cross].astype(np.int64) - first)
        s_parts.append(np.minimum(fdist[vox[cross]], fdist[nb[cross]]))
    lo, hi, s = (np.concatenate(p) for p in (lo_parts, hi_parts, s_parts))
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    key = lo * (int(hi.max(initial=0)) + 1) + hi
    order = np.lexsort((s, key))
    last = order[np.r_[key[order][1:] != key[order][:-1], True]] if key.size else order
    last = last[np.argsort(-s[last], kind="stable")]
    return lo[last], hi[last], s[last]


def _merge_basins(lo: np.ndarray, hi: np.ndarray, saddle: np.ndarray, top: np.ndarray, marked: np.ndarray,
                  h: float) -> np.ndarray:
    """Join basins along edges sorted by decreasing saddle; a region index per basin.

    An unmarked basin joins the neighbour across its highest saddle (the watershed cut);
    two marked regions join only when the lower of their tops rises at most ``h`` above
    the saddle (h-maxima; a joined region keeps the higher top).
    """
    parent = list(range(top.size))
    top_, marked_ = top.tolist(), marked.tolist()

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # a union-find is sequential by nature; it runs over basin pairs, never voxels
    for a, b, s in zip(lo.tolist(), hi.tolist(), saddle.tolist()):
        ra, rb = root(a), root(b)
        if ra == rb or (marked_[ra] and marked_[rb] and min(top_[ra], top_[rb]) - s > h):
            continue
        parent[rb] = ra
        top_[ra] = max(top_[ra], top_[rb])
        marked_[ra] = marked_[ra] or marked_[rb]
    return np.unique([root(i) for i in range(top.size)], return_inverse=True)[1]


def split_touching(mask: np.ndarray, spacing: Sequence[float], min_distance_nm: float, *, h_nm: float = 0.0,
                   connectivity: int = 26, parallel: int = 1, max_voxels: int = WHOLE_VOLUME_VOXELS) -> np.ndarray:
    """Connected components of ``mask``, with touching objects split by a seeded watershed.

    Seeds are :func:`distance_maxima` of the Euclidean distance to the background (nm,
    ``edt`` with ``spacing``). Each component holding two seeds or more is split by a
    watershed of the distance map from its seeds (see the module notes). With
    ``h_nm > 0``, two seeds' regions are joined back when the lower maximum rises at most
    ``h_nm`` above the saddle between them (h-maxima), which keeps elongated or rough
    objects whole. Other components keep their connected-component id.

    Parameters
    ----------
    mask : ndarray of bool
        Foreground, 2-D or 3-D.
    spacing : sequence of float
        Voxel size per axis in nm, in the axis order of ``mask``.
    min_distance_nm : float
        Least distance between two seeds of one object: about the radius of the smallest
        object that should be split off.
    h_nm : float
        Least height (nm of distance) of a maximum above the saddle to its neighbour for
        the two to stay apart; 0 keeps every seed's region.
    connectivity : int
        6, 18 or 26 (3-D), 4 or 8 (2-D), for the components and the split.
    parallel : int
        Threads for the distance transform.
    max_voxels : int
        Above this many foreground voxels, objects are split one by one in their bounding
        boxes (the same result; memory bounded by the largest object, about 150 bytes per
        foreground voxel otherwise).

    Returns
    -------
    ndarray of unsigned int
        Sequential ids 1..N (0 background); a dtype that holds N.

    Examples
    --------
    >>> zz, yy, xx = np.ogrid[:12, :12, :24]
    >>> ball = lambda x0: (zz - 6) ** 2 + (yy - 6) ** 2 + (xx - x0) ** 2 <= 25
    >>> mask = ball(6) | ball(15)   # two overlapping balls, one component
    >>> int(cc3d.connected_components(mask).max()), int(split_touching(mask, (8.0, 8.0, 8.0), 24.0).max())
    (1, 2)
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    if len(spacing) != mask.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match a {mask.ndim}-D mask")
    spacing = tuple(float(s) for s in spacing)
    labels, n = label_components(mask, connectivity, return_N=True)
    if n == 0 or mask.all():  # no background: no distance to split on (edt gives inf)
        return labels
    if np.count_nonzero(mask) > max_voxels:
        return _split_by_component(labels, n, spacing, min_distance_nm, h_nm, connectivity, parallel)
    return _split_whole(mask, labels, n, spacing, min_distance_nm, h_nm, connectivity, parallel)


def _split_by_component(labels: np.ndarray, n: int, spacing: tuple[float, ...], min_distance_nm: float,
                        h_nm: float, connectivity: int, parallel: int) -> np.ndarray:
    """:func:`_split_whole` one component at a time, in its bounding box: the working memory is the
    largest component's, not the volume's foreground. The split is the same: an object's
    distances, maxima, basins and saddles never involve another object's voxels, and a
    component too small to hold two seeds further apart than ``min_distance_nm`` is skipped."""
    stats = cc3d.statistics(labels)
    boxes, sizes = stats["bounding_boxes"], stats["voxel_counts"]
    next_id = n + 1
    for c in range(1, n + 1):
        box = boxes[c]
        if box is None:
            continue
        reach = math.sqrt(sum(((s.stop - s.start - 1) * sp) ** 2 for s, sp in zip(box, spacing)))
        if reach <= min_distance_nm:
            continue
        if sizes[c] > MAX_SPLIT_VOXELS:
            warnings.warn(f"an object of {int(sizes[c]):,} voxels is kept whole: splitting it would need "
                          f"{150 * int(sizes[c]) / 2**30:.0f}-{500 * int(sizes[c]) / 2**30:.0f} GB (a mask this large "
                          "and connected is rarely one class's objects: check the probability map and its threshold)",
                          stacklevel=2)
            continue
        pad = tuple(slice(max(0, s.start - 1), min(size, s.stop + 1)) for s, size in zip(box, labels.shape))
        sub = labels[pad] == c
        parts = _split_whole(sub, sub.astype(np.uint8), 1, spacing, min_distance_nm, h_nm, connectivity, parallel)
        k = int(parts.max(initial=0))
        if k <= 1:
            continue
        if next_id + k - 2 > np.iinfo(labels.dtype).max:
            labels = labels.astype(smallest_id_dtype(next_id + k), copy=False)
        view = labels[pad]
        ids = parts[sub].astype(labels.dtype)
        view[sub] = np.where(ids == 1, labels.dtype.type(c), ids + labels.dtype.type(next_id - 2))
        next_id += k - 1
    return labels


def _split_whole(mask: np.ndarray, labels: np.ndarray, n: int, spacing: tuple[float, ...], min_distance_nm: float,
                 h_nm: float, connectivity: int, parallel: int) -> np.ndarray:
    """The split of every component of ``labels`` (``n`` of them, ids 1..n) at once."""
    # edt reads the uint8 view of a bool mask about twice as fast as the bool array
    fdist = edt.edt(mask.view(np.uint8), anisotropy=spacing, parallel=parallel).ravel()
    fg = np.flatnonzero(mask)
    coords = np.unravel_index(fg, mask.shape)
    obj = labels.ravel()[fg]
    pointer = _ascent(fdist, fg, coords, mask.shape, spacing, connectivity)
    peaks = np.flatnonzero(pointer == np.arange(fg.size))
    points = np.stack([c[peaks] for c in coords], axis=1) * np.asarray(spacing)
    seeds = peaks[_thin(points, fdist[fg[peaks]], fg[peaks], obj[peaks], min_distance_nm, spacing)]
    split = np.bincount(obj[seeds], minlength=n + 1) >= 2
    if not split.any():
        return labels

    # basins of the voxels to split, numbered 0..B-1
    inside = np.flatnonzero(split[obj])
    vox, where = fg[inside], tuple(c[inside] for c in coords)
    tops = peaks[split[obj[peaks]]]
    b = tops.size
    index = np.empty(fg.size, dtype=np.int64)
    index[tops] = np.arange(b)
    basin = index[pointer[inside]]
    labels = labels.astype(np.promote_types(labels.dtype, smallest_id_dtype(n + b)), copy=False)
    flat = labels.ravel()
    flat[vox] = basin + (n + 1)  # basin ids above n in the label array itself, read at neighbours

    # edges across faces first; voxels of a region left without a seed (reached only
    # through an edge or corner) then look at their other neighbours too
    ndim, top = mask.ndim, fdist[fg[tops]]
    marked = np.zeros(b, dtype=bool)
    marked[index[seeds[split[obj[seeds]]]]] = True
    faces = _neighbours(ndim, 2 * ndim, half=True)
    edges = _edges(flat, vox, basin, n + 1, _border(where, mask.shape), mask.shape, faces, fdist)
    region = _merge_basins(*edges, top, marked, h_nm)
    others = [d for d in _neighbours(ndim, connectivity) if d not in faces and tuple(-x for x in d) not in faces]
    seeded = np.zeros(region.max() + 1, dtype=bool)
    seeded[region[marked]] = True
    lost = np.flatnonzero(~seeded[region[basin]])
    if others and lost.size:
        more = _edges(flat, vox[lost], basin[lost], n + 1, _border(tuple(c[lost] for c in where), mask.shape),
                      mask.shape, others, fdist)
        lo, hi, sad = (np.concatenate(p) for p in zip(edges, more))
        order = np.argsort(-sad, kind="stable")
        region = _merge_basins(lo[order], hi[order], sad[order], top, marked, h_nm)

    # new ids: first the split components' own (now free) ids, then n+1, n+2, ...: still sequential
    free = np.flatnonzero(split)
    new_ids = np.concatenate([free, np.arange(n + 1, n + 1 + region.max() + 1 - free.size)])
    flat[vox] = new_ids[region][basin]
    return labels
