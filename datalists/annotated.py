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

__all__ = ["encode_annotated", "decode_annotated", "ANNOTATED_KEY", "UNANNOTATED"]

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
