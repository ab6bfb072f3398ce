"""Bounded-memory resampling of a (zarr) array onto a new axis-aligned grid.

Axis-aligned scaling and shifting is separable, so every output z-slab is computed from
one source slab with three 1-D passes (z, then y, then x). Where the output grid falls on
source voxel centres (the usual case: same voxel size, aligned origin) an axis is a plain
slice and costs nothing. Memory is bounded by one source slab plus the output array.

Source indices come from :func:`converters.geometry.source_coordinates`: fractional
indices of each output voxel centre. An output voxel whose centre lies outside the source
voxels' extent (``< -0.5`` or ``> n - 0.5``) is *padded*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["AxisPlan", "plan_axis", "resample_into"]


@dataclass(frozen=True)
class AxisPlan:
    """How one output axis samples the source.

    Attributes
    ----------
    lo, hi : int
        Output indices ``lo:hi`` lie inside the source; the rest are padded.
    index : np.ndarray
        Source index of each valid output voxel (``floor`` for linear, nearest otherwise).
    weight : np.ndarray or None
        Linear weight of ``index + 1``; None for nearest or when every weight is zero.
    is_slice : bool
        True when ``index`` is consecutive and no weights are needed (a plain slice).
    """

    lo: int
    hi: int
    index: np.ndarray
    weight: np.ndarray | None
    is_slice: bool

    @property
    def src_start(self) -> int:
        return int(self.index.min()) if self.index.size else 0

    @property
    def src_stop(self) -> int:
        if not self.index.size:
            return 0
        return int(self.index.max()) + (2 if self.weight is not None else 1)


def plan_axis(coords: np.ndarray, n_src: int, mode: str) -> AxisPlan:
    """Plan the sampling of one axis.

    Parameters
    ----------
    coords : ndarray of float
        Fractional source index of each output voxel centre (monotonic increasing).
    n_src : int
        Source length on this axis.
    mode : {"linear", "nearest"}

    Examples
    --------
    >>> p = plan_axis(np.arange(3, 7, dtype=float), 10, "linear")
    >>> p.is_slice, p.src_start, p.src_stop
    (True, 3, 7)
    >>> p = plan_axis(np.array([-2.0, 0.25, 9.6]), 10, "nearest")
    >>> p.lo, p.hi, p.index.tolist()
    (1, 2, [0])
    """
    if mode not in ("linear", "nearest"):
        raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
    coords = np.asarray(coords, dtype=np.float64)
    eps = 1e-6
    if mode == "nearest":
        idx = np.floor(coords + 0.5 + eps).astype(np.int64)
        valid = (idx >= 0) & (idx < n_src)
    else:
        valid = (coords >= -0.5 - eps) & (coords <= n_src - 0.5 + eps)
    where = np.flatnonzero(valid)
    if where.size == 0:
        return AxisPlan(0, 0, np.zeros(0, np.int64), None, True)
    lo, hi = int(where[0]), int(where[-1]) + 1
    if mode == "nearest":
        index, weight = idx[lo:hi], None
    else:
        c = np.clip(coords[lo:hi], 0, n_src - 1)
        index = np.floor(c + eps).astype(np.int64)
        weight = c - index
        weight[np.abs(weight) < eps] = 0.0
        if n_src > 1:
            over = index >= n_src - 1
            index[over] = n_src - 2
            weight[over] = 1.0
        else:
            index[:] = 0
            weight[:] = 0.0
        if not np.any(weight):
            weight = None
    consecutive = index.size <= 1 or bool(np.all(np.diff(index) == 1))
    return AxisPlan(lo, hi, index, weight, consecutive and weight is None)


def _apply_axis(block: np.ndarray, plan: AxisPlan, axis: int, offset: int, sel: slice) -> np.ndarray:
    """Sample ``block`` (which starts at source index ``offset``) along ``axis``."""
    index = plan.index[sel] - offset
    weight = None if plan.weight is None else plan.weight[sel]
    if weight is None:
        if index.size and np.all(np.diff(index) == 1):
            sl = [slice(None)] * block.ndim
            sl[axis] = slice(int(index[0]), int(index[-1]) + 1)
            return block[tuple(sl)]
        return np.take(block, index, axis=axis)
    if index.size and np.all(np.diff(index) == 1):
        # a pure shift (same voxel size): views, no gather
        sl_a = [slice(None)] * block.ndim
        sl_b = [slice(None)] * block.ndim
        sl_a[axis] = slice(int(index[0]), int(index[-1]) + 1)
        sl_b[axis] = slice(int(index[0]) + 1, int(index[-1]) + 2)
        a, b = block[tuple(sl_a)], block[tuple(sl_b)]
    else:
        a, b = np.take(block, index, axis=axis), np.take(block, index + 1, axis=axis)
    shape = [1] * block.ndim
    shape[axis] = -1
    w = weight.astype(np.float32).reshape(shape)
    out = b.astype(np.float32)  # always a fresh array
    out -= a
    out *= w
    out += a
    return out


def _slabs(index: np.ndarray, chunks: Sequence[int] | None, slab: int, linear: bool) -> list[slice]:
    """Split output z-planes into runs whose fresh source planes fall in whole source chunks.

    A linear slab also needs the plane after its last index; runs are cut so that this
    extra plane is the *first* plane of the next run's chunk-aligned read, which
    :class:`_SlabReader` keeps instead of decompressing that chunk twice.
    """
    step = int(chunks[0]) * max(1, round(slab / int(chunks[0]))) if chunks else max(1, slab)
    key = (index + 1) // step if linear else index // step
    breaks = np.flatnonzero(np.diff(key)) + 1
    edges = [0, *breaks.tolist(), index.size]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


class _SlabReader:
    """Reads z-ranges of a source, reusing planes already read by the previous slab."""

    def __init__(self, source: Any, ys: slice, xs: slice):
        self.source, self.ys, self.xs = source, ys, xs
        self.start, self.block = 0, None

    def read(self, z0: int, z1: int) -> np.ndarray:
        z1 = min(z1, self.source.shape[0])
        b = self.block
        if b is not None and self.start <= z0 < self.start + b.shape[0] < z1:
            keep = b[z0 - self.start :]
            fresh = np.asarray(self.source[self.start + b.shape[0] : z1, self.ys, self.xs])
            block = np.concatenate([keep, fresh], axis=0)
        else:
            block = np.asarray(self.source[z0:z1, self.ys, self.xs])
        self.start, self.block = z0, block
        return block


def resample_into(
    source: Any,
    coords: Sequence[np.ndarray],
    out: np.ndarray,
    mode: str,
    pad_value: float = 0,
    slab: int = 32,
    post: Callable[[np.ndarray], np.ndarray] | None = None,
) -> int:
    """Resample ``source`` at ``coords`` into the preallocated array ``out``.

    Parameters
    ----------
    source : array-like
        Anything sliceable as ``source[z0:z1, y0:y1, x0:x1]`` returning an ndarray (a
        zarr array, an ndarray). Only the needed region is read, one slab at a time.
    coords : sequence of 3 ndarrays
        Fractional source index of each output voxel centre, per axis.
    out : ndarray
        Destination, shape ``tuple(len(c) for c in coords)``; its dtype is the result's.
    mode : {"linear", "nearest"}
        Linear for images, nearest for labels.
    pad_value : number
        Written where the output lies outside the source.
    slab : int
        About how many source z-planes are read at once, which bounds the memory used.
        Slabs follow the source's z-chunks (when it has ``chunks``), so no chunk is
        decompressed twice.
    post : callable, optional
        Applied to each resampled slab before it is stored (a label lookup table, say).

    Returns
    -------
    int
        The number of padded output voxels.

    Examples
    --------
    >>> src = np.arange(4, dtype=np.uint8).reshape(1, 1, 4) * 10
    >>> out = np.empty((1, 1, 3), np.uint8)
    >>> coords = [np.zeros(1), np.zeros(1), np.array([0.5, 2.5, 4.0])]
    >>> resample_into(src, coords, out, "linear"), out.tolist()
    (1, [[[5, 25, 0]]])
    """
    plans = [plan_axis(c, n, mode) for c, n in zip(coords, source.shape)]
    out_shape = tuple(len(c) for c in coords)
    if out.shape != out_shape:
        raise ValueError(f"out has shape {out.shape}, expected {out_shape}")
    inside = tuple(slice(p.lo, p.hi) for p in plans)
    n_inside = int(np.prod([p.hi - p.lo for p in plans], dtype=np.int64))
    n_padded = int(np.prod(out_shape, dtype=np.int64)) - n_inside
    if n_padded:
        out[...] = pad_value
    if n_inside == 0:
        return n_padded

    pz, py, px = plans
    y0, y1, x0, x1 = py.src_start, py.src_stop, px.src_start, px.src_stop
    is_int = np.issubdtype(out.dtype, np.integer)
    info = np.iinfo(out.dtype) if is_int else None
    reader = _SlabReader(source, slice(y0, y1), slice(x0, x1))
    for sel in _slabs(pz.index, getattr(source, "chunks", None), slab, pz.weight is not None):
        zi = pz.index[sel]
        z0 = int(zi.min())
        z1 = int(zi.max()) + (2 if pz.weight is not None else 1)
        block = reader.read(z0, z1)
        block = _apply_axis(block, pz, 0, z0, sel)
        block = _apply_axis(block, py, 1, y0, slice(None))
        block = _apply_axis(block, px, 2, x0, slice(None))
        if block.dtype != out.dtype and is_int and block.dtype.kind == "f":
            np.rint(block, out=block)
            np.clip(block, info.min, info.max, out=block)
        if post is not None:
            block = post(block)
        out[pz.lo + sel.start : pz.lo + sel.stop, inside[1], inside[2]] = block
    return n_padded
