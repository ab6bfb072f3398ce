"""Put a submitted array on a test crop's grid the way the official CellMap scorer does.

The official rule differs from :func:`auto3dseg.submission.placement.place_on_grid` (which aligns
voxel centres physically, used by the strict rules):

1. **resampling** (when the array's voxel size is not ``numpy.allclose`` to the
   target's): ``skimage.transform.rescale`` by ``voxel_size / target_voxel_size`` with
   ``mode="constant"`` and ``preserve_range`` — nearest (``order=0``, cast back to the
   array's dtype) for instance classes; linear (``order=1``, skimage's default
   anti-aliasing when shrinking) then ``> 0.5`` for semantic ones. The resampled array
   keeps the array's first voxel at index 0 (edges aligned, no half-voxel shift).
   An array without a voxel size is not resampled: it is centre-padded/cropped to the
   target shape. Arrays over 500 MiB (as float32) are resampled in blocks of 297³ voxels,
   each rescaled on its own and placed at ``int(start · factor)``;
2. **translation**: the array's translation is floored to the target's voxel lattice
   (``(t // v) · v``), its offset from the target translation is
   ``sign(d) · (|d| // v)`` voxels, and the array is pasted there, cut to the target
   shape. No translation means offset 0;
3. semantic voxels count as foreground where ``> 0`` afterwards, so a float array at the
   target voxel size counts every value above 0 (0.3 included), while a resampled one
   counts what survived ``> 0.5``.

An array more than 4096 times the target's voxel count is refused (the official scorer
raises).

Example::

    >>> import numpy as np
    >>> from converters.geometry import Grid
    >>> target = Grid((0.0, 0.0, 0.0), (8.0, 8.0, 8.0), (1, 1, 4))
    >>> a = np.array([[[1, 2, 3, 4]]], np.uint8)
    >>> official_place(a, (8.0, 8.0, 8.0), (0.0, 0.0, 8.0), target, "instance")[0, 0].tolist()
    [0, 1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from converters.geometry import Grid

__all__ = [
    "CHUNK_BYTES_LIMIT",
    "MAX_VOLUME_RATIO",
    "centre_pad_crop",
    "official_offset",
    "official_place",
    "official_rescale",
]

MAX_VOLUME_RATIO = 16.0**3          # source voxels / target voxels above this: refused
CHUNK_BYTES_LIMIT = 500 * 1024**2   # float32 bytes above which the source is resampled in blocks
_CHUNK_SIDE = max(32, int((100 * 1024 * 1024 / 4) ** (1 / 3)))  # 297 voxels per block side


def official_rescale(image: np.ndarray, factors: Sequence[float], kind: str) -> np.ndarray:
    """``skimage.transform.rescale`` as the official scorer calls it (see the module notes).

    Instance: nearest, cast back to the input dtype. Semantic: bool becomes float32,
    linear interpolation; the result is *not* thresholded here.

    >>> official_rescale(np.array([[[0, 1]]], np.uint8), (1, 1, 2), "instance")[0, 0].tolist()
    [0, 0, 1, 1]
    """
    from skimage.transform import rescale

    if kind == "instance":
        return rescale(image, tuple(factors), order=0, mode="constant", preserve_range=True).astype(image.dtype)
    if image.dtype == bool:
        image = image.astype(np.float32)
    return rescale(image, tuple(factors), order=1, mode="constant", preserve_range=True)


def _rescale_in_blocks(arr: Any, factors: np.ndarray, kind: str) -> np.ndarray:
    """Resample a large array block by block, as the official scorer does above 500 MiB."""
    out_shape = tuple(max(1, int(np.round(s * f))) for s, f in zip(arr.shape, factors))
    out = np.zeros(out_shape, dtype=arr.dtype if kind == "instance" else np.float32)
    side = _CHUNK_SIDE
    for z in range(0, arr.shape[0], side):
        for y in range(0, arr.shape[1], side):
            for x in range(0, arr.shape[2], side):
                block = np.asarray(arr[z:z + side, y:y + side, x:x + side])
                small = official_rescale(block, factors, kind)
                start = [int(s * f) for s, f in zip((z, y, x), factors)]
                stop = [min(s + n, o) for s, n, o in zip(start, small.shape, out_shape)]
                out[tuple(slice(a, b) for a, b in zip(start, stop))] = \
                    small[tuple(slice(0, b - a) for a, b in zip(start, stop))]
    return out > 0.5 if kind == "semantic" else out


def centre_pad_crop(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Pad (zeros) or crop ``image`` symmetrically to ``shape``; the extra voxel goes after.

    >>> centre_pad_crop(np.array([[[1, 2, 3, 4, 5]]]), (1, 1, 2)).tolist()
    [[[2, 3]]]
    >>> centre_pad_crop(np.array([[[7]]]), (1, 1, 4)).tolist()
    [[[0, 7, 0, 0]]]
    """
    pads = [((t - s) // 2, t - s - (t - s) // 2) if s < t else (0, 0) for s, t in zip(image.shape, shape)]
    if any(p for pair in pads for p in pair):
        image = np.pad(image, pads, mode="constant", constant_values=0)
    cut = tuple(slice((s - t) // 2, (s - t) // 2 + t) if s > t else slice(None) for s, t in zip(image.shape, shape))
    return image[cut]


def official_offset(translation: Sequence[float] | None, target: Grid) -> np.ndarray:
    """Where the array's voxel 0 lands in the target, in target voxels (the official snapping).

    The translation is floored onto the target voxel lattice (the target's is not), then
    the distance to the target translation is counted in whole voxels towards zero. With
    CellMap's half-voxel translations (4 + 8k nm) an array that starts inside the crop
    lands one voxel early: 100 nm is 12 voxels after 4 nm, but ``100 // 8 · 8 = 96`` is
    92 nm = 11.5 voxels after it, counted as 11.

    >>> official_offset((100.0, 12.0, 7.9), Grid((4.0, 4.0, 4.0), (8.0, 8.0, 8.0), (4, 4, 4))).tolist()
    [11, 0, 0]
    >>> official_offset((-20.0, 4.0, 4.0), Grid((4.0, 4.0, 4.0), (8.0, 8.0, 8.0), (4, 4, 4))).tolist()
    [-3, 0, 0]
    """
    if translation is None:
        return np.zeros(3, dtype=int)
    vs = np.asarray(target.spacing, dtype=float)
    tgt = np.asarray(target.origin, dtype=float)
    snapped = (np.asarray(translation, dtype=float) // vs) * vs
    diff = snapped - tgt
    return ((np.abs(diff) // vs) * np.sign(diff)).astype(int)


def official_place(array: Any, voxel_size: Sequence[float] | None, translation: Sequence[float] | None,
                   target: Grid, kind: str) -> np.ndarray:
    """A submitted array on the target grid by the official rules (see the module notes).

    Parameters
    ----------
    array : ndarray or zarr array
        The submitted label array (z, y, x).
    voxel_size, translation : 3 floats or None
        Its attributes (nm, z, y, x); None when absent.
    target : Grid
        The test crop's grid (from the manifest, or the truth's attributes).
    kind : {"semantic", "instance"}
        Interpolation: semantic linear then ``> 0.5``, instance nearest.

    Returns
    -------
    ndarray
        ``target.shape``; the array's own dtype, or bool where semantic was resampled.

    Raises
    ------
    ValueError
        If the array has more than :data:`MAX_VOLUME_RATIO` times the target's voxels.
    """
    tgt_shape = tuple(int(s) for s in target.shape)
    tgt_vs = np.asarray(target.spacing, dtype=float)
    n_src, n_tgt = float(np.prod(array.shape)), float(np.prod(tgt_shape))
    if n_src / n_tgt > MAX_VOLUME_RATIO:
        raise ValueError(f"{n_src / n_tgt:.1f} times the target's voxels (limit {MAX_VOLUME_RATIO:.0f}): "
                         "the official scorer refuses it; write it closer to the target resolution")
    big = n_src * 4 > CHUNK_BYTES_LIMIT
    image: np.ndarray | None = None
    if big and voxel_size is not None and not np.allclose(voxel_size, tgt_vs):
        image = _rescale_in_blocks(array, np.asarray(voxel_size, float) / tgt_vs, kind)
    elif big and voxel_size is None:
        ratios = np.asarray(array.shape, float) / np.asarray(tgt_shape, float)
        if np.all(ratios >= 1.0) and not np.allclose(ratios, 1.0):
            image = _rescale_in_blocks(array, 1.0 / ratios, kind)
    if image is None:
        image = np.asarray(array[...])
        if voxel_size is not None:
            if not np.allclose(np.asarray(voxel_size, float), tgt_vs):
                image = official_rescale(image, np.asarray(voxel_size, float) / tgt_vs, kind)
                if kind == "semantic":
                    image = image > 0.5
        elif image.shape != tgt_shape:
            image = centre_pad_crop(image, tgt_shape)
    rel = official_offset(translation, target)
    if not rel.any() and image.shape == tgt_shape:
        return image
    out = np.zeros(tgt_shape, dtype=image.dtype)
    src, dst = [], []
    for d in range(3):
        if rel[d] < 0:
            a = int(-rel[d])
            n = min(a + tgt_shape[d], image.shape[d]) - a
            b = 0
        else:
            a, b = 0, int(rel[d])
            n = min(tgt_shape[d], image.shape[d] + b) - b
        if n <= 0:
            return out
        src.append(slice(a, a + n))
        dst.append(slice(b, b + n))
    out[tuple(dst)] = image[tuple(src)]
    return out
