"""Chunk-level reading of CellMap Zarr arrays: which chunks are on disk, and read errors that
name the array and the damaged chunk (re-exported by :mod:`converters.cellmap.zarr_tree`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import zarr

__all__ = ["CheckedArray", "chunk_coverage", "complement_mismatch", "missing_chunks"]


def chunk_coverage(arr: zarr.Array, start: Iterable[int], stop: Iterable[int]) -> float:
    """Fraction of the chunks overlapping ``arr[start:stop]`` that exist on disk.

    Missing chunks read as the fill value: a level with missing chunks in a crop's region
    would give a blank image there (the CellMap fetch tool downloads only some levels
    near each crop).
    """
    start_a = np.maximum(np.asarray(list(start)), 0)
    stop_a = np.minimum(np.asarray(list(stop)), arr.shape)
    if np.any(stop_a <= start_a):
        return 0.0
    chunks = np.asarray(arr.chunks)
    first, last = start_a // chunks, (stop_a - 1) // chunks
    sep = getattr(arr, "_dimension_separator", None) or "."
    prefix = arr.path + "/" if arr.path else ""
    store = arr.chunk_store if arr.chunk_store is not None else arr.store
    total = present = 0
    for i in range(first[0], last[0] + 1):
        for j in range(first[1], last[1] + 1):
            for k in range(first[2], last[2] + 1):
                total += 1
                present += f"{prefix}{i}{sep}{j}{sep}{k}" in store
    return present / total


def missing_chunks(arr: zarr.Array) -> list[str]:
    """Keys of the chunks of ``arr`` that are not on disk (in chunk-grid order).

    >>> a = zarr.zeros((4, 4), chunks=(2, 2), dtype="u1"); a[:2, :2] = 1
    >>> missing_chunks(a)
    ['0.1', '1.0', '1.1']
    """
    if arr.nchunks_initialized >= arr.nchunks:
        return []
    sep = getattr(arr, "_dimension_separator", None) or "."
    prefix = arr.path + "/" if arr.path else ""
    store = arr.chunk_store if arr.chunk_store is not None else arr.store
    grid = [range(-(-n // c)) for n, c in zip(arr.shape, arr.chunks)]
    return [key for idx in np.ndindex(*[len(g) for g in grid])
            if f"{prefix}{(key := sep.join(str(i) for i in idx))}" not in store]


def complement_mismatch(arr: zarr.Array, counts: dict, encoding: dict) -> list[str]:
    """Where the voxels ``arr`` reads disagree with its ``complement_counts``: one
    ``"absent: 119200 recorded, 130428 read"`` per value that differs (read slab by slab).

    >>> a = zarr.zeros((4, 4), chunks=(2, 2), dtype="u1"); a[:2] = 1
    >>> complement_mismatch(a, {"absent": 8, "unknown": 0}, {"absent": 0, "present": 1, "unknown": 255})
    []
    >>> complement_mismatch(a, {"absent": 4}, {"absent": 0})
    ['absent: 4 recorded, 8 read']
    """
    keys = [k for k in ("absent", "unknown") if k in counts and k in encoding]
    seen = dict.fromkeys(keys, 0)
    step = max(int(arr.chunks[0]), 1)
    for z in range(0, int(arr.shape[0]), step):
        block = arr[z:z + step]
        for k in keys:
            seen[k] += int(np.count_nonzero(block == encoding[k]))
    return [f"{k}: {int(counts[k])} recorded, {seen[k]} read" for k in keys if int(counts[k]) != seen[k]]


class CheckedArray:
    """A read-only zarr array whose read errors name the array and the damaged chunk.

    zarr reports a truncated or corrupt chunk as ``error during blosc decompression: -1``
    with no array and no chunk. On any read error this finds the first chunk of the
    requested region that cannot be decoded and raises :class:`ChunkReadError` naming the
    array, the chunk key and its file, and what to do.
    """

    def __init__(self, arr: zarr.Array, where: str):
        self.arr, self.where = arr, where
        self.shape, self.chunks, self.dtype, self.ndim = arr.shape, arr.chunks, arr.dtype, arr.ndim

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self.arr[key]
        except Exception as exc:  # noqa: BLE001 - zarr/numcodecs raise many types for a bad chunk
            raise self._explain(key, exc) from exc

    def _block_ranges(self, key: Any) -> list[range]:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        out = []
        for k, n, c in zip(key, self.shape, self.chunks):
            start, stop, _ = k.indices(n) if isinstance(k, slice) else (int(k), int(k) + 1, 1)
            out.append(range(start // c, max(start, stop - 1) // c + 1))
        return out

    def _explain(self, key: Any, exc: Exception):
        import itertools

        from converters.cellmap.zarr_tree import ChunkReadError  # it imports this module

        for idx in itertools.product(*self._block_ranges(key)):
            try:
                self.arr.get_block_selection(idx)
            except Exception as chunk_exc:  # noqa: BLE001
                ckey = self.arr._chunk_key(idx).removeprefix(f"{self.arr.path}/")
                root = getattr(self.arr.store, "path", None)
                file = Path(root, self.arr.path, ckey) if root else f"{self.where}/{ckey}"
                return ChunkReadError(
                    f"{self.where}: chunk {ckey} (block index {tuple(int(i) for i in idx)}) cannot be read "
                    f"({type(chunk_exc).__name__}: {chunk_exc}); its file {file} is damaged or truncated: delete it "
                    "and download it again (or the whole crop), then run the same command again")
        return ChunkReadError(f"{self.where}: reading {key} failed ({type(exc).__name__}: {exc}); check that the "
                              "array is complete (download it again) and run the same command again")
