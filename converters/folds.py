"""K-fold assignment that keeps related crops together and spreads rare classes.

Groups (a dataset, or a single crop when there are too few datasets) go whole to one
fold. Groups holding the rarest classes are placed first, each in the fold where its
classes are least represented, so a class seen in only k groups lands in k folds.

With fewer crops than folds, crops are cut into **spatial folds**
(:func:`plan_spatial_folds`): contiguous slabs along the crop's longest axis, one fold
each, with ``gap`` voxels between slabs written to no item. Every item is its own
image, so no training patch can contain a voxel of another fold's item; the gap also
keeps the objects cut by a slab boundary, and their immediate context, out of both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Mapping, Sequence

import numpy as np

from converters.geometry import longest_axis, max_slabs, split_into_slabs

__all__ = ["FoldItem", "assign_folds", "CropExtent", "SpatialSplit", "SplitPlan", "plan_spatial_folds",
           "assign_part_folds", "describe_split", "DEFAULT_FOLD_GAP", "MIN_SLAB"]

#: Output voxels between two spatial folds of one crop, left out of both (``--fold_gap``).
DEFAULT_FOLD_GAP = 16
#: Thinnest slab (output voxels along the cut axis) a crop is cut into.
MIN_SLAB = 16
_AXES = "zyx"


@dataclass(frozen=True)
class FoldItem:
    """One unit to place: its crop, its dataset, its classes and its size."""

    key: Hashable
    dataset: str
    classes: frozenset[int]
    n_voxels: int = 0


def assign_folds(items: Sequence[FoldItem], num_folds: int) -> tuple[dict[Hashable, int], int, str]:
    """Assign each item a fold in ``0..k-1``.

    Parameters
    ----------
    items : sequence of FoldItem
    num_folds : int
        Requested number of folds; reduced to the number of groups when there are fewer
        (an empty fold breaks MONAI's ensemble).

    Returns
    -------
    folds : dict
        ``item.key -> fold``.
    k : int
        Number of folds actually used.
    grouping : str
        ``"dataset"`` when whole datasets were kept together, else ``"crop"``.

    Examples
    --------
    >>> items = [FoldItem(i, "ds", frozenset({1} if i else {1, 2})) for i in range(4)]
    >>> folds, k, how = assign_folds(items, 2)
    >>> k, how, sorted(folds.values())
    (2, 'crop', [0, 0, 1, 1])
    """
    if num_folds < 1:
        raise ValueError(f"num_folds must be at least 1, got {num_folds}")
    if not items:
        return {}, 0, "crop"
    datasets = sorted({it.dataset for it in items})
    by_dataset = len(datasets) >= num_folds
    groups: dict[Hashable, list[FoldItem]] = {}
    for it in items:
        groups.setdefault(it.dataset if by_dataset else it.key, []).append(it)
    k = min(num_folds, len(groups))
    g_classes = {g: frozenset().union(*(it.classes for it in members)) for g, members in groups.items()}
    g_size = {g: sum(it.n_voxels for it in members) for g, members in groups.items()}
    freq: dict[int, int] = {}
    for cls in g_classes.values():
        for c in cls:
            freq[c] = freq.get(c, 0) + 1

    def rarity(g: Hashable) -> tuple:
        rarest = min((freq[c] for c in g_classes[g]), default=len(groups) + 1)
        return (rarest, -g_size[g], str(g))

    fold_counts: list[Mapping[int, int]] = [dict() for _ in range(k)]
    fold_groups = [0] * k
    fold_size = [0] * k
    group_fold: dict[Hashable, int] = {}
    for g in sorted(groups, key=rarity):
        def cost(f: int) -> tuple:
            load = sum(fold_counts[f].get(c, 0) / freq[c] for c in g_classes[g])
            return (load, fold_groups[f], fold_size[f], f)

        f = min(range(k), key=cost)
        group_fold[g] = f
        fold_groups[f] += 1
        fold_size[f] += g_size[g]
        for c in g_classes[g]:
            fold_counts[f][c] = fold_counts[f].get(c, 0) + 1  # type: ignore[index]
    folds = {it.key: group_fold[it.dataset if by_dataset else it.key] for it in items}
    return folds, k, "dataset" if by_dataset else "crop"


@dataclass(frozen=True)
class CropExtent:
    """A training crop as the fold planner sees it: name, dataset, output shape (z, y, x)."""

    name: str
    dataset: str
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class SpatialSplit:
    """How one crop is cut into spatial folds: ``parts`` slabs along ``axis``, ``gap`` voxels apart."""

    parts: int
    axis: int
    gap: int

    def to_dict(self) -> dict:
        return {"parts": self.parts, "axis": self.axis, "axis_name": _AXES[self.axis], "gap": self.gap}


@dataclass
class SplitPlan:
    """The crops to cut (only those cut into 2 or more slabs) and why fewer folds than asked."""

    splits: dict[str, SpatialSplit] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def split_of(self, name: str) -> SpatialSplit | None:
        return self.splits.get(name)


def plan_spatial_folds(crops: Sequence[CropExtent], num_folds: int, gap: int = DEFAULT_FOLD_GAP,
                       min_slab: int = MIN_SLAB) -> SplitPlan:
    """Decide which crops to cut into spatial folds so that there are ``num_folds`` fold groups.

    Nothing is cut when there are at least ``num_folds`` crops (folds then keep datasets
    or crops whole, as :func:`assign_folds` does). Otherwise the crop whose slabs are
    largest gets one more slab, repeatedly, until there are ``num_folds`` groups or no crop
    can hold another slab of ``min_slab`` voxels, ``gap`` voxels apart, along its longest
    axis; ``notes`` then say why there are fewer folds and what would give more.

    Examples
    --------
    >>> plan = plan_spatial_folds([CropExtent("crop1", "sbem", (16, 768, 704))], 2)
    >>> plan.splits["crop1"], plan.notes
    (SpatialSplit(parts=2, axis=1, gap=16), [])
    >>> note = plan_spatial_folds([CropExtent("tiny", "d", (8, 40, 40))], 2).notes[-1]
    >>> note[:64], note.endswith("re-convert with --fold_gap 8 (or less)")
    ('tiny is 40 voxels along y: 2 slabs of >= 16 voxels, 16 voxels ap', True)
    """
    if gap < 0:
        raise ValueError(f"the fold gap must be >= 0 voxels, got {gap}")
    if num_folds < 2 or len(crops) >= num_folds or not crops:
        return SplitPlan()
    axis = {c.name: longest_axis(c.shape) for c in crops}
    cap = {c.name: max_slabs(c.shape[axis[c.name]], gap, min_slab) for c in crops}
    size = {c.name: int(np.prod(c.shape, dtype=np.int64)) for c in crops}
    parts = {c.name: 1 for c in crops}
    while sum(parts.values()) < num_folds:
        open_ = [c.name for c in crops if parts[c.name] < cap[c.name]]
        if not open_:
            break
        best = min(open_, key=lambda n: (-size[n] / parts[n], n))
        parts[best] += 1
    plan = SplitPlan({n: SpatialSplit(p, axis[n], gap) for n, p in parts.items() if p > 1})
    total = sum(parts.values())
    if total < num_folds:
        no_gap = min(num_folds, sum(max_slabs(c.shape[axis[c.name]], 0, min_slab) for c in crops))
        plan.notes.append(
            f"{total} fold(s) instead of {num_folds}: {len(crops)} crop(s), each cut along its longest axis into "
            f"at most {'/'.join(str(cap[c.name]) for c in crops)} slab(s) of >= {min_slab} voxels, {gap} voxels apart; "
            + (f"more crops give more, or --fold_gap 0 gives {no_gap}" if no_gap > total else "more crops give more"))
    if total < 2:
        c = crops[0]
        length = c.shape[axis[c.name]]
        fix = (f"re-convert with --fold_gap {length - 2 * min_slab} (or less)" if length - 2 * min_slab >= 0
               else "add crops, or convert at a finer --target_spacing")
        plan.notes.append(f"{c.name} is {length} voxels along {_AXES[axis[c.name]]}: 2 slabs of >= {min_slab} "
                          f"voxels, {gap} voxels apart, need {2 * min_slab + gap}; {fix}")
    return plan


def assign_part_folds(items: Sequence[FoldItem], parts: Mapping[Hashable, int],
                      num_folds: int) -> tuple[dict[tuple[Hashable, int], int], int, str]:
    """:func:`assign_folds` over the parts of crops cut into spatial folds (``parts[key]`` slabs).

    Returns ``{(item.key, part): fold}``, the number of folds and the grouping
    (``"spatial"`` when some crop is cut, else :func:`assign_folds`'s). When crops are cut
    there are at most ``num_folds`` parts, so each part gets a fold of its own.

    >>> folds, k, how = assign_part_folds([FoldItem("crop1", "sbem", frozenset({1}))], {"crop1": 2}, 2)
    >>> folds, k, how
    ({('crop1', 0): 0, ('crop1', 1): 1}, 2, 'spatial')
    """
    units, part_of = [], {}
    for it in items:
        n = max(1, int(parts.get(it.key, 1)))
        for p in range(n):  # a whole crop keeps its own key: exactly assign_folds's placement
            key = it.key if n == 1 else (it.key, p)
            part_of[key] = (it.key, p)
            units.append(FoldItem(key, it.dataset, it.classes, it.n_voxels // n))
    folds, k, grouping = assign_folds(units, num_folds)
    return ({part_of[key]: f for key, f in folds.items()}, k,
            "spatial" if any(int(n) > 1 for n in parts.values()) else grouping)


def describe_split(name: str, shape: Sequence[int], split: SpatialSplit, folds: Sequence[int]) -> str:
    """One line saying how a crop was cut, e.g. for the report.

    >>> describe_split("crop1", (16, 768, 704), SpatialSplit(2, 1, 16), [0, 1])
    'crop1: cut into 2 spatial folds along y (y 0:376 -> fold 0, y 392:768 -> fold 1), 16-voxel gap(s) left out'
    """
    slabs = split_into_slabs(int(shape[split.axis]), split.parts, split.gap)
    ax = _AXES[split.axis]
    where = ", ".join(f"{ax} {lo}:{hi} -> fold {f}" for (lo, hi), f in zip(slabs, folds))
    return (f"{name}: cut into {split.parts} spatial folds along {ax} ({where}), "
            f"{split.gap}-voxel gap(s) left out")
