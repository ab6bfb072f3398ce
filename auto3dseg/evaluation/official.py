"""The official CellMap scorer's rules, per crop and pooled per class (``--rules official``).

Written from a reading of the challenge toolbox (janelia-cellmap/cellmap-segmentation-
challenge at 6b9ad68: ``utils/eval_utils/{scoring,instance_matching,distance,
aggregation}.py``) and checked against it on probe submissions; no code is taken from it.

Per crop (arrays already on the target grid, see :mod:`auto3dseg.evaluation.resample`):

* semantic: TP/FP/FN of ``pred > 0`` against ``truth > 0`` — truth value 255
  ("unknown") counts as foreground;
* instance: the prediction is re-grouped into 26-connected components; the truth's
  object count for the too-many test is its **largest id** (``n_truth_max_id``), and a
  crop with ``n_pred / max_id > 10 + 50·exp(-max_id / 5)`` (or more than 5,000,000
  overlapping pairs) is **skipped**: it adds nothing to its class. Otherwise objects are
  matched one-to-one by a min-cost flow with integer costs ``int((1 − IoU₃₂)·10⁶)`` per
  overlapping pair and ``10⁶ + 1`` per unmatched truth object (IoU rounded to float32),
  solved by the official scorer's solver (OR-tools) on a graph built node for node and
  arc for arc as the official one: when two matchings cost the same, the solver's choice
  depends on that order, and the Hausdorff terms on the choice. Without OR-tools a
  maximum-weight matching gives the same optimum, and a tie is flagged
  (``tie_without_solver``); so is one with a truth id above
  :data:`MAX_FLOW_NODES`. Matched predicted components take their truth id, the others keep their
  component number, and each distinct truth id gets the Hausdorff distance between
  ``truth == id`` and ``prediction == id`` (a component whose number happens to equal an
  unmatched truth id is measured against it), capped at half the crop's shortest side,
  or the cap when nothing has that id; each unmatched predicted component adds the cap.
  Distances are float32, normalised as ``1.01 ** (-d / ||voxel_size||)`` and kept as a
  sum and a count;
* a label missing from the submission: semantic, every voxel of the crop is a false
  negative; instance, every distinct truth id is a false negative with normalised
  distance **0** (harsher than an empty array, which gets the cap's value).

Per class, TP/FP/FN and the Hausdorff sums and counts are pooled over crops:
``F1 = 2TP / (2TP + FP + FN)`` (0 when only the Hausdorff count is non-zero),
``H = sum / count`` (0 when the count is 0), ``combined = sqrt(F1 · H)``, and a class with
nothing anywhere (all counts 0, e.g. skipped in every crop) scores **1.0**. Semantic
``IoU = TP / (TP + FP + FN)``, 1.0 when that is 0. Overall: instance mean and semantic
mean over classes (0 when a kind has no class), ``sqrt(instance · semantic)``.

>>> t = np.zeros((1, 1, 8), np.uint8); t[0, 0, 2:4] = 1
>>> official_semantic_counts(np.where(t > 0, 0.3, 0.0), t)      # 0.3 > 0 is foreground
{'tp': 2, 'fp': 0, 'fn': 0, 'status': 'scored'}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cc3d
import fastremap
import numpy as np
import scipy.ndimage as ndi

from auto3dseg.evaluation.metrics import (
    hausdorff_cap,
    hausdorff_distance,
    instance_ratio_cutoff,
    max_weight_matching,
    overlap_table,
)
from datalists.cellmap_classes import INSTANCE_CLASSES

__all__ = [
    "COST_SCALE",
    "MAX_OVERLAP_EDGES",
    "OFFICIAL_INSTANCE_CLASSES",
    "SKIPPED",
    "aggregate_official",
    "instance_figures",
    "official_instance_counts",
    "official_kind",
    "official_missing_counts",
    "official_semantic_counts",
]

# The toolbox also treats a label named "instance" as an instance class.
OFFICIAL_INSTANCE_CLASSES: frozenset[str] = frozenset(INSTANCE_CLASSES) | {"instance"}
COST_SCALE = 1_000_000
MAX_OVERLAP_EDGES = 5_000_000
SKIPPED = "skipped_too_many_instances"
# Largest truth id for which the official graph (one node per id up to it) is built here.
MAX_FLOW_NODES = 20_000_000


def official_kind(label: str) -> str:
    """``"instance"`` or ``"semantic"`` by the toolbox's class list.

    >>> official_kind("mito"), official_kind("er"), official_kind("instance")
    ('instance', 'semantic', 'instance')
    """
    return "instance" if label in OFFICIAL_INSTANCE_CLASSES else "semantic"


def instance_figures(tp: int, fp: int, fn: int, h_sum: float, h_count: int) -> tuple[float, float, float]:
    """``(f1, normalised Hausdorff, combined)`` from pooled counts, with the official edge cases.

    >>> instance_figures(0, 0, 0, 0.0, 0)            # nothing anywhere: a perfect 1.0
    (1.0, 1.0, 1.0)
    >>> instance_figures(1, 1, 0, 1.5, 2)
    (0.6666666666666666, 0.75, 0.7071067811865476)
    """
    denom = 2 * tp + fp + fn
    if denom == 0 and h_count == 0:
        return 1.0, 1.0, 1.0
    f1 = 2 * tp / denom if denom > 0 else 0.0
    h = h_sum / h_count if h_count > 0 else 0.0
    return f1, h, math.sqrt(f1 * h)


def official_semantic_counts(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """TP/FP/FN of ``pred > 0`` against ``truth > 0`` (every truth value above 0, 255 too)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    tp = int(np.count_nonzero(p & t))
    return {"tp": tp, "fp": int(np.count_nonzero(p)) - tp, "fn": int(np.count_nonzero(t)) - tp,
            "status": "scored"}


def official_missing_counts(truth: np.ndarray, kind: str) -> dict[str, Any]:
    """The counts of a (crop, label) missing from the submission.

    >>> t = np.zeros((2, 2, 2), np.uint16); t[0, 0, 0] = 4; t[1, 1, 1] = 9
    >>> official_missing_counts(t, "semantic")["fn"], official_missing_counts(t, "instance")["n_hausdorff"]
    (8, 2)
    """
    truth = np.asarray(truth)
    if kind == "semantic":
        return {"tp": 0, "fp": 0, "fn": int(truth.size), "status": "missing"}
    ids = fastremap.unique(truth)
    n = int(np.count_nonzero(ids))
    return {"tp": 0, "fp": 0, "fn": n, "hausdorff_norm_sum": 0.0, "n_hausdorff": n, "status": "missing"}


def _boxes_by_id(arr: np.ndarray, ids: np.ndarray) -> list[tuple[slice, ...] | None]:
    """Bounding box of each of ``ids`` (sorted) in ``arr``, None where absent."""
    if ids.size == 0:
        return []
    flat = arr.ravel()
    idx = np.minimum(np.searchsorted(ids, flat), ids.size - 1)
    hit = (flat != 0) & (ids[idx] == flat)
    lab = np.where(hit, idx + 1, 0).astype(np.int32).reshape(arr.shape)
    return list(ndi.find_objects(lab, max_label=int(ids.size)))


def _per_truth_distances(truth: np.ndarray, pred: np.ndarray, truth_ids: np.ndarray,
                         voxel_size: Sequence[float], cap: float) -> np.ndarray:
    """One float32 distance per truth id: Hausdorff of ``truth == id`` vs ``pred == id``, capped."""
    t_boxes, p_boxes = _boxes_by_id(truth, truth_ids), _boxes_by_id(pred, truth_ids)
    out = np.empty(truth_ids.size, np.float32)
    for i, tid in enumerate(truth_ids.tolist()):
        tb, pb = t_boxes[i], p_boxes[i]
        if pb is None or tb is None:
            out[i] = cap
            continue
        box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(tb, pb))
        out[i] = min(hausdorff_distance(truth[box] == tid, pred[box] == tid, voxel_size), cap)
    return out


def _flow_match(tab: dict[str, np.ndarray], cost: np.ndarray, n_truth_nodes: int, n_pred_nodes: int
                ) -> np.ndarray | None:
    """Edges chosen by OR-tools' min-cost flow on the official graph, or None without OR-tools.

    The graph is built node for node and arc for arc as the official scorer builds it, so
    that among matchings of equal cost the solver makes the same choice: node 0 the source,
    then one node per truth id 1..max id, one per predicted component 1..n, the sink last;
    arcs source→truth (cost 0), truth→sink (the "unmatched" arc, ``COST_SCALE + 1``),
    truth→prediction per overlapping pair in (truth id, component) order, prediction→sink
    (cost 0); every capacity 1, supply = the number of truth nodes.
    """
    if n_truth_nodes > MAX_FLOW_NODES:  # one node per id up to the largest: too many to build
        return None
    try:
        from ortools.graph.python import min_cost_flow
    except ImportError:
        return None
    g_idx = tab["truth"][tab["rows"]].astype(np.int64)       # truth id = node - 0
    p_idx = n_truth_nodes + tab["pred"][tab["cols"]].astype(np.int64)
    sink = n_truth_nodes + n_pred_nodes + 1
    truth_nodes = np.arange(1, n_truth_nodes + 1, dtype=np.int64)
    pred_nodes = np.arange(n_truth_nodes + 1, sink, dtype=np.int64)
    tails = np.concatenate([np.zeros(n_truth_nodes, np.int64), truth_nodes, g_idx, pred_nodes])
    heads = np.concatenate([truth_nodes, np.full(n_truth_nodes, sink, np.int64), p_idx,
                            np.full(n_pred_nodes, sink, np.int64)])
    costs = np.concatenate([np.zeros(n_truth_nodes, np.int64), np.full(n_truth_nodes, COST_SCALE + 1, np.int64),
                            cost, np.zeros(n_pred_nodes, np.int64)])
    mcf = min_cost_flow.SimpleMinCostFlow()
    mcf.add_arcs_with_capacity_and_unit_cost(tails.astype(np.int32), heads.astype(np.int32),
                                             np.ones(tails.size, np.int64), costs)
    mcf.set_node_supply(0, n_truth_nodes)
    mcf.set_node_supply(sink, -n_truth_nodes)
    if mcf.solve() != mcf.OPTIMAL:
        raise RuntimeError("the min-cost flow found no optimal matching")
    first = 2 * n_truth_nodes
    arcs = np.arange(first, first + cost.size, dtype=np.int32)
    flows = (np.asarray(mcf.flows(arcs)) if hasattr(mcf, "flows")  # older OR-tools: one arc at a time
             else np.array([mcf.flow(int(a)) for a in arcs]))
    return np.flatnonzero(flows == 1)


def _has_tie(tab: dict[str, np.ndarray], weight: np.ndarray, edges: np.ndarray) -> bool:
    """Whether another matching has the same weight: some chosen edge can be left out at no loss."""
    best = float(weight[edges].sum())
    row_deg = np.bincount(tab["rows"])
    col_deg = np.bincount(tab["cols"])
    for e in edges.tolist():
        if row_deg[tab["rows"][e]] == 1 and col_deg[tab["cols"][e]] == 1:
            continue  # an isolated pair: no other matching can replace it
        keep = np.ones(weight.size, bool)
        keep[e] = False
        if not keep.any():
            continue
        other = max_weight_matching(tab["rows"][keep], tab["cols"][keep], weight[keep], int(tab["truth"].size))
        if float(weight[keep][other].sum()) >= best:
            return True
    return False


def _match(pred_cc: np.ndarray, truth: np.ndarray, n_pred: int) -> tuple[dict[int, int], int, bool]:
    """The official min-cost-flow matching (component id → truth id), the overlap-pair count, and
    whether a tie among equal-cost matchings was settled without the official solver (OR-tools)."""
    tab = overlap_table(pred_cc, truth)
    n_edges = int(tab["rows"].size)
    if n_edges == 0 or n_edges > MAX_OVERLAP_EDGES:
        return {}, n_edges, False
    iou32 = tab["iou"].astype(np.float32).astype(np.float64)
    cost = np.floor((1.0 - iou32) * COST_SCALE).astype(np.int64)
    edges = _flow_match(tab, cost, int(truth.max()), n_pred)
    guessed = False
    if edges is None:  # same optimum; only the choice among equal-cost matchings may differ
        weight = (COST_SCALE + 1) - cost.astype(np.float64)
        edges = max_weight_matching(tab["rows"], tab["cols"], weight, int(tab["truth"].size))
        guessed = _has_tie(tab, weight, edges)
    pred_ids, truth_ids = tab["pred"][tab["cols"][edges]], tab["truth"][tab["rows"][edges]]
    return {int(p): int(t) for p, t in zip(pred_ids, truth_ids)}, n_edges, guessed


def official_instance_counts(pred: np.ndarray, truth: np.ndarray, voxel_size: Sequence[float]) -> dict[str, Any]:
    """One crop of an instance class by the official rules (see the module notes).

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``hausdorff_norm_sum``, ``n_hausdorff`` (what is pooled per
        class), ``status`` (``"scored"`` or ``"skipped_too_many_instances"``), ``n_pred``
        (components), ``n_truth`` (distinct ids), ``n_truth_max_id``, ``ratio_cutoff``,
        ``cap_nm``, and this crop's own ``f1``, ``hausdorff_norm`` and ``combined``.

    Examples
    --------
    >>> t = np.zeros((1, 1, 12), np.uint16); t[0, 0, 0:2] = 3           # one object, id 3
    >>> p = np.zeros_like(t); p[0, 0, 0:2] = 1; p[0, 0, 4:12:2] = 1     # it, and 4 specks
    >>> r = official_instance_counts(p, t, (4.0, 4.0, 4.0))
    >>> r["status"], r["tp"], r["fp"], r["fn"], r["n_hausdorff"]
    ('scored', 1, 4, 0, 5)
    """
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    cap = hausdorff_cap(voxel_size, truth.shape)
    pred_cc, n_pred = cc3d.connected_components(np.ascontiguousarray(pred), return_N=True, out_dtype=np.uint32)
    n_pred = int(n_pred)
    truth_ids = fastremap.unique(truth)
    truth_ids = np.sort(truth_ids[truth_ids != 0])
    max_id = int(truth.max()) if truth.size else 0
    info: dict[str, Any] = {"n_pred": n_pred, "n_truth": int(truth_ids.size), "n_truth_max_id": max_id,
                            "cap_nm": cap, "ratio_cutoff": instance_ratio_cutoff(max_id) if max_id > 0 else None}
    mapping: dict[int, int] = {}
    if max_id > 0 and n_pred > 0:
        if n_pred / max_id > info["ratio_cutoff"]:
            return {**info, "tp": 0, "fp": 0, "fn": 0, "hausdorff_norm_sum": 0.0, "n_hausdorff": 0,
                    "status": SKIPPED, "reason": "too many predicted objects", "f1": None,
                    "hausdorff_norm": None, "combined": None}
        mapping, n_edges, guessed = _match(pred_cc, truth, n_pred)
        info["tie_without_solver"] = guessed
        if n_edges > MAX_OVERLAP_EDGES:
            return {**info, "tp": 0, "fp": 0, "fn": 0, "hausdorff_norm_sum": 0.0, "n_hausdorff": 0,
                    "status": SKIPPED, "reason": f"{n_edges} overlapping pairs", "f1": None,
                    "hausdorff_norm": None, "combined": None}
    relabelled: np.ndarray = pred_cc
    if mapping:
        dtype = np.promote_types(truth.dtype, np.uint32) if truth.dtype.kind in "iu" else np.int64
        relabelled = fastremap.remap(pred_cc.astype(dtype), {**mapping, 0: 0}, preserve_missing_labels=True)
    dist = _per_truth_distances(truth, relabelled, truth_ids, voxel_size, cap)
    tp = len(mapping)
    unmatched_pred = n_pred - tp
    dist = np.concatenate([dist, np.full(unmatched_pred, cap, np.float32)])
    norm = np.power(1.01, -dist.astype(np.float64) / float(np.linalg.norm(np.asarray(voxel_size, float))))
    counts = {"tp": tp, "fp": unmatched_pred, "fn": int(truth_ids.size) - tp,
              "hausdorff_norm_sum": float(norm.sum()), "n_hausdorff": int(norm.size)}
    f1, h, combined = instance_figures(counts["tp"], counts["fp"], counts["fn"], counts["hausdorff_norm_sum"],
                                       counts["n_hausdorff"])
    return {**info, **counts, "status": "scored", "f1": f1, "hausdorff_norm": h, "combined": combined}


def aggregate_official(records: Sequence[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-class and overall figures from per-(crop, label) records, pooled as the official scorer does.

    Returns
    -------
    labels : dict
        Per label: ``kind``, pooled ``tp``/``fp``/``fn``, ``n_crops``, ``missing``; semantic
        ``iou``, ``dice`` and ``score`` = IoU; instance ``f1``, ``hausdorff_norm``,
        ``hausdorff_norm_sum``, ``n_hausdorff``, ``skipped`` and ``score`` = combined.
    overall : dict
        ``score``, ``instance_mean``, ``semantic_mean``, ``rule``.

    Examples
    --------
    >>> recs = [{"label": "mito", "kind": "instance", "status": "scored", "tp": 1, "fp": 0, "fn": 0,
    ...          "hausdorff_norm_sum": 1.0, "n_hausdorff": 1},
    ...         {"label": "mito", "kind": "instance", "status": "scored", "tp": 0, "fp": 0, "fn": 1,
    ...          "hausdorff_norm_sum": 0.5, "n_hausdorff": 1},
    ...         {"label": "er", "kind": "semantic", "status": "scored", "tp": 1, "fp": 1, "fn": 2}]
    >>> labels, overall = aggregate_official(recs)
    >>> round(labels["mito"]["f1"], 4), labels["mito"]["hausdorff_norm"], labels["er"]["iou"]
    (0.6667, 0.75, 0.25)
    >>> round(overall["score"], 4)                      # sqrt(sqrt(2/3 * 0.75) * 0.25)
    0.4204
    """
    labels: dict[str, dict[str, Any]] = {}
    for name in sorted({r["label"] for r in records}):
        rows = [r for r in records if r["label"] == name]
        kind = rows[0]["kind"]
        tp, fp, fn = (int(sum(r[k] for r in rows)) for k in ("tp", "fp", "fn"))
        entry: dict[str, Any] = {"kind": kind, "n_crops": len(rows),
                                 "missing": sum(r["status"] == "missing" for r in rows), "tp": tp, "fp": fp, "fn": fn}
        if kind == "semantic":
            denom = tp + fp + fn
            iou = tp / denom if denom else 1.0
            entry.update(iou=iou, dice=(2 * tp / (2 * tp + fp + fn)) if denom else 1.0, score=iou)
        else:
            h_sum = float(sum(r["hausdorff_norm_sum"] for r in rows))
            h_count = int(sum(r["n_hausdorff"] for r in rows))
            f1, h, combined = instance_figures(tp, fp, fn, h_sum, h_count)
            entry.update(f1=f1, hausdorff_norm=h, hausdorff_norm_sum=h_sum, n_hausdorff=h_count, score=combined,
                         skipped=sum(r["status"] == SKIPPED for r in rows))
        labels[name] = entry
    inst = [v["score"] for v in labels.values() if v["kind"] == "instance"]
    sem = [v["score"] for v in labels.values() if v["kind"] == "semantic"]
    inst_mean = float(np.mean(inst)) if inst else 0.0
    sem_mean = float(np.mean(sem)) if sem else 0.0
    rule = "sqrt(mean instance score * mean semantic IoU), means over classes"
    if not inst or not sem:
        rule += f" (no {'instance' if not inst else 'semantic'} class: its mean is 0)"
    return labels, {"score": math.sqrt(inst_mean * sem_mean), "instance_mean": inst_mean,
                    "semantic_mean": sem_mean, "rule": rule}
