"""Bad input named where it is: non-finite images, images of the wrong dimensionality, missing
files, and the user error buried under MONAI's ``applying transform <...>`` wrapper.

Every error here is a ``ValueError`` or ``FileNotFoundError`` (``run_auto3dseg.py`` prints it as
one line) whose message says what is wrong, which file (and item), and what to do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["InputError", "NonFiniteImageError", "check_finite", "CheckFinited", "image_shapes_problems",
           "user_error"]


class InputError(ValueError):
    """Bad input data: the message names the file and what to do."""


class NonFiniteImageError(InputError):
    """An image holds NaN or infinite values."""


def _nonfinite_message(path: str, count: int, size: int, where: str) -> str:
    return (f"{path}: {count} of {size} voxels are not finite (NaN or inf){where}. Fix the image (e.g. re-convert it, "
            "or replace them: numpy.nan_to_num) or remove it from the datalist, then run again")


def check_finite(array: Any, path: str | os.PathLike | None, where: str = "") -> None:
    """Raise :class:`NonFiniteImageError` naming ``path`` when ``array`` holds NaN or inf.

    >>> check_finite(np.array([1.0, np.nan]), "a.nii.gz")
    Traceback (most recent call last):
    ...
    auto3dseg.engine.input_checks.NonFiniteImageError: a.nii.gz: 1 of 2 voxels are not finite (NaN or inf). Fix the image (e.g. re-convert it, or replace them: numpy.nan_to_num) or remove it from the datalist, then run again
    """
    if hasattr(array, "detach"):
        import torch

        if not array.dtype.is_floating_point or bool(torch.isfinite(array).all()):
            return  # the usual case: one pass, no count
        bad = int((~torch.isfinite(array)).sum())
        size = int(array.numel())
    else:
        arr = np.asarray(array)
        if not np.issubdtype(arr.dtype, np.floating) or bool(np.isfinite(arr).all()):
            return
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        size = int(arr.size)
    if bad:
        raise NonFiniteImageError(_nonfinite_message(str(path), bad, size, where))


class CheckFinited:
    """Dictionary transform: raise :class:`NonFiniteImageError` for a loaded image holding
    NaN or inf, naming its file (MONAI's ``filename_or_obj`` metadata)."""

    def __init__(self, keys: Sequence[Hashable] = ("image",)):
        self.keys = list(keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        for key in self.keys:
            x = data.get(key)
            if x is None:
                continue
            meta = getattr(x, "meta", {}) or {}
            check_finite(x, meta.get("filename_or_obj") or key)
        return data


def _header_shape(path: Path) -> tuple[int, ...] | None:
    try:
        import nibabel as nib

        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception:  # noqa: BLE001 - unreadable files are the validator's business
        return None


def image_shapes_problems(datalist: Mapping[str, Any], dataroot: str | os.PathLike, source: str) -> list[str]:
    """Images whose dimensionality differs from what the datalist's images are (header only).

    A 3-D datalist takes ``x, y, z`` (or ``x, y, z, c`` for every image alike); a 2-D one
    (``spatial_dims: 2``) ``x, y, 1, c``. Returns one message per odd image, naming it, its
    item and what to do.
    """
    root = Path(dataroot)
    rows = []
    for section in ("training", "testing"):
        for i, it in enumerate(datalist.get(section) or []):
            img = it.get("image") if isinstance(it, Mapping) else it
            if isinstance(img, str):
                shape = _header_shape(root / img)
                if shape is not None:
                    rows.append((section, i, img, shape))
    if not rows:
        return []
    dims = 2 if int(datalist.get("spatial_dims") or 3) == 2 else 3
    ndims = [len(s) for *_, s in rows]
    common = max(sorted(set(ndims)), key=ndims.count)  # a tie: the fewer dimensions
    channels = [s[3] if len(s) > 3 else 1 for *_, s in rows]
    common_c = max(sorted(set(channels)), key=channels.count)
    out = []
    for (section, i, img, shape), nd, ch in zip(rows, ndims, channels):
        why = None
        if nd < 3 and dims == 3:
            why = f"is {nd}-D {shape}, but this datalist holds 3-D volumes (x, y, z)"
        elif nd > 4 or nd != common:
            why = f"is {nd}-D {shape}, while the datalist's images are {common}-D"
        elif ch != common_c:
            why = f"has {ch} channels {shape}, while the datalist's images have {common_c}"
        if why:
            out.append(f"{root / img} ({section} item {i} of {source}) {why}: convert it like the others "
                       "(the converters write x, y, z volumes; cells x, y, 1, channel) or remove it from the datalist")
    return out


_WRAPPED = re.compile(r"(?:auto3dseg\.input_checks\.)?(NonFiniteImageError|InputError): (.+)")


def user_error(exc: BaseException) -> Exception | None:
    """The user error (:class:`InputError`, ``FileNotFoundError``) behind MONAI's ``applying transform``
    wrapper or a DataLoader worker's re-raised copy, else None."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (InputError, FileNotFoundError)):
            return e
        e = e.__cause__ or e.__context__
    m = None
    for m in _WRAPPED.finditer(str(exc)):
        pass
    return InputError(m.group(2).strip()) if m else None
