"""K-fold assignment that keeps related crops together and spreads rare classes.

Groups (a dataset, or a single crop when there are too few datasets) go whole to one
fold. Groups holding the rarest classes are placed first, each in the fold where its
classes are least represented, so a class seen in only k groups lands in k folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

__all__ = ["FoldItem", "assign_folds"]


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
