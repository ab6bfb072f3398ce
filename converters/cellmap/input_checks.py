"""Checks of the CellMap converter's inputs made before any crop is converted: flag values,
crop lists that name one crop twice (in ``datasplit.csv``, or there and in the test
manifest), and test crops lying on a training crop's region.
"""

from __future__ import annotations

import argparse
import math
from typing import Sequence

import numpy as np

from converters.geometry import Grid

__all__ = ["MIN_TILE_VOXELS", "check_max_voxels", "folds_arg", "max_voxels_arg", "overlap_share",
           "positive_int", "refuse_repeated_crops", "spacing_arg", "training_overlap_warnings", "upsample_arg",
           "workers_arg"]

#: the smallest ``--max_voxels``: a 16^3 tile, the least a 3-D network that halves its input
#: 4 times (SegResNet, DiNTS, SwinUNETR) can take; smaller tiles are thousands of files of
#: nothing to train on (1 voxel per tile would write one file pair per voxel)
MIN_TILE_VOXELS = 16 ** 3
#: the share of a test crop's volume inside a training crop from which it is warned about: below it,
#: a sliver where neighbouring boxes meet (voxel edges rounded differently), not the same region
MIN_OVERLAP_WARNED = 0.01


def check_max_voxels(value: int | None, flag: str = "max_voxels") -> None:
    """Refuse a tile size too small to train on (None: no tiling).

    >>> check_max_voxels(None); check_max_voxels(4096)
    >>> check_max_voxels(1)
    Traceback (most recent call last):
    ...
    ValueError: --max_voxels 1: tiles of fewer than 4096 voxels (16^3) are too small to train on (and a crop would \
be cut into thousands of files); give at least 4096, or leave --max_voxels out to write each crop whole
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < MIN_TILE_VOXELS:
        raise ValueError(f"--{flag} {value}: tiles of fewer than {MIN_TILE_VOXELS} voxels (16^3) are too small to "
                         "train on (and a crop would be cut into thousands of files); give at least "
                         f"{MIN_TILE_VOXELS}, or leave --{flag} out to write each crop whole")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1 (0 is refused, not read as "all")."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 1 (leave the flag out for no limit)")
    return value


def folds_arg(text: str) -> int:
    """argparse type of ``--num_folds``: a whole number of at least 1 (1: every crop in fold 0)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 1 or more cross-validation folds (e.g. 5)")
    return value


def workers_arg(text: str) -> int:
    """argparse type of ``--workers``: a whole number of at least 0 (0 and 1 both convert in this process).

    >>> workers_arg("0"), workers_arg("4")
    (0, 4)
    """
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 or more processes (0 or 1: convert in this process)")
    return value


def upsample_arg(text: str) -> float:
    """argparse type of ``--max_em_upsample``: a factor of at least 1 (1: EM is never upsampled; a
    smaller factor would mean the same, NaN would let any upsampling through: both refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 1:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r}: give a factor of 1 or more (1: never upsample EM; default 2)")
    return value


def max_voxels_arg(text: str) -> int:
    """argparse type of ``--max_voxels``: :func:`check_max_voxels` (0 is refused, not read as "no limit")."""
    value = _int(text)
    try:
        check_max_voxels(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value}: {str(exc).split(': ', 1)[1]}") from None
    return value


def spacing_arg(text: str) -> float:
    """argparse type: a finite voxel size in nm, greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a voxel size must be a finite number of nm greater than 0")
    return value


def _where(src) -> str:
    """Where a crop is listed (``file:line``), or its ground-truth group when it was discovered."""
    listed = getattr(src, "listed_at", "")
    if listed:
        return listed
    gt = getattr(src, "gt_zarr", None)
    return f"{gt}/{src.gt_group}" if gt else f"{src.em_zarr} (test crop)"


def refuse_repeated_crops(crops: Sequence, tests: Sequence = ()) -> None:
    """Refuse a crop name given twice: among training crops, among test crops, or in both.

    A crop is trained on or predicted, never both: a test crop that is also a training
    crop would be dropped from training and its image listed twice in ``testing``.

    Raises
    ------
    ValueError
        Naming the crop and where each of the two is listed (``file:line``).
    """
    seen: dict[str, tuple[str, object]] = {}
    for kind, items in (("training", crops), ("test", tests)):
        for src in items:
            if src.name not in seen:
                seen[src.name] = (kind, src)
                continue
            first_kind, first = seen[src.name]
            if first_kind == kind:
                raise ValueError(f"{_where(src)}: {kind} crop {src.name} is listed twice (also at {_where(first)}); "
                                 "remove one of the two")
            raise ValueError(f"{_where(src)}: test crop {src.name} is also a training crop ({_where(first)}): a crop "
                             "is either trained on or predicted, not both (it would leave training and be predicted "
                             "twice); remove it from the test manifest or from the datasplit")


def overlap_share(box: tuple[Sequence[float], Sequence[float]], other: tuple[Sequence[float], Sequence[float]]
                  ) -> float:
    """The share (0 to 1) of ``box``'s volume inside ``other``; boxes are ``(lower, upper)`` edges in nm.

    >>> overlap_share(((0, 0, 0), (10, 10, 10)), ((5, 0, 0), (20, 10, 10)))
    0.5
    >>> overlap_share(((0, 0, 0), (10, 10, 10)), ((10, 0, 0), (20, 10, 10)))  # faces touching
    0.0
    """
    lo, hi = np.asarray(box[0], float), np.asarray(box[1], float)
    inter = np.clip(np.minimum(hi, other[1]) - np.maximum(lo, other[0]), 0, None)
    volume = float(np.prod(hi - lo))
    return float(np.prod(inter)) / volume if volume > 0 else 0.0


def training_overlap_warnings(tests: Sequence, training: Sequence[tuple[str, str, Grid]]) -> list[str]:
    """One line per test crop whose region (the union of its labels' boxes) overlaps a training
    crop's region (``(name, dataset, ground-truth grid)``) of the same dataset.

    A test crop under its own name that is also a training crop is refused by
    :func:`refuse_repeated_crops`; under another number it would be predicted on data trained on.
    """
    out = []
    for test in tests:
        grids = [Grid(lbl["translation"], lbl["voxel_size"], lbl["shape"]) for lbl in test.labels]
        if not grids:
            continue
        box = (np.min([g.lower_edge for g in grids], axis=0), np.max([g.upper_edge for g in grids], axis=0))
        for name, dataset, grid in training:
            share = overlap_share(box, (grid.lower_edge, grid.upper_edge)) if dataset == test.dataset else 0.0
            if share >= MIN_OVERLAP_WARNED:
                out.append(f"test crop {test.name} overlaps training crop {name} ({share:.0%} of the test crop's "
                           "volume): a score on it would measure memorisation, not generalisation")
    return out
