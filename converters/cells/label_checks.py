"""Instance masks that read fine but would be converted wrong: checks on a label's ids.

* :func:`background_problem`: the background is not 0 (e.g. 65535, the largest value of a
  uint16, or 1 with cells 2..N). Converted as is, the background would be one huge cell.
* :func:`split_ids`: ids made of several separate blobs of cell size. A few happen in real
  annotations; many (:data:`SPLIT_ID_FRACTION` of the ids or more) are the mark of ids that
  wrapped around (saved as 8-bit: 310 cells become ids ``1..255`` with distinct cells sharing
  an id), and :func:`wrapped_ids_problem` says so.
* :func:`small_image_note`: an image too small to learn from (:data:`MIN_SIDE`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BACKGROUND_FRACTION", "MIN_SIDE", "RARE_ZERO_FRACTION", "SPLIT_ID_FRACTION", "background_problem",
           "small_image_note", "split_ids", "wrapped_ids_problem"]

#: a non-zero id covering more than this fraction of the image while 0 is (nearly) absent is the background
BACKGROUND_FRACTION = 0.4
#: 0 covering less than this fraction of the image (1%) is "nearly absent": a row of 0 along an edge, or a few
#: scattered 0 pixels, left in a label whose background is another id, must not hide that background
RARE_ZERO_FRACTION = 0.01
#: ids with 2+ separate cell-sized blobs, as a fraction of all ids, from which ids look wrapped
SPLIT_ID_FRACTION = 0.1
#: at least this many split ids (a label with 5 cells and 1 split id is no evidence)
_MIN_SPLIT_IDS = 3
#: a blob counts when it has this many pixels and this fraction of its id's largest blob
_MIN_BLOB_PIXELS, _MIN_BLOB_SHARE = 9, 0.25
#: images with a side shorter than this (pixels) are too small to train on
MIN_SIDE = 16


def background_problem(labels: np.ndarray, path: str) -> str | None:
    """Why a label's background looks like a non-zero value, else None.

    A non-zero id covering more than :data:`BACKGROUND_FRACTION` of the image is the
    background when 0 is (nearly) absent (under :data:`RARE_ZERO_FRACTION` of the pixels)
    and that id encloses other cells, or when that id is the largest value of the
    label's integer type (65535 in uint16) and covers more than 0 does. Only the latter
    in an image with a side under :data:`MIN_SIDE` (a tiny crop may lie inside one cell).
    Such an id that encloses no cell is more likely one large cell of a confluent image: the
    message then starts ``"<path>: the cell with id"`` and is a warning, not a refusal.

    Examples
    --------
    >>> lab = np.full((20, 20), 65535, np.uint16); lab[2:6, 2:6] = 1; lab[10:14, 10:14] = 2
    >>> background_problem(lab, "a_label.tiff")[:53]
    'a_label.tiff: the value 65535 covers 92% of the image'
    >>> lab[lab == 65535] = 0; background_problem(lab, "a_label.tiff") is None
    True

    0 present but rare (a row of 0 along the edge) does not hide a background of 1:

    >>> lab = np.ones((200, 200), np.uint16); lab[20:60, 20:60], lab[100:140, 100:140], lab[0] = 2, 3, 0
    >>> background_problem(lab, "a_label.tiff")[:49]
    'a_label.tiff: the value 1 covers 92% of the image'
    """
    import fastremap

    ids, counts = fastremap.unique(labels, return_counts=True)
    counts = counts.astype(np.int64)  # fastremap counts are uint64: a -1 below would wrap to 2**64 - 1
    zero = int(counts[ids == 0].sum())
    cells = ids != 0
    if not cells.any():
        return None
    top = int(np.argmax(np.where(cells, counts, np.int64(-1))))  # the largest non-zero id, never 0 itself
    value, count, n = ids[top].item(), int(counts[top]), labels.size
    saturated = labels.dtype.kind in "ui" and value == np.iinfo(labels.dtype).max
    if count <= BACKGROUND_FRACTION * n or not (zero < RARE_ZERO_FRACTION * n or (saturated and zero < count)):
        return None
    if min(labels.shape) < MIN_SIDE and not saturated:  # a crop of a few pixels may lie inside one cell
        return None
    if not saturated and not _encloses_cells(labels, value):
        # a background surrounds cells; a large region that encloses none is more likely one real cell of a
        # confluent image (no 0 anywhere): said, not refused
        return (f"{path}: the cell with id {value} covers {100 * count / n:.0f}% of the image and 0 (background) "
                f"{'is absent' if not zero else f'covers only {100 * zero / n:.2g}%'}: check that {value} is a "
                "cell, not the background (if it is the background, relabel it to 0)")
    why = f", the largest value a {labels.dtype} pixel holds (what some tools write for 'no cell')" if saturated else ""
    zero_text = "is absent" if not zero else f"covers only {100 * zero / n:.2g}%"
    return (f"{path}: the value {value} covers {100 * count / n:.0f}% of the image and 0 (the background of an "
            f"instance mask) {zero_text}: {value} looks like the background{why}, and would be converted as one huge "
            f"cell. Relabel it to 0 (e.g. labels[labels == {value}] = 0) and save <stem>_label.tiff again. The "
            "converter does not guess the background for you: a wrong guess would erase a real cell or train on a "
            "fake one")


def _encloses_cells(labels: np.ndarray, value: int) -> bool:
    """Whether the region of ``value`` surrounds other ids (holes of it hold cells), as a
    background does and a cell does not."""
    from scipy import ndimage

    region = labels == value
    return bool((ndimage.binary_fill_holes(region) & ~region).any())


def split_ids(labels: np.ndarray) -> tuple[int, list[int]]:
    """The number of cell ids, and the ids made of 2+ separate (8-connected) cell-sized blobs.

    A blob counts when it has at least 9 pixels and a quarter of its id's largest blob (a
    stray pixel or a sliver cut off by another cell does not). About 0.1 s for a 2000 x 2000
    label with 10,000 cells.

    Examples
    --------
    >>> lab = np.zeros((20, 20), np.uint8); lab[1:5, 1:5] = 1; lab[10:14, 10:14] = 1; lab[1:5, 10:14] = 2
    >>> split_ids(lab)
    (2, [1])
    """
    import cc3d

    labels = np.require(labels, requirements=("C", "W"))  # cc3d needs a writeable buffer (PNGs read read-only)
    comps, n = cc3d.connected_components(labels, connectivity=8, return_N=True)
    if n == 0:
        return 0, []
    sizes = np.bincount(comps.ravel(), minlength=n + 1)[1:]
    owner = np.zeros(n + 1, labels.dtype)
    owner[comps] = labels  # every pixel of a blob has its id
    ids, inverse = np.unique(owner[1:], return_inverse=True)
    largest = np.zeros(ids.size, np.int64)
    np.maximum.at(largest, inverse, sizes)
    big = sizes >= np.maximum(_MIN_BLOB_PIXELS, _MIN_BLOB_SHARE * largest[inverse])
    blobs = np.bincount(inverse, weights=big, minlength=ids.size)
    return int(ids.size), [v.item() for v in ids[blobs >= 2]]


def wrapped_ids_problem(labels: np.ndarray, path: str) -> tuple[str, bool] | None:
    """Why a label's ids look wrapped (distinct cells sharing ids), and whether that fails it; else None.

    Many ids (:data:`SPLIT_ID_FRACTION` or more, at least 3) made of separate cell-sized
    blobs: each of those ids holds several cells, which training and scoring would take for
    one. In an 8-bit label this is what ids over 255 become (id mod 256): a failure, since
    no 8-bit file can hold those cells apart. In a wider type it is a warning (the cause is
    less certain: copied or merged annotations).

    Returns
    -------
    (message, fail) or None
    """
    n_ids, split = split_ids(labels)
    if len(split) < _MIN_SPLIT_IDS or len(split) < SPLIT_ID_FRACTION * n_ids:
        return None
    eight_bit = labels.dtype.itemsize == 1
    shown = ", ".join(str(v) for v in split[:5]) + (", ..." if len(split) > 5 else "")
    cause = ("it is an 8-bit label: ids over 255 wrapped around (id mod 256) when it was saved as 8-bit, so "
             "distinct cells now share an id (and every 256th cell became background)" if eight_bit else
             "the ids probably wrapped around (saved in a type too small for the number of cells) or were "
             "copied between cells")
    what = (f"{path}: {len(split)} of its {n_ids} ids ({shown}) are each several separate cell-sized blobs: "
            f"{cause}. Save the instance ids again as uint16 or uint32 from the source annotation (or relabel "
            "the blobs, e.g. skimage.measure.label(labels, connectivity=2, background=0), if each blob is a cell)")
    return what, eight_bit


def small_image_note(shape: tuple[int, int], path: str, labelled: bool) -> str | None:
    """A note for an image with a side under :data:`MIN_SIDE` pixels, else None.

    Examples
    --------
    >>> small_image_note((2, 2), "a.tif", True)[:40]
    'a.tif is only 2 x 2 pixels: too small to'
    >>> small_image_note((16, 300), "a.tif", True) is None
    True
    """
    h, w = shape
    if min(h, w) >= MIN_SIDE:
        return None
    if labelled:
        return (f"{path} is only {h} x {w} pixels: too small to train on (a side under {MIN_SIDE} px holds hardly a "
                "cell; training pads it into mostly empty patches). Converted anyway; check it is not a crop made by "
                "mistake, or remove the pair")
    return (f"{path} is only {h} x {w} pixels (a side under {MIN_SIDE} px): converted so that it gets its "
            "<stem>_label.tiff; check it is not a crop made by mistake")
