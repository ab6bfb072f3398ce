"""CellMap challenge metrics on arrays: semantic IoU/Dice and instance F1 + Hausdorff.

Every function here is pure: arrays in (z, y, x), numbers or arrays out. Placing a
submission on the truth's grid is done before (see :mod:`auto3dseg.evaluation.score`).

Semantic labels are scored from voxel counts (TP, FP, FN), which the caller may pool
over crops. Instance labels follow the official scorer:

1. the prediction is re-grouped into connected components (26-connectivity, touching
   voxels of different ids stay apart), so the submitted ids only matter where objects
   touch;
2. predicted and true objects are matched one-to-one, maximising the summed IoU
   (Hungarian algorithm), and every matched pair with IoU > 0 is a true positive;
3. ``F1 = 2TP / (2TP + FP + FN)``;
4. each matched pair gets its symmetric Hausdorff distance in nm, capped at
   :func:`hausdorff_cap`; every unmatched object (FP or FN) gets the cap. Distances are
   normalised as ``1.01 ** (-d / ||voxel_size||)`` and averaged;
5. ``combined = sqrt(F1 * mean normalised Hausdorff)``.

A crop whose prediction has far too many objects for its truth
(:func:`instance_ratio_cutoff`) is a failure and scores 0.

Conventions for empty inputs: IoU, Dice and F1 of an empty prediction against an empty
truth are 1.0 (nothing to find, nothing wrongly found), and so is the mean normalised
Hausdorff distance of a crop with no object on either side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cc3d
import edt
import fastremap
import numpy as np
import scipy.ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "dice",
    "hausdorff_cap",
    "hausdorff_distance",
    "instance_f1",
    "instance_ratio_cutoff",
    "instance_score",
    "iou",
    "match_instances",
    "max_weight_matching",
    "normalized_hausdorff",
    "overlap_table",
    "pair_hausdorff_distances",
    "relabel_connected",
    "semantic_counts",
]

# Added to the IoU of every overlapping pair before matching, so that among matchings
# with the same summed IoU the one with more true positives wins (as in the official
# min-cost flow, whose "unmatched" arc costs one unit more than a zero-IoU match).
_MATCH_BONUS = 1e-9


# --------------------------------------------------------------------------------------
# Semantic
# --------------------------------------------------------------------------------------
def semantic_counts(pred: np.ndarray, truth: np.ndarray, ignore_value: int | None = 255) -> dict[str, int]:
    """Voxel counts of a binary prediction against a binary truth.

    Parameters
    ----------
    pred : ndarray
        Prediction; a voxel is foreground when ``> 0``.
    truth : ndarray
        Truth of the same shape; foreground when ``> 0`` and not ``ignore_value``.
    ignore_value : int or None
        Truth voxels equal to this value (CellMap's ``unknown``, 255) are left out of
        every count. None keeps every voxel.

    Returns
    -------
    dict
        ``{"tp": int, "fp": int, "fn": int}``.

    Examples
    --------
    >>> semantic_counts(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 1, 0, 255]))
    {'tp': 1, 'fp': 1, 'fn': 1}
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    p = np.asarray(pred) > 0
    t = np.asarray(truth) > 0
    if ignore_value is not None:
        known = np.asarray(truth) != ignore_value
        p &= known
        t &= known
    tp = int(np.count_nonzero(p & t))
    return {"tp": tp, "fp": int(np.count_nonzero(p)) - tp, "fn": int(np.count_nonzero(t)) - tp}


def iou(counts: Mapping[str, int]) -> float:
    """Intersection over union, ``TP / (TP + FP + FN)``; 1.0 when all three are 0.

    >>> iou({"tp": 2, "fp": 1, "fn": 1})
    0.5
    """
    denom = counts["tp"] + counts["fp"] + counts["fn"]
    return 1.0 if denom == 0 else float(counts["tp"]) / float(denom)


def dice(counts: Mapping[str, int]) -> float:
    """Dice coefficient, ``2TP / (2TP + FP + FN)``; 1.0 when all three are 0.

    >>> round(dice({"tp": 2, "fp": 1, "fn": 1}), 4)
    0.6667
    """
    denom = 2 * counts["tp"] + counts["fp"] + counts["fn"]
    return 1.0 if denom == 0 else 2.0 * float(counts["tp"]) / float(denom)


# --------------------------------------------------------------------------------------
# Instance matching
# --------------------------------------------------------------------------------------
def relabel_connected(pred: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected components of an instance prediction, as the official scorer re-groups it.

    Voxels of different ids stay in different components even when they touch; one id
    split into separate pieces becomes several components.

    Returns
    -------
    labels : ndarray of uint32
        Components numbered 1..n, 0 background.
    n : int
        Number of components.

    Examples
    --------
    >>> relabel_connected(np.array([[[5, 0, 5, 7]]], dtype=np.uint16))[0].tolist()
    [[[1, 0, 2, 3]]]
    """
    labels, n = cc3d.connected_components(np.ascontiguousarray(pred), connectivity=connectivity,
                                          return_N=True, out_dtype=np.uint32)
    return labels, int(n)


def _ids_and_sizes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, counts = fastremap.unique(labels, return_counts=True)
    keep = ids != 0
    return ids[keep], np.asarray(counts[keep], dtype=np.int64)


def overlap_table(pred_ids: np.ndarray, truth_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Every (truth, prediction) pair of objects that share a voxel, with its IoU.

    One vectorised pass over the foreground; only overlapping pairs are listed.

    Returns
    -------
    dict of ndarray
        ``truth`` and ``pred`` (sorted non-zero ids of each side), ``truth_size`` and
        ``pred_size`` (voxels per object), and for each overlapping pair ``rows`` (index
        into ``truth``), ``cols`` (index into ``pred``), ``intersection`` and ``iou``.

    Examples
    --------
    >>> t = np.array([[[1, 1, 1, 0, 2, 2]]]); p = np.array([[[4, 4, 0, 0, 0, 4]]])
    >>> tab = overlap_table(p, t)
    >>> tab["rows"].tolist(), tab["cols"].tolist(), tab["iou"].round(3).tolist()
    ([0, 1], [0, 0], [0.5, 0.25])
    """
    if pred_ids.shape != truth_ids.shape:
        raise ValueError(f"prediction shape {pred_ids.shape} differs from truth shape {truth_ids.shape}")
    p, t = np.ravel(pred_ids), np.ravel(truth_ids)
    t_ids, t_sizes = _ids_and_sizes(t)
    p_ids, p_sizes = _ids_and_sizes(p)
    both = (p != 0) & (t != 0)
    rows = np.searchsorted(t_ids, t[both]).astype(np.int64)
    cols = np.searchsorted(p_ids, p[both]).astype(np.int64)
    n_p = max(int(p_ids.size), 1)
    keys, inter = np.unique(rows * n_p + cols, return_counts=True)
    rows, cols = keys // n_p, keys % n_p
    inter = inter.astype(np.int64)
    union = t_sizes[rows] + p_sizes[cols] - inter
    return {
        "truth": t_ids, "pred": p_ids, "truth_size": t_sizes, "pred_size": p_sizes,
        "rows": rows, "cols": cols, "intersection": inter,
        "iou": inter.astype(np.float64) / union.astype(np.float64),
    }


def max_weight_matching(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray, n_rows: int) -> np.ndarray:
    """Indices of the edges of a maximum-weight one-to-one matching of a sparse bipartite graph.

    Edge ``i`` joins row ``rows[i]`` and column ``cols[i]`` with ``weight[i] > 0``. The
    graph splits into connected components that are matched independently: a component
    with one edge is matched as is, the others by Hungarian on their own small dense table.

    >>> max_weight_matching(np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([3.0, 2.0, 2.0]), 2).tolist()
    [1, 2]
    """
    n_cols = int(cols.max()) + 1
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, n_rows + cols)),
                       shape=(n_rows + n_cols, n_rows + n_cols))
    _, node_comp = connected_components(graph, directed=False)
    edge_comp = node_comp[rows]
    order = np.argsort(edge_comp, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(edge_comp[order]) != 0])
    sizes = np.diff(np.r_[starts, order.size])
    chosen = [order[starts[sizes == 1]]]
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1]):
        edges = order[start:start + size]
        r_ids, r_loc = np.unique(rows[edges], return_inverse=True)
        c_ids, c_loc = np.unique(cols[edges], return_inverse=True)
        table = np.zeros((r_ids.size, c_ids.size), np.float64)
        table[r_loc, c_loc] = weight[edges]
        r_sel, c_sel = linear_sum_assignment(table, maximize=True)
        lookup = np.full(table.shape, -1, np.int64)
        lookup[r_loc, c_loc] = edges
        picked = lookup[r_sel, c_sel]
        chosen.append(picked[picked >= 0])  # a zero-weight cell is no edge: no match
    return np.sort(np.concatenate(chosen))


def match_instances(pred_ids: np.ndarray, truth_ids: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, int, int]:
    """One-to-one matching of predicted and true objects that maximises the summed IoU.

    Every matched pair overlaps (IoU > 0) and is a true positive: there is no minimum
    overlap, as in the official scorer.

    Parameters
    ----------
    pred_ids, truth_ids : ndarray of int
        Instance ids (0 background), same shape. Run :func:`relabel_connected` on the
        prediction first to score as the challenge does.

    Returns
    -------
    pairs : ndarray of int64, shape (k, 2)
        ``(pred_id, truth_id)`` of each matched pair, sorted by truth id.
    ious : ndarray of float64, shape (k,)
        IoU of each pair.
    n_pred, n_truth : int
        Number of objects on each side.

    Examples
    --------
    >>> t = np.array([[[1, 1, 1, 1, 0, 2]]])
    >>> p = np.array([[[3, 3, 0, 4, 0, 0]]])          # object 1 split in two, object 2 missed
    >>> pairs, ious, n_pred, n_truth = match_instances(p, t)
    >>> pairs.tolist(), ious.tolist(), n_pred, n_truth
    ([[3, 1]], [0.5], 2, 2)
    """
    tab = overlap_table(pred_ids, truth_ids)
    n_pred, n_truth = int(tab["pred"].size), int(tab["truth"].size)
    if tab["rows"].size == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float64), n_pred, n_truth
    edges = max_weight_matching(tab["rows"], tab["cols"], tab["iou"] + _MATCH_BONUS, n_truth)
    pairs = np.stack([tab["pred"][tab["cols"][edges]], tab["truth"][tab["rows"][edges]]], axis=1)
    return pairs.astype(np.int64), tab["iou"][edges], n_pred, n_truth


def instance_f1(tp: int, fp: int, fn: int) -> float:
    """Instance F1, ``2TP / (2TP + FP + FN)``; 1.0 when there is nothing on either side.

    >>> round(instance_f1(1, 1, 0), 4)
    0.6667
    """
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


# --------------------------------------------------------------------------------------
# Hausdorff distance
# --------------------------------------------------------------------------------------
def hausdorff_distance(a: np.ndarray, b: np.ndarray, voxel_size: Sequence[float]) -> float:
    """Symmetric Hausdorff distance in nm between two non-empty boolean masks.

    The largest distance from a voxel centre of one mask to the nearest voxel centre of
    the other, both ways (exact Euclidean distance transform, anisotropic).

    Examples
    --------
    >>> a = np.zeros((6, 1, 1), bool); a[0:2] = True
    >>> b = np.zeros((6, 1, 1), bool); b[3:5] = True
    >>> hausdorff_distance(a, b, (8.0, 4.0, 4.0))
    24.0
    """
    if not (a.any() and b.any()):
        raise ValueError("Hausdorff distance needs two non-empty masks")
    aniso = tuple(float(v) for v in voxel_size)
    to_b = edt.edt(np.ascontiguousarray(~b), anisotropy=aniso, black_border=False)
    to_a = edt.edt(np.ascontiguousarray(~a), anisotropy=aniso, black_border=False)
    return float(max(to_b[a].max(), to_a[b].max()))


def pair_hausdorff_distances(pred_ids: np.ndarray, truth_ids: np.ndarray, pairs: np.ndarray,
                             voxel_size: Sequence[float]) -> np.ndarray:
    """Hausdorff distance in nm of each matched ``(pred_id, truth_id)`` pair.

    Each distance is computed on the union of the pair's two bounding boxes only, so the
    cost follows the objects' size, not the crop's.

    Examples
    --------
    >>> t = np.zeros((1, 1, 8), np.uint16); t[0, 0, 1:3] = 1; t[0, 0, 5:7] = 2
    >>> p = np.zeros_like(t); p[0, 0, 1:4] = 9; p[0, 0, 5:7] = 3
    >>> pair_hausdorff_distances(p, t, np.array([[9, 1], [3, 2]]), (4.0, 4.0, 4.0)).tolist()
    [4.0, 0.0]
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.zeros(pairs.shape[0], np.float64)
    if out.size == 0:
        return out
    # find_objects indexes boxes by label value, so map the ids to 1..n first.
    t_small, t_map = fastremap.renumber(np.ascontiguousarray(truth_ids), in_place=False)
    p_small, p_map = fastremap.renumber(np.ascontiguousarray(pred_ids), in_place=False)
    t_boxes, p_boxes = ndi.find_objects(t_small), ndi.find_objects(p_small)
    for i, (pid, tid) in enumerate(pairs.tolist()):
        tl, pl = t_map[tid], p_map[pid]
        tb, pb = t_boxes[tl - 1], p_boxes[pl - 1]
        box = tuple(slice(min(s.start, r.start), max(s.stop, r.stop)) for s, r in zip(tb, pb))
        out[i] = hausdorff_distance(t_small[box] == tl, p_small[box] == pl, voxel_size)
    return out


def hausdorff_cap(voxel_size: Sequence[float], shape: Sequence[int]) -> float:
    """The distance (nm) given to unmatched objects and the upper bound of every distance.

    As in the official scorer: half the crop's shortest physical side, the farthest a
    point can be from the crop's boundary.

    >>> hausdorff_cap((8.0, 4.0, 4.0), (10, 30, 30))
    40.0
    """
    return float(np.min(np.asarray(voxel_size, np.float64) * np.asarray(shape, np.float64)) / 2.0)


def normalized_hausdorff(distance: float | np.ndarray, voxel_size: Sequence[float]) -> np.ndarray:
    """Distance in nm mapped to (0, 1]: ``1.01 ** (-d / ||voxel_size||)`` (0 nm → 1).

    >>> float(normalized_hausdorff(0.0, (4.0, 4.0, 4.0)))
    1.0
    >>> round(float(normalized_hausdorff(8.0 * 3 ** 0.5, (4.0, 4.0, 4.0))), 6)  # 2 voxel diagonals
    0.980296
    """
    norm = float(np.linalg.norm(np.asarray(voxel_size, np.float64)))
    return np.power(1.01, -np.asarray(distance, np.float64) / norm)


# --------------------------------------------------------------------------------------
# Combined instance score
# --------------------------------------------------------------------------------------
def instance_ratio_cutoff(n_truth: int, base: float = 10.0, extra: float = 50.0, decay: float = 5.0) -> float:
    """Most predicted objects per true object before a crop counts as a failure.

    ``base + extra * exp(-n_truth / decay)``: about 51× for one true object, falling to
    10× for many, which is the official scorer's rule ("~10–50×" in the challenge docs).

    >>> round(instance_ratio_cutoff(1), 2), round(instance_ratio_cutoff(1000), 2)
    (50.94, 10.0)
    """
    return float(base + extra * np.exp(-float(n_truth) / decay))


def instance_score(pred_ids: np.ndarray, truth_ids: np.ndarray, voxel_size: Sequence[float],
                   cap_nm: float | None = None, relabel: bool = True) -> dict[str, Any]:
    """Score one crop of one instance class.

    Parameters
    ----------
    pred_ids : ndarray of int
        Predicted instance ids on the truth's grid (0 background).
    truth_ids : ndarray of int
        True instance ids (0 background).
    voxel_size : sequence of 3 float
        Voxel size of the grid (z, y, x, nm).
    cap_nm : float, optional
        Hausdorff cap; default :func:`hausdorff_cap` of the crop.
    relabel : bool
        Re-group the prediction into connected components first (the challenge's rule).

    Returns
    -------
    dict
        ``status`` ("scored" or "too_many_instances"), ``n_pred``, ``n_truth``, ``tp``,
        ``fp``, ``fn``, ``f1``, ``hausdorff_nm`` (mean over matched pairs, None without
        any), ``hausdorff_norm`` (mean normalised distance over matched and unmatched
        objects), ``combined`` = ``sqrt(f1 * hausdorff_norm)``, ``cap_nm``,
        ``ratio_cutoff``. A failed crop has ``f1``, ``hausdorff_norm`` and ``combined`` 0.

    Examples
    --------
    >>> t = np.zeros((4, 4, 4), np.uint16); t[1:3, 1:3, 1:3] = 1
    >>> s = instance_score(t, t, (8.0, 8.0, 8.0))
    >>> s["tp"], s["fp"], s["fn"], s["f1"], s["combined"]
    (1, 0, 0, 1.0, 1.0)
    """
    if pred_ids.shape != truth_ids.shape:
        raise ValueError(f"prediction shape {pred_ids.shape} differs from truth shape {truth_ids.shape}")
    cap = hausdorff_cap(voxel_size, truth_ids.shape) if cap_nm is None else float(cap_nm)
    if relabel:
        pred_ids, n_pred = relabel_connected(pred_ids)
    else:
        n_pred = int(np.count_nonzero(fastremap.unique(pred_ids)))
    n_truth = int(np.count_nonzero(fastremap.unique(truth_ids)))
    cutoff = instance_ratio_cutoff(n_truth)
    result: dict[str, Any] = {"n_pred": n_pred, "n_truth": n_truth, "cap_nm": cap, "ratio_cutoff": cutoff}
    if n_truth > 0 and n_pred > cutoff * n_truth:
        return {**result, "status": "too_many_instances", "tp": 0, "fp": n_pred, "fn": n_truth,
                "f1": 0.0, "hausdorff_nm": None, "hausdorff_norm": 0.0, "combined": 0.0}
    pairs, _, _, _ = match_instances(pred_ids, truth_ids)
    tp = int(pairs.shape[0])
    fp, fn = n_pred - tp, n_truth - tp
    dist = np.minimum(pair_hausdorff_distances(pred_ids, truth_ids, pairs, voxel_size), cap)
    per_object = np.concatenate([normalized_hausdorff(dist, voxel_size),
                                 np.repeat(normalized_hausdorff(cap, voxel_size), fp + fn)])
    h_norm = float(per_object.mean()) if per_object.size else 1.0
    f1 = instance_f1(tp, fp, fn)
    return {**result, "status": "scored", "tp": tp, "fp": fp, "fn": fn, "f1": f1,
            "hausdorff_nm": float(dist.mean()) if tp else None, "hausdorff_norm": h_norm,
            "combined": float(np.sqrt(f1 * h_norm))}
