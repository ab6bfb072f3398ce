"""Instance masks → the training target of 2-D cells (see :mod:`datalists.cell_classes`).

The target is one uint8 map: 0 background, 1 ``cell_interior``, 2 ``cell_contact`` (a
cell's pixels that have an 8-neighbour in another cell). Computed with four shifted
comparisons of the label image, so a 4096² mask needs a few boolean temporaries and no
filter over int64 copies. A cell with no interior left (every pixel touches a neighbour)
keeps its deepest pixel as interior, so that it still has a seed.
"""

from __future__ import annotations

import numpy as np

from datalists.cell_classes import CELL_CONTACT, CELL_INTERIOR

__all__ = ["cell_targets", "contact_pixels"]

#: one offset of each 8-neighbour pair (the other is its negative)
_HALF_NEIGHBOURHOOD = ((0, 1), (1, 0), (1, 1), (1, -1))


def _pair_slices(shape: tuple[int, int], dy: int, dx: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices ``a``, ``b`` such that ``x[b]`` is ``x[a]`` moved by ``(dy, dx)``."""
    h, w = shape
    y0, y1 = max(0, -dy), h - max(0, dy)
    x0, x1 = max(0, -dx), w - max(0, dx)
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 + dy, y1 + dy), slice(x0 + dx, x1 + dx))


def contact_pixels(labels: np.ndarray) -> np.ndarray:
    """Pixels of a cell that have an 8-neighbour belonging to another cell.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Instance ids, 0 background.

    Returns
    -------
    ndarray of bool, shape (H, W)

    Examples
    --------
    >>> lab = np.array([[1, 1, 2, 2, 0, 3]])
    >>> contact_pixels(lab).astype(np.uint8)
    array([[0, 1, 1, 0, 0, 0]], dtype=uint8)
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"expected a 2-D instance mask, got shape {lab.shape}")
    out = np.zeros(lab.shape, dtype=bool)
    for dy, dx in _HALF_NEIGHBOURHOOD:
        a, b = _pair_slices(lab.shape, dy, dx)
        la, lb = lab[a], lab[b]
        touch = (la != lb) & (la != 0) & (lb != 0)
        out[a] |= touch
        out[b] |= touch
    return out


def cell_targets(labels: np.ndarray) -> np.ndarray:
    """The uint8 target map of an instance mask: 0 background, 1 interior, 2 contact.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Instance ids, 0 background (ids need not be sequential).

    Returns
    -------
    ndarray of uint8, shape (H, W)

    Examples
    --------
    >>> lab = np.array([[1, 1, 1, 2, 2, 0, 3, 3]])
    >>> cell_targets(lab)
    array([[1, 1, 2, 2, 1, 0, 1, 1]], dtype=uint8)
    """
    lab = np.asarray(labels)
    out = (lab != 0).astype(np.uint8) * np.uint8(CELL_INTERIOR)
    out[contact_pixels(lab)] = CELL_CONTACT
    _seed_cells_without_interior(lab, out)
    return out


def _seed_cells_without_interior(lab: np.ndarray, out: np.ndarray) -> None:
    """Give a cell made only of contact pixels (a sliver between neighbours) one interior
    pixel, its deepest, so that post-processing still finds it. The pixel cannot join
    another cell's interior: every neighbour it has in another cell touches it, so is
    contact."""
    import fastremap
    from scipy import ndimage as ndi

    ids = fastremap.unique(lab)
    ids = ids[ids != 0]
    with_interior = fastremap.unique(lab[out == CELL_INTERIOR])
    missing = np.setdiff1d(ids, with_interior)
    if missing.size == 0:
        return
    import edt

    depth = edt.edt(np.ascontiguousarray(lab), black_border=True)
    # scipy indexes its result by label value in the labels' own dtype: uint8/uint16 ids overflow there
    wide = lab if lab.dtype.itemsize >= 4 else lab.astype(np.int32)
    for y, x in ndi.maximum_position(depth, wide, index=missing.astype(wide.dtype)):
        out[int(y), int(x)] = CELL_INTERIOR
