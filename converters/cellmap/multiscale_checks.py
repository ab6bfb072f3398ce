"""Consistency checks of an OME-NGFF multiscale group: do its levels' declared scales agree
with their arrays' shapes?

Each level of a pyramid covers the same physical box: ``shape * scale`` (its extent, nm) is
the same at every level, up to the rounding of a downsampled shape (less than one voxel of
the coarser level). A level whose ``scale`` in ``.zattrs`` is wrong (``s0`` declared 4 nm
while ``s1`` says 16 nm and the shapes differ 2x) would place every voxel of that level at
the wrong physical position: the EM would be misregistered against the labels, silently.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import zarr

__all__ = ["all_array_grid_problem", "check_level_extents", "grid_text", "level_extent_problem", "nm_text", "same_grid"]

_TOL = 1e-3


def nm_text(values: Sequence[float]) -> str:
    """Plain numbers for messages (no ``np.float64(...)``).

    >>> import numpy as np
    >>> nm_text(np.array([8.0, 1e6, 4.5]))
    '[8, 1000000, 4.5]'
    """
    return "[" + ", ".join(_number(float(v)) for v in values) + "]"


def _number(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.10g}"


def _shape(group: zarr.hierarchy.Group, path: str) -> tuple[int, ...] | None:
    """The shape of level ``path``, None when it cannot be read (reported elsewhere)."""
    try:
        return tuple(int(n) for n in group[path].shape) if path in group else None
    except Exception:  # noqa: BLE001 - a damaged .zarray: the level's own check names it
        return None


def level_extent_problem(fine: tuple[str, Sequence[float], Sequence[int]],
                         coarse: tuple[str, Sequence[float], Sequence[int]]) -> str | None:
    """Why two levels ``(path, scale, shape)`` cannot cover the same box (None: they can).

    Their extents (``shape * scale``) may differ by the rounding of a downsampled shape:
    at most one voxel of the coarser level.

    >>> level_extent_problem(("s0", (8, 8, 8), (64, 160, 161)), ("s1", (16, 16, 16), (32, 80, 80))) is None
    True
    >>> print(level_extent_problem(("s0", (4, 4, 4), (64, 160, 160)), ("s1", (16, 16, 16), (32, 80, 80))))
    s0 (scale [4, 4, 4] nm, shape [64, 160, 160], extent [256, 640, 640] nm) and s1 (scale [16, 16, 16] nm, \
shape [32, 80, 80], extent [512, 1280, 1280] nm): their scales differ 4x, 4x, 4x but their shapes 2x, 2x, 2x
    """
    (fp, fs, fn), (cp, cs, cn) = fine, coarse
    fs, cs, fn, cn = (np.asarray(v, dtype=np.float64) for v in (fs, cs, fn, cn))
    f_ext, c_ext = fn * fs, cn * cs
    if np.all(np.abs(f_ext - c_ext) <= np.maximum(cs, fs) * (1 + _TOL)):
        return None
    shape_ratio = ", ".join(f"{a / b:.3g}x" if b else "?" for a, b in zip(fn, cn))
    scale_ratio = ", ".join(f"{b / a:.3g}x" for a, b in zip(fs, cs))
    return (f"{fp} (scale {nm_text(fs)} nm, shape {nm_text(fn)}, extent {nm_text(f_ext)} nm) and {cp} (scale "
            f"{nm_text(cs)} nm, shape {nm_text(cn)}, extent {nm_text(c_ext)} nm): their scales differ {scale_ratio} "
            f"but their shapes {shape_ratio}")


def check_level_extents(group: zarr.hierarchy.Group, levels: Sequence, where: str, error=ValueError) -> None:
    """Refuse a multiscale group two of whose levels disagree (:func:`level_extent_problem`).

    Parameters
    ----------
    group : zarr group
        The multiscale group (EM or a label class).
    levels : sequence of Level
        Its levels (:func:`converters.cellmap.zarr_tree.read_levels`: finest first). A level
        whose array cannot be read is left out (its own check names it).
    where : str
        The group's path, for the message.
    error : exception type
        Raised with the message.
    """
    present = [(lv.path, lv.scale, shape) for lv in levels if (shape := _shape(group, lv.path)) is not None]
    for fine, coarse in zip(present, present[1:]):
        problem = level_extent_problem(fine, coarse)
        if problem:
            raise error(
                f"{where}: the levels of this multiscale group disagree: {problem}. Every level must cover the same "
                f"box, so one level's 'scale' in {where}/.zattrs is wrong (its voxels would be placed at the wrong "
                "physical positions, misregistering EM and labels): fix that level's scale (multiscales -> datasets "
                "-> coordinateTransformations), or download the group again")


def grid_text(g) -> str:
    """``shape .., scale .. nm, translation .. nm`` of a :class:`~converters.geometry.Grid`."""
    return f"shape {nm_text(g.shape)}, scale {nm_text(g.spacing)} nm, translation {nm_text(g.origin)} nm"


def same_grid(a, b) -> bool:
    """Two grids with the same shape and scale, and origins within a thousandth of a voxel.

    >>> from converters.geometry import Grid
    >>> same_grid(Grid((0, 0, 0), (8, 8, 8), (4, 4, 4)), Grid((0, 0, 0.001), (8, 8, 8), (4, 4, 4)))
    True
    """
    return (tuple(a.shape) == tuple(b.shape) and np.allclose(a.spacing, b.spacing, rtol=1e-6)
            and np.allclose(a.origin, b.origin, rtol=0, atol=1e-3 * float(np.min(a.spacing))))


def all_array_grid_problem(where: str, all_grid, class_grids: dict, error=ValueError) -> str | None:
    """Check a crop's ``all`` array against its class arrays: CellMap writes them on one grid.

    When every class array disagrees with ``all`` (its shape, scale or translation was damaged, or
    theirs), the crop's labels would be laid over the wrong EM: ``error`` is raised naming both.
    When only some disagree, the labels still come from ``all`` and the note returned names them;
    None when all agree.

    >>> from converters.geometry import Grid
    >>> g = Grid((0, 0, 0), (8, 8, 8), (4, 4, 4))
    >>> note = all_array_grid_problem("c", g, {"mito": g, "er": Grid((0, 0, 0), (16, 16, 16), (4, 4, 4))})
    >>> note.startswith("c/er/s0: this class array (shape [4, 4, 4], scale [16, 16, 16] nm")
    True
    """
    off = {name: g for name, g in class_grids.items() if not same_grid(g, all_grid)}
    if not off:
        return None
    if len(off) == len(class_grids):
        name, g = next(iter(off.items()))
        raise error(
            f"{where}/all: the crop's 'all' array ({grid_text(all_grid)}) is not on the grid of any of its "
            f"{len(class_grids)} class array(s) ({name}: {grid_text(g)}): one side's .zarray or .zattrs is damaged, "
            "and the labels would be laid over the wrong EM; download the crop again (or fix that metadata), or "
            "leave the crop out of the datasplit")
    shown = "; ".join(f"{where}/{n}/s0: this class array ({grid_text(g)})" for n, g in list(off.items())[:3])
    more = f" (and {len(off) - 3} more)" if len(off) > 3 else ""
    return (f"{shown}{more} is not on the grid of {where}/all ({grid_text(all_grid)}); the labels are read from "
            "'all', which the other class arrays agree with: fix or download again the disagreeing array(s)")
