"""Which classes an item annotates, as a number MONAI passes through untouched.

MONAI's ``datafold_read`` joins the data root onto every string *and every element of a
list* in a datalist item, so a list of class ids (``[1, 2, 5]``) makes it raise. We store
the set as an integer bitmask instead: bit ``id - 1`` is set when class ``id`` is
annotated. The readable list is kept in the side file (``datalist_items.json``).

Inside a label, :data:`UNANNOTATED` (255) marks voxels nobody annotated (a value the source
declared unknown, or one that is no class): training leaves them out of the loss, and they are
neither background nor a class.

>>> encode_annotated([1, 2, 5])
19
>>> decode_annotated(19)
[1, 2, 5]
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["encode_annotated", "decode_annotated", "never_annotated", "ANNOTATED_KEY", "UNANNOTATED"]

ANNOTATED_KEY = "annotated_mask"
#: label value of voxels nobody annotated (the bundles' ignore value)
UNANNOTATED = 255


def encode_annotated(ids: Iterable[int]) -> int:
    """Bitmask of class ids (1-based): bit ``id - 1`` set per annotated class."""
    mask = 0
    for i in ids:
        i = int(i)
        if i < 1:
            raise ValueError(f"class ids start at 1, got {i}")
        mask |= 1 << (i - 1)
    return mask


def decode_annotated(mask: int) -> list[int]:
    """The sorted class ids set in a bitmask from :func:`encode_annotated`."""
    mask = int(mask)
    if mask < 0:
        raise ValueError(f"annotated_mask must be non-negative, got {mask}")
    return [i + 1 for i in range(mask.bit_length()) if mask >> i & 1]


def never_annotated(datalist: dict) -> list[str]:
    """Names of the class table's classes that no training item annotates: a model trained on the
    datalist never learnt them (its channel is untrained output).

    An item without ``annotated_mask`` or ``annotated`` annotates every class.

    >>> table = [{"id": 1, "name": "mito"}, {"id": 2, "name": "er"}, {"id": 3, "name": "nuc"}]
    >>> never_annotated({"class_table": table, "training": [{"annotated_mask": 0b001}, {"annotated": [2]}]})
    ['nuc']
    >>> never_annotated({"class_table": table, "training": [{"annotated_mask": 1}, {}]})
    []
    """
    seen: set[int] = set()
    table = [r for r in datalist.get("class_table") or [] if isinstance(r, dict)]
    for item in datalist.get("training") or []:
        mask, ids = item.get("annotated_mask"), item.get("annotated")
        if isinstance(mask, (int, float)) and not isinstance(mask, bool) and float(mask).is_integer() and mask >= 0:
            seen.update(decode_annotated(int(mask)))
        elif isinstance(ids, list):
            seen.update(int(i) for i in ids if isinstance(i, int))
        else:
            return []  # annotates every class
    return [str(r.get("name")) for r in table if r.get("id") not in seen]
