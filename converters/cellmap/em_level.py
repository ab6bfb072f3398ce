"""Which EM pyramid level a crop is read from.

A level is usable for a crop only when every chunk overlapping the crop's region exists:
zarr reads a missing chunk as the fill value, and the CellMap fetch tool downloads each
level only near the crops whose ground truth needs it, so "the finest level" is often
blank exactly where a coarse crop lies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import zarr

from converters.cellmap import zarr_tree as cz
from converters.cellmap.multiscale_checks import nm_text
from converters.geometry import Grid, source_coordinates

__all__ = ["UNREADABLE", "EMChoice", "annotation_marks", "choose_em_level", "level_problem", "refuse_annotation_as_em",
           "refuse_unknown_scale"]

_TOL = 1e-3
#: skip reason of a crop whose needed EM level is listed but cannot be read (a failure)
UNREADABLE = "em_level_unreadable"


@dataclass(frozen=True)
class EMChoice:
    """The EM level a crop is read from, or why none fits."""

    level: cz.Level | None
    upsample: float = 1.0
    reason: str = ""  # skip reason code when level is None
    detail: str = ""
    warnings: tuple[str, ...] = ()
    coverage: tuple[tuple[str, float], ...] = ()
    unreadable: tuple[tuple[str, str], ...] = ()  # (level, why) listed in multiscales but not readable


def _index_range(out: Grid, level: cz.Level, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    # conservative: linear interpolation reads floor(c) and floor(c) + 1
    coords = source_coordinates(out, level.translation, level.scale)
    lo = np.array([np.floor(c.min()) for c in coords], dtype=np.int64)
    hi = np.array([np.floor(c.max()) + 2 for c in coords], dtype=np.int64)
    return np.maximum(lo, 0), np.minimum(hi, np.asarray(shape))


def level_problem(em: zarr.hierarchy.Group, path: str, where: str) -> str | None:
    """Why a level listed in ``multiscales`` cannot be read (None: it can).

    >>> g = zarr.group(); _ = g.zeros("s0", shape=(2, 2, 2))
    >>> level_problem(g, "s0", "em") is None, level_problem(g, "s1", "em")[:24]
    (True, 'em/s1 is missing (listed')
    """
    root = getattr(em.store, "path", None)
    base = Path(root, em.path) if root else None
    if path not in em:
        if base is not None and (base / path).is_dir():
            return (f"{base / path / '.zarray'} is missing: the level's folder is there but not its array metadata "
                    "(an interrupted download?)")
        shown = base / path if base is not None else f"{where}/{path}"
        return f"{shown} is missing (listed in multiscales, no array there)"
    try:
        em[path].shape
    except Exception as exc:  # noqa: BLE001 - a corrupt .zarray raises several types
        return f"{where}/{path}/.zarray cannot be read ({type(exc).__name__}: {exc})"
    return None


def _is_fine_enough(lv: cz.Level, target: np.ndarray) -> bool:
    return bool(np.all(np.asarray(lv.scale) <= target * (1 + _TOL)))


def _unreadable_refusal(broken: dict[str, str], chosen: cz.Level | None, levels: Sequence[cz.Level],
                        target: np.ndarray, scale: str, cov: tuple) -> EMChoice | None:
    """Refuse when an unreadable level was asked for, or was the one that avoided upsampling."""
    if scale in broken:
        return EMChoice(None, reason=UNREADABLE, coverage=cov,
                        detail=f"--scale {scale}: {broken[scale]}; download that level again, or choose another "
                               "--scale")
    if chosen is None or _is_fine_enough(chosen, target):
        return None
    needed = [lv for lv in levels if lv.path in broken and _is_fine_enough(lv, target)]
    if not needed:
        return None
    lv = needed[-1]
    up = float(np.max(np.asarray(chosen.scale) / target))
    return EMChoice(None, reason=UNREADABLE, coverage=cov,
                    detail=(f"the target spacing {nm_text(target)} nm needs EM level {lv.path}, which cannot be read: "
                            f"{broken[lv.path]}. Download that level again; or accept {chosen.path} upsampled "
                            f"{up:g}x with --scale {chosen.path}, or convert at a coarser --target_spacing"))


def choose_em_level(
    em: zarr.hierarchy.Group,
    levels: Sequence[cz.Level],
    out: Grid,
    target_spacing: Sequence[float],
    scale: str = "auto",
    max_em_upsample: float = 2.0,
    where: str = "",
) -> EMChoice:
    """Pick the EM level to resample a crop from.

    A level is usable when every chunk overlapping the crop's region exists (a missing
    chunk reads as blank). Among usable levels the coarsest one no coarser than the
    target is taken; if all are coarser, the finest, when within ``max_em_upsample``.
    ``scale="sN"`` forces a level. A level listed in ``multiscales`` whose array cannot
    be read (no ``.zarray``: a damaged download) is named in a warning; when it is the
    level the target needed (the others would be upsampled) or the one ``scale`` forces,
    the crop is refused (reason ``em_level_unreadable``) rather than silently upsampled.
    ``where`` names the EM group in messages.
    """
    where = where or em.name
    target = np.asarray(target_spacing, dtype=np.float64)
    coverage: list[tuple[str, float]] = []
    usable: list[cz.Level] = []
    broken: dict[str, str] = {}
    overlaps = False
    for lv in levels:
        problem = level_problem(em, lv.path, where)
        if problem:
            broken[lv.path] = problem
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
    if scale != "auto" and scale not in [lv.path for lv in levels]:
        return EMChoice(None, reason="no_em_data", coverage=cov, detail=_no_such_level(scale, levels, where))
    if not overlaps:  # damaged metadata (of the crop or of the EM): both boxes say which
        return EMChoice(None, reason="outside_em", coverage=cov, detail=_outside_detail(out, em, levels, broken))
    choice = _choose(em, levels, usable, overlaps, target, scale, max_em_upsample, cov, cov_txt)
    refusal = _unreadable_refusal(broken, choice.level, levels, target, scale, cov)
    if refusal is not None:
        return refusal
    notes = tuple(f"EM level {p} not used: {why}" for p, why in broken.items())
    return EMChoice(choice.level, choice.upsample, choice.reason, choice.detail, notes + choice.warnings, cov,
                    tuple(broken.items()))


def _box_text(origin, size) -> str:
    lo = np.asarray(origin, float)
    hi = lo + np.asarray(size, float)
    return " x ".join(f"{a:g}..{b:g}" for a, b in zip(lo, hi)) + " nm (z y x)"


def _outside_detail(out, em: zarr.hierarchy.Group, levels: Sequence[cz.Level], broken: dict) -> str:
    crop = _box_text(out.origin, np.asarray(out.shape) * np.asarray(out.spacing))
    ok = [lv for lv in levels if lv.path not in broken]
    if not ok:
        return f"the crop ({crop}) does not overlap the EM volume at any level"
    lv = ok[0]
    em_box = _box_text(lv.translation, np.asarray(em[lv.path].shape) * np.asarray(lv.scale))
    return (f"the crop spans {crop}, the EM ({lv.path}) spans {em_box}: they do not overlap. The crop's or the EM's "
            "translation/scale (.zattrs) is damaged, or the crop belongs to another dataset: fix the metadata or the "
            "datasplit row, or download the crop again")


def _choose(em: zarr.hierarchy.Group, levels: Sequence[cz.Level], usable: list[cz.Level], overlaps: bool,
            target: np.ndarray, scale: str, max_em_upsample: float, cov: tuple, cov_txt: str) -> EMChoice:
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
    fine_enough = [lv for lv in usable if _is_fine_enough(lv, target)]
    if fine_enough:
        chosen, up = fine_enough[-1], 1.0
    else:
        chosen = usable[0]
        up = float(np.max(np.asarray(chosen.scale) / target))
        if up > max_em_upsample * (1 + _TOL):
            return EMChoice(
                None, reason="em_too_coarse",
                detail=(f"the finest EM with data here is {chosen.path} at {nm_text(chosen.scale)} nm, {up:g}x "
                        f"coarser than the target {nm_text(target)} nm (limit --max_em_upsample {max_em_upsample:g}); "
                        "fetch finer EM for this crop or convert with a coarser --target_spacing"),
                coverage=cov)
        warnings.append(f"EM upsampled {up:g}x from {chosen.path} ({nm_text(chosen.scale)} nm)")
    if chosen.path != finest_present.path and finest_present not in usable and scale == "auto":
        present = dict(cov).get(finest_present.path, 0.0)
        if 0.0 < present < 1.0:  # most of it there: chunks lost, not a level never fetched
            warnings.append(
                f"EM level {finest_present.path} lacks {1 - present:.0%} of its chunks in this crop's region (an "
                f"incomplete download or copy?): used the coarser {chosen.path} instead; fetch "
                f"{finest_present.path} again, and a re-run converts this crop again at full resolution")
        else:
            warnings.append(
                f"EM level {finest_present.path} has no data in this crop's region (the CellMap fetch tool downloads "
                f"EM only near each crop's ground-truth resolution); used {chosen.path}")
    return EMChoice(chosen, up, warnings=tuple(warnings), coverage=cov)


def _no_such_level(scale: str, levels: Sequence[cz.Level], where: str) -> str:
    names = ", ".join(lv.path for lv in levels) or "none"
    return (f"--scale {scale}: the EM group {where} has no level {scale!r} (its levels: {names}); choose one of them "
            "or --scale auto")


def _em_levels(src) -> tuple[str, list[str]] | None:
    """``(where, level names)`` of a crop's EM group; None when it cannot be read (its crops fail, named)."""
    where = f"{src.em_zarr}/{src.em_group}"
    try:
        group = cz.open_readonly(src.em_zarr)[src.em_group]
        return where, [lv.path for lv in cz.read_levels(group, where)]
    except Exception:  # noqa: BLE001 - a damaged store fails its crops later, each named
        return None


def refuse_unknown_scale(scale: str, sources: Sequence) -> None:
    """Refuse ``--scale`` when no readable EM group of ``sources`` has that level.

    Reads only the ``multiscales`` metadata of each distinct EM group. A level that exists
    in some datasets only is left to the crops (those of the others are skipped, saying so).

    Raises
    ------
    ValueError
        Naming the level asked for and the levels each EM group has.
    """
    if scale == "auto":
        return
    groups = {(s.em_zarr, s.em_group): s for s in sources}
    found = [f for f in (_em_levels(s) for s in groups.values()) if f is not None]
    if not found or any(scale in names for _, names in found):
        return
    by_levels: dict[tuple[str, ...], list[str]] = {}
    for where, names in found:
        by_levels.setdefault(tuple(names), []).append(where)
    shown = "; ".join(f"{', '.join(names) or 'none'} in {wheres[0]}" + (f" (and {len(wheres) - 1} more EM groups)"
                                                                       if len(wheres) > 1 else "")
                      for names, wheres in by_levels.items())
    raise ValueError(f"--scale {scale}: no EM group has a level named {scale!r}; the levels there are {shown}. "
                     "Choose one of them, or --scale auto (the coarsest level with data no coarser than "
                     "--target_spacing)")


def em_stamp(em_zarr: str | os.PathLike, em_group: str, level_path: str, grid: Grid) -> list[int] | None:
    """:func:`~converters.outputs.source_stamp` of the EM chunk files a crop's ``grid`` (nm) reads at
    level ``level_path`` (a voxel of margin on every side): an EM edited or downloaded again there
    since the conversion is converted again, not resumed. None when the level cannot be read (the
    conversion names that).

    Only the chunks under the crop are listed: a 500³ crop of 64³ chunks is ~600 files, not the
    dataset's millions.
    """
    from converters.outputs import source_stamp

    try:
        group = cz.open_readonly(em_zarr)[em_group]
        level = next(lv for lv in cz.read_levels(group) if lv.path == level_path)
        arr = group[level_path]
    except Exception:  # noqa: BLE001 - a level that cannot be read gets no stamp (and fails its crop)
        return None
    scale, shift = np.asarray(level.scale, float), np.asarray(level.translation, float)
    lower = np.asarray(grid.lower_edge, float)
    upper = np.asarray(grid.upper_edge, float)
    lo = np.clip(np.floor((lower - shift) / scale).astype(int) - 1, 0, arr.shape)
    hi = np.clip(np.ceil((upper - shift) / scale).astype(int) + 1, 0, arr.shape)
    if np.any(hi <= lo):
        return [0, 0, 0]
    first, last = lo // np.asarray(arr.chunks), (hi - 1) // np.asarray(arr.chunks)
    sep = getattr(arr, "_dimension_separator", None) or "."
    root = Path(em_zarr) / em_group / level_path
    paths = [root / sep.join(str(int(i)) for i in np.asarray(offset) + first)
             for offset in np.ndindex(*(last - first + 1))]
    return source_stamp(paths)


def partial_level_stamps(em_zarr: str | os.PathLike, em_group: str, coverage: Mapping[str, float],
                         grid: Grid) -> dict[str, list[int] | None]:
    """:func:`em_stamp` of each level that had only some of its chunks in the crop's region (a
    coarser one was used): once its missing chunks are fetched, a re-run converts the crop again."""
    return {p: em_stamp(em_zarr, em_group, p, grid) for p, f in coverage.items() if 0.0 < float(f) < 1.0}


def annotation_marks(group_path: str, attrs_chain: Sequence[Mapping]) -> str:
    """Why a raw dataset is a CellMap annotation rather than EM ('' when nothing says so).

    ``attrs_chain`` holds the ``.zattrs`` of the group and of its parents in the store. CellMap
    keeps ground truth under ``recon-*/labels/`` and marks crop and class groups with
    ``{"cellmap": {"annotation": ...}}``; an ``all`` array group lacks that mark, its crop has it.

    >>> annotation_marks("recon-1/em/fibsem-uint8", [{"multiscales": []}, {}])
    ''
    >>> annotation_marks("recon-1/labels/groundtruth/crop1/all", [{"multiscales": []}])
    'it lies under a labels/ group'
    >>> annotation_marks("gt/crop1/mito", [{"cellmap": {"annotation": {"class_name": "mito"}}}])
    'its .zattrs carry CellMap annotation attributes'
    """
    if "labels" in group_path.strip("/").split("/"):
        return "it lies under a labels/ group"
    if any("annotation" in (attrs.get("cellmap") or {}) for attrs in attrs_chain):
        return "its .zattrs carry CellMap annotation attributes"
    return ""


def refuse_annotation_as_em(name: str, root: zarr.hierarchy.Group, em_zarr: str | os.PathLike, em_group: str) -> None:
    """Refuse a crop whose raw dataset (the datasplit's 3rd column) is a label array: its "image"
    would be the crop's own labels, and the network would learn to copy them.

    Raises
    ------
    cz.CellMapFormatError
        Naming the crop, the raw dataset and the store's EM group to give instead.
    """
    parts = em_group.strip("/").split("/")
    chain = [root[p].attrs.asdict() for p in ("/".join(parts[:i]) for i in range(len(parts), 0, -1)) if p in root]
    why = annotation_marks(em_group, chain)
    if why:
        raise cz.CellMapFormatError(
            f"{name}: raw dataset {em_group} is a label array (CellMap annotation: {why}), not EM: give the EM group "
            f"in the datasplit's 3rd column, e.g. {cz.em_group_of(str(em_zarr))}")
