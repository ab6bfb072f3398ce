"""Which EM pyramid level a crop is read from.

A level is usable for a crop only when every chunk overlapping the crop's region exists:
zarr reads a missing chunk as the fill value, and the CellMap fetch tool downloads each
level only near the crops whose ground truth needs it, so "the finest level" is often
blank exactly where a coarse crop lies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import zarr

from converters import cellmap_zarr as cz
from converters.geometry import Grid, source_coordinates

__all__ = ["EMChoice", "choose_em_level"]

_TOL = 1e-3


@dataclass(frozen=True)
class EMChoice:
    """The EM level a crop is read from, or why none fits."""

    level: cz.Level | None
    upsample: float = 1.0
    reason: str = ""  # skip reason code when level is None
    detail: str = ""
    warnings: tuple[str, ...] = ()
    coverage: tuple[tuple[str, float], ...] = ()


def _index_range(out: Grid, level: cz.Level, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    # conservative: linear interpolation reads floor(c) and floor(c) + 1
    coords = source_coordinates(out, level.translation, level.scale)
    lo = np.array([np.floor(c.min()) for c in coords], dtype=np.int64)
    hi = np.array([np.floor(c.max()) + 2 for c in coords], dtype=np.int64)
    return np.maximum(lo, 0), np.minimum(hi, np.asarray(shape))


def choose_em_level(
    em: zarr.hierarchy.Group,
    levels: Sequence[cz.Level],
    out: Grid,
    target_spacing: Sequence[float],
    scale: str = "auto",
    max_em_upsample: float = 2.0,
) -> EMChoice:
    """Pick the EM level to resample a crop from.

    A level is usable when every chunk overlapping the crop's region exists (a missing
    chunk reads as blank). Among usable levels the coarsest one no coarser than the
    target is taken; if all are coarser, the finest, when within ``max_em_upsample``.
    ``scale="sN"`` forces a level.
    """
    target = np.asarray(target_spacing, dtype=np.float64)
    coverage: list[tuple[str, float]] = []
    usable: list[cz.Level] = []
    overlaps = False
    for lv in levels:
        if lv.path not in em:
            coverage.append((lv.path, 0.0))
            continue
        arr = em[lv.path]
        lo, hi = _index_range(out, lv, arr.shape)
        if np.any(hi <= lo):
            coverage.append((lv.path, 0.0))
            continue
        overlaps = True
        frac = cz.chunk_coverage(arr, lo, hi)
        coverage.append((lv.path, round(frac, 4)))
        if frac >= 1.0:
            usable.append(lv)
    cov = tuple(coverage)
    cov_txt = ", ".join(f"{p}: {f:.0%}" for p, f in coverage)
    if not overlaps:
        return EMChoice(None, reason="outside_em", detail="the crop does not overlap the EM volume at any level", coverage=cov)
    if scale != "auto":
        forced = [lv for lv in usable if lv.path == scale]
        if not forced:
            return EMChoice(None, reason="no_em_data",
                            detail=f"--scale {scale}: that level has no complete data in this crop's region ({cov_txt})",
                            coverage=cov)
        usable = forced
    if not usable:
        return EMChoice(None, reason="no_em_data",
                        detail=f"no EM level has all its chunks in this crop's region (chunks present: {cov_txt})",
                        coverage=cov)
    warnings = []
    finest_present = next(lv for lv in levels if lv.path in em)
    fine_enough = [lv for lv in usable if np.all(np.asarray(lv.scale) <= target * (1 + _TOL))]
    if fine_enough:
        chosen, up = fine_enough[-1], 1.0
    else:
        chosen = usable[0]
        up = float(np.max(np.asarray(chosen.scale) / target))
        if up > max_em_upsample * (1 + _TOL):
            return EMChoice(
                None, reason="em_too_coarse",
                detail=(f"the finest EM with data here is {chosen.path} at {list(chosen.scale)} nm, {up:g}x coarser "
                        f"than the target {list(target)} nm (limit --max_em_upsample {max_em_upsample:g}); "
                        "fetch finer EM for this crop or convert with a coarser --target_spacing"),
                coverage=cov)
        warnings.append(f"EM upsampled {up:g}x from {chosen.path} ({list(chosen.scale)} nm)")
    if chosen.path != finest_present.path and finest_present not in usable and scale == "auto":
        warnings.append(
            f"EM level {finest_present.path} has no data in this crop's region (the CellMap fetch tool downloads "
            f"EM only near each crop's ground-truth resolution); used {chosen.path}")
    return EMChoice(chosen, up, warnings=tuple(warnings), coverage=cov)
