"""Training images that are constant (blank): every voxel of every channel holds one value.

Such an image gives the network nothing to learn from, yet it is trained on like any other.
MONAI's DataAnalyzer either records it with ``min == max`` (a constant non-zero image) or,
for an all-zero one, fails on it and leaves it out of ``datastats_by_case.yaml`` (the review's
``[not-analysed]``). :func:`constant_training_images` finds both kinds: from the statistics
for the analysed cases, by reading the image for the items the analyser left out.

The analysis (:func:`auto3dseg.analysis.analyze.analyze`) stops on them unless
``AUTO3DSEG_ALLOW_CONSTANT_IMAGES=1`` (or ``allow_constant=True``); the review then lists them
at the top.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auto3dseg.engine.input_checks import InputError

from .review_cases import _case_intensity, _first_path, match_cases_to_items

__all__ = ["ALLOW_ENV", "ConstantImage", "ConstantImageError", "allow_constant_images", "constant_message",
           "constant_training_images"]

#: ``1``: train on constant images anyway (the review says so at the top)
ALLOW_ENV = "AUTO3DSEG_ALLOW_CONSTANT_IMAGES"


class ConstantImageError(InputError):
    """Training items whose image is constant; the message names them and what to do."""


@dataclass(frozen=True)
class ConstantImage:
    """A training item whose image holds a single value (per channel)."""

    index: int  #: position in the datalist's ``training`` list
    image: str  #: the item's image path, as the datalist gives it
    values: tuple[float, ...]  #: the value of each channel
    analysed: bool  #: False: MONAI's analysis left it out (an all-zero image)

    def describe(self) -> str:
        vals = ", ".join(f"{v:g}" for v in self.values)
        what = f"every voxel {vals}" if len(self.values) == 1 else f"every channel constant: {vals}"
        return f"training item {self.index} {self.image} ({what}" + ("" if self.analysed else
                                                                    "; MONAI's analysis skipped it") + ")"


def allow_constant_images(allow: bool | None = None) -> bool:
    """``allow`` when given, else ``AUTO3DSEG_ALLOW_CONSTANT_IMAGES`` (``1``/``yes``/``true``)."""
    if allow is not None:
        return bool(allow)
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "yes", "true")


def _stats_values(case: Mapping[str, Any]) -> tuple[float, ...] | None:
    """The value of each channel when MONAI's statistics say every channel is constant, else None."""
    chans = _case_intensity(case)
    values = []
    for it in chans:
        mn, mx = it.get("min"), it.get("max")
        if mn is None or mx is None or float(mn) != float(mx):
            return None
        values.append(float(mn))
    return tuple(values) or None


def _read_channels(path: Path) -> list[np.ndarray]:
    """The channels of an image file (NIfTI: channels last after 3 spatial axes)."""
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        arr = np.asanyarray(nib.load(str(path)).dataobj)
    else:
        from monai.transforms import LoadImage

        arr = np.asarray(LoadImage(image_only=True)(str(path)))
    if arr.ndim > 3:
        return [arr[..., c] for c in range(arr.shape[-1])]
    return [arr]


def _read_values(item: Mapping[str, Any], dataroot: Path) -> tuple[float, ...] | None:
    """The value of each channel of the item's image when every channel is constant, else None
    (also when the image cannot be read: that is the validator's and the review's business)."""
    paths = item.get("image")
    paths = list(paths) if isinstance(paths, (list, tuple)) else [paths]
    values: list[float] = []
    try:
        for p in paths:
            for ch in _read_channels(dataroot / str(p)):
                if ch.size == 0:
                    return None
                lo, hi = ch.min(), ch.max()
                if lo != hi:
                    return None
                values.append(float(lo))
    except Exception:  # noqa: BLE001 - unreadable: not ours to report here
        return None
    return tuple(values) or None


def constant_training_images(cases: Sequence[Mapping[str, Any]], datalist: Mapping[str, Any],
                             dataroot: str | os.PathLike) -> list[ConstantImage]:
    """Training items of ``datalist`` whose image is constant.

    Parameters
    ----------
    cases : sequence of mapping
        ``stats_by_cases`` of ``datastats_by_case.yaml``.
    datalist : mapping
        The datalist (its ``training`` list).
    dataroot : path
        Folder the items' paths are relative to.

    Returns
    -------
    list of ConstantImage
        In datalist order: analysed cases whose every channel has ``min == max``, and items the
        analysis left out whose image, read here, is constant.
    """
    root = Path(dataroot)
    training = [it for it in datalist.get("training") or [] if isinstance(it, Mapping)]
    index = {id(it): i for i, it in enumerate(training)}
    items, unmatched = match_cases_to_items(cases, training, root)
    found: dict[int, ConstantImage] = {}
    for case, item in zip(cases, items):
        values = _stats_values(case) if item is not None else None  # a case not in the datalist trains nothing
        if values is not None:
            k = index[id(item)]
            found[k] = ConstantImage(k, _first_path(item.get("image")), values, True)
    for item in unmatched:
        values = _read_values(item, root)
        if values is not None:
            k = index[id(item)]
            found[k] = ConstantImage(k, _first_path(item.get("image")), values, False)
    return [found[k] for k in sorted(found)]


def constant_message(found: Sequence[ConstantImage], datalist: str | os.PathLike) -> str:
    """One line: which items of ``datalist`` are constant, that they train on nothing, what to do."""
    return (f"{datalist}: {len(found)} training item(s) have a constant image and would train on nothing (no "
            f"intensity to learn from): " + "; ".join(c.describe() for c in found)
            + ". Remove them from the datalist (or re-convert them from their source, if the conversion blanked "
            f"them), then run --mode analyze again; to train on them anyway add --allow_constant_images (or set {ALLOW_ENV}=1)")
