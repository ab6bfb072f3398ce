"""Is a CellSeg "prediction" an instance mask at all? Raw images given as predictions.

A raw microscopy image read as instance ids scores F1 = 0 without any hint: every grey
level becomes a "cell". :func:`image_like_problem` tells such a file from a mask by what a
mask always is:

* 2-D (an RGB or multi-channel array is an image);
* integer values (fractional floats are intensities);
* made of blobs: in a mask almost every pair of neighbouring non-zero pixels lies in one
  cell (90% and more; over half even for cells of 3 x 3 pixels), while neighbouring pixels
  of a noisy image rarely have the same grey level (a few %).

:func:`wrapped_uint8_problem` tells a mask whose ids wrapped around at 256 (more than 255
cells saved as uint8), which scores without error but with cells merged and lost.
"""

from __future__ import annotations

import numpy as np

from converters.cells.label_checks import wrapped_ids_problem

__all__ = ["NotInstanceMasks", "binary_mask_id", "image_like_problem", "wrapped_uint8_problem"]

#: under this fraction of equal neighbouring non-zero pixels, an array is an image's grey levels
_MIN_EQUAL_NEIGHBOURS = 0.5
#: neighbouring non-zero pairs needed to judge (a mask of a few one-pixel cells is not judged)
_MIN_PAIRS = 100
#: true cells from which a prediction holding one id is named as a binary mask
MIN_CELLS_FOR_BINARY = 5
#: rows looked at, at most (regularly sampled): the check stays cheap on large images
_MAX_ROWS = 512


class NotInstanceMasks(ValueError):
    """Most predictions look like raw images rather than instance masks; the message says what to do."""


def _equal_neighbours(arr: np.ndarray) -> tuple[float, int]:
    """Fraction of horizontally neighbouring non-zero pixel pairs that are equal, and the number of pairs."""
    step = max(1, arr.shape[0] // _MAX_ROWS)
    rows = arr[::step]
    left, right = rows[:, :-1], rows[:, 1:]
    both = (left != 0) & (right != 0)
    pairs = int(np.count_nonzero(both))
    if not pairs:
        return 1.0, 0
    return int(np.count_nonzero(both & (left == right))) / pairs, pairs


def image_like_problem(arr: np.ndarray) -> str | None:
    """Why ``arr`` looks like an image rather than an instance mask, else None.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> image_like_problem(rng.integers(1, 4000, (64, 64)).astype(np.uint16))[:46]
    'its non-zero pixels hardly ever equal their ne'
    >>> mask = np.zeros((64, 64), np.uint16); mask[4:20, 4:20] = 1; mask[30:50, 30:50] = 2
    >>> image_like_problem(mask) is None
    True
    >>> image_like_problem(np.zeros((8, 8, 3), np.uint8))
    'it has shape (8, 8, 3): a colour or multi-channel image, not a 2-D mask'
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and min(arr.shape[0], arr.shape[-1]) <= 4:
        return f"it has shape {arr.shape}: a colour or multi-channel image, not a 2-D mask"
    if arr.ndim != 2 or arr.size == 0:
        return None  # the scorer names other shapes itself
    if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
        return f"it holds fractional {arr.dtype} values (intensities), not integer cell ids"
    equal, pairs = _equal_neighbours(arr)
    if pairs < _MIN_PAIRS or equal >= _MIN_EQUAL_NEIGHBOURS:
        return None
    return (f"its non-zero pixels hardly ever equal their neighbours ({100 * equal:.0f}% of {pairs} neighbouring "
            "pairs; in an instance mask most lie in one cell): grey levels of an image, not cell ids")


def binary_mask_id(arr: np.ndarray) -> int | None:
    """The one non-zero value of ``arr`` when all its foreground holds it (a binary/semantic mask), else None.

    Examples
    --------
    >>> mask = np.zeros((8, 8), np.uint8); mask[1:3, 1:3] = 255; mask[5:7, 5:7] = 255
    >>> binary_mask_id(mask)
    255
    >>> mask[5:7, 5:7] = 2
    >>> binary_mask_id(mask) is None
    True
    """
    fg = np.asarray(arr)[np.asarray(arr) != 0]
    if not fg.size or fg.min() != fg.max():
        return None
    return int(fg[0])


def wrapped_uint8_problem(arr: np.ndarray) -> str | None:
    """Why a uint8 prediction's ids look wrapped around at 256, else None.

    More than 255 cells saved as uint8 hold ``id % 256``: separate cells share an id (and
    every 256th cell becomes background), which scores, lower, without error. The test is
    the cells converter's (:func:`converters.cells.label_checks.wrapped_ids_problem`: many
    ids each made of several separate cell-sized blobs), for a uint8 mask whose ids reach 255.

    Examples
    --------
    >>> cells = np.zeros((60, 80), np.uint16)
    >>> for i in range(300):
    ...     cells[4 * (i // 20):4 * (i // 20) + 3, 4 * (i % 20):4 * (i % 20) + 3] = i + 1
    >>> wrapped_uint8_problem((cells % 256).astype(np.uint8))[:38]
    'a uint8 prediction whose ids reach 255'
    >>> wrapped_uint8_problem(cells) is None
    True
    """
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.ndim != 2 or not arr.size or int(arr.max()) != 255:
        return None
    if wrapped_ids_problem(arr, "") is None:
        return None
    return ("a uint8 prediction whose ids reach 255 with ids shared by separate cells: ids wrapped around at 256? "
            "save instance masks as uint16/uint32")
