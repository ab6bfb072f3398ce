"""The procedural EM, block by block: every voxel a deterministic function of its position and
the seed, so the volume is the same whatever the block size or the number of workers.

A block of EM ``s0`` is rasterized with a halo, turned into class intensities
(:data:`~converters.cellmap.synthetic.scale_classes.SCALE_EM_INTENSITY`) plus a smooth uneven
staining (a sum of separable seeded waves) and a cristae texture in ``mito_lum`` (waves
along each mitochondrion's long axis), blurred (Gaussian, sigma 1 voxel: the halo holds
its whole kernel), then gets Gaussian noise drawn per chunk from a generator seeded by the
chunk's index. Coarser levels are 2x2x2 means of the finer level.

Examples
--------
>>> from converters.cellmap.synthetic.cell_scene import CropNeed, build_cell_scene
>>> need = CropNeed((0.0, 0.0, 0.0), (256.0, 512.0, 512.0), ("mito",))
>>> scene = build_cell_scene("d", (0, 1), need.lo, need.hi, [need], anchor=need)
>>> a = render_em_block(scene, 8.0, (0, 1), (0, 0, 0), (32, 64, 64), (32, 32, 32))
>>> b = render_em_block(scene, 8.0, (0, 1), (0, 32, 0), (32, 32, 64), (32, 32, 32))
>>> a.dtype, bool((a[:, 32:] == b).all())
(dtype('uint8'), True)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from .cell_scene import CellScene
from .layout import Shape3, _cid
from .raster import rasterize_block, wave
from .scale_classes import SCALE_EM_INTENSITY, atomic_lut

BLUR_SIGMA, HALO, NOISE_SIGMA = 1.0, 4, 10.0
STAIN_AMPLITUDE, CRISTAE_AMPLITUDE = 12.0, 22.0
_LUT = atomic_lut(SCALE_EM_INTENSITY, default=SCALE_EM_INTENSITY["cyto"])
_MITO_LUM = _cid("mito_lum")


def stain_waves(words: Sequence[int], n: int = 3) -> np.ndarray:
    """``(n, 7)`` separable waves of the uneven staining: amplitude, cycles per nm (z, y, x),
    phases (z, y, x); wavelengths 400-1600 nm."""
    rng = np.random.default_rng(np.random.SeedSequence([*map(int, words), 41]))
    amp = rng.uniform(0.5, 1.0, (n, 1))
    amp /= amp.sum()
    freq = 1.0 / rng.uniform(400.0, 1600.0, (n, 3))
    return np.concatenate([amp, freq, rng.uniform(0.0, 1.0, (n, 3))], axis=1)


def _stain(axes, waves: np.ndarray) -> np.ndarray:
    out = np.zeros((len(axes[0]), len(axes[1]), len(axes[2])), dtype=np.float32)
    for a, fz, fy, fx, pz, py, px in waves:
        zy = (a * STAIN_AMPLITUDE * wave(fz * axes[0] + pz))[:, None] * wave(fy * axes[1] + py)[None, :]
        out += zy.astype(np.float32)[:, :, None] * wave(fx * axes[2] + px).astype(np.float32)[None, None, :]
    return out


def _cristae(img: np.ndarray, r, scene: CellScene) -> None:
    """Add the lamellar texture to each mitochondrion's lumen (its own wave vector)."""
    lo = np.array([a[0] for a in r.axes])
    hi = np.array([a[-1] for a in r.axes])
    for p in scene.pieces_in(lo, hi):
        b = scene.bodies[int(scene.piece_body[p])]
        if b.kind != "mito":
            continue
        win = []
        for k in range(3):
            a = int(np.searchsorted(r.axes[k], scene.piece_lo[p][k], "left"))
            z = int(np.searchsorted(r.axes[k], scene.piece_hi[p][k], "right"))
            win.append(slice(a, max(a, z)))
        win = tuple(win)
        mask = (r.atomic[win] == _MITO_LUM) & (r.owner[win] == b.owner)
        if not mask.any():
            continue
        f = np.asarray(b.wave) / (2 * np.pi)
        ax = [r.axes[k][win[k]] for k in range(3)]
        phase = (f[0] * ax[0])[:, None, None] + (f[1] * ax[1])[None, :, None] + (f[2] * ax[2])[None, None, :]
        tex = wave(phase + 0.137 * b.instance_id)
        img[win] += np.where(mask, CRISTAE_AMPLITUDE * tex, 0.0).astype(np.float32)


def chunk_noise(words: Sequence[int], level: int, start: Sequence[int], shape: Sequence[int],
                chunks: Shape3) -> np.ndarray:
    """Noise of a chunk-aligned block: one generator per chunk, seeded by the chunk's index."""
    out = np.empty(tuple(int(s) for s in shape), dtype=np.float32)
    c0 = [int(start[k]) // chunks[k] for k in range(3)]
    c1 = [-(-(int(start[k]) + int(shape[k])) // chunks[k]) for k in range(3)]
    for cz in range(c0[0], c1[0]):
        for cy in range(c0[1], c1[1]):
            for cx in range(c0[2], c1[2]):
                rng = np.random.default_rng(np.random.SeedSequence([*map(int, words), 97, level, cz, cy, cx]))
                noise = rng.standard_normal(chunks, dtype=np.float32)
                dst, src = [], []
                for k, c in enumerate((cz, cy, cx)):
                    a = max(c * chunks[k], int(start[k]))
                    z = min((c + 1) * chunks[k], int(start[k]) + int(shape[k]))
                    dst.append(slice(a - int(start[k]), z - int(start[k])))
                    src.append(slice(a - c * chunks[k], z - c * chunks[k]))
                out[tuple(dst)] = noise[tuple(src)]
    return out


def downsample2(image: np.ndarray) -> np.ndarray:
    """2x2x2 mean of a uint8 volume with even sides, rounded half to even: the same values as
    :func:`converters.cellmap.synthetic.scenes.downsample_mean` in integer arithmetic (no float copy).

    >>> a = np.arange(64, dtype=np.uint8).reshape(4, 4, 4)
    >>> from converters.cellmap.synthetic.scenes import downsample_mean
    >>> bool((downsample2(a) == downsample_mean(a, 2)).all())
    True
    """
    total = np.zeros(tuple(n // 2 for n in image.shape), dtype=np.uint16)
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                total += image[dz::2, dy::2, dx::2]
    q, r = np.divmod(total, 8)
    q += (r > 4) | ((r == 4) & (q % 2 == 1))
    return q.astype(np.uint8)


def render_em_block(scene: CellScene, voxel_nm: float, words: Sequence[int], start: Sequence[int],
                    shape: Sequence[int], chunks: Shape3) -> np.ndarray:
    """EM ``s0`` voxels ``start .. start + shape`` (chunk-aligned) of a dataset whose ``s0`` voxel
    ``i`` is centred at ``i * voxel_nm``; uint8."""
    vs = (float(voxel_nm),) * 3
    ext_start = [int(s) - HALO for s in start]
    ext_shape = [int(s) + 2 * HALO for s in shape]
    r = rasterize_block(scene, (0.0, 0.0, 0.0), vs, ext_start, ext_shape)
    img = _LUT[r.atomic]
    img += _stain(r.axes, stain_waves(words))
    _cristae(img, r, scene)
    img = ndimage.gaussian_filter(img, BLUR_SIGMA, mode="nearest", truncate=4.0)
    core = img[HALO:-HALO, HALO:-HALO, HALO:-HALO]
    core += NOISE_SIGMA * chunk_noise(words, 0, start, shape, chunks)
    return np.clip(np.rint(core), 0, 255).astype(np.uint8)
