"""The project's stricter scoring rules (``--rules strict``), per crop and per class.

Per crop (prediction already placed on the truth's grid by
:func:`auto3dseg.submission.placement.place_on_grid`, voxel centres aligned):

* semantic: TP/FP/FN with truth value 255 ("unknown") left out of every count;
* instance: :func:`auto3dseg.evaluation.metrics.instance_score` — the too-many test counts
  the truth's *distinct* ids and a crop that fails it scores 0; in an 8-bit truth, 255
  ("unknown") is no object: truth and prediction are masked there
  (:func:`mask_unknown_instances`; the official scorer counts it as one more object);
* a missing label: semantic, every known voxel of the crop is a false negative; instance,
  every true object is a false negative and the crop scores 0.

Per class: semantic IoU and Dice from TP/FP/FN pooled over crops; instance score = the
mean over crops of ``combined``. Overall: ``sqrt(mean instance · mean semantic)``, or the
mean of the one kind present.

>>> labels, overall = aggregate_scores([{"label": "er", "kind": "semantic", "status": "scored",
...                                      "tp": 1, "fp": 1, "fn": 2}])
>>> labels["er"]["iou"], overall["score"]
(0.25, 0.25)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from auto3dseg.evaluation.metrics import dice, instance_score, iou, semantic_counts
from auto3dseg.evaluation.stores import TruthLabel
from datalists.cellmap_classes import INSTANCE_CLASSES

__all__ = ["UNKNOWN", "aggregate_scores", "mask_unknown_instances", "score_label", "strict_kind",
           "unknown_instance_voxels"]

# Truth voxels with this value are "unknown" in CellMap annotations: not scored (strict rules).
UNKNOWN = 255


def strict_kind(label: str) -> str:
    """``"instance"`` for the project's instance classes, else ``"semantic"``.

    >>> strict_kind("ves"), strict_kind("cyto")
    ('instance', 'semantic')
    """
    return "instance" if label in INSTANCE_CLASSES else "semantic"


def unknown_instance_voxels(truth_ids: np.ndarray) -> np.ndarray | None:
    """Where an instance truth says "unknown": value 255 of an 8-bit array (None: nowhere).

    A wider array may use 255 as an object id, so only uint8 truths carry it as unknown.

    >>> unknown_instance_voxels(np.array([0, 1, 255], np.uint8)).tolist()
    [False, False, True]
    >>> unknown_instance_voxels(np.array([0, 1, 255], np.uint16)) is None
    True
    """
    if truth_ids.dtype != np.uint8:
        return None
    unknown = truth_ids == UNKNOWN
    return unknown if unknown.any() else None


def mask_unknown_instances(pred: np.ndarray | None, truth_ids: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Prediction and truth with the truth's unknown voxels set to 0 (strict rules).

    >>> p, t = mask_unknown_instances(np.array([1, 2, 2]), np.array([1, 0, 255], np.uint8))
    >>> p.tolist(), t.tolist()
    ([1, 2, 0], [1, 0, 0])
    """
    unknown = unknown_instance_voxels(truth_ids)
    if unknown is None:
        return pred, truth_ids
    truth_ids = np.where(unknown, 0, truth_ids).astype(truth_ids.dtype)
    if pred is not None:
        pred = np.where(unknown, 0, pred).astype(pred.dtype)
    return pred, truth_ids


def score_label(truth: TruthLabel, pred: np.ndarray | None) -> dict[str, Any]:
    """Score one truth (crop, label) against a prediction already on the truth's grid (strict rules).

    ``pred`` None means the label is missing from the submission. Returns a
    JSON-serialisable record with ``crop``, ``label``, ``kind``, ``status``, ``score``
    and the kind's metrics (see :func:`~auto3dseg.evaluation.metrics.instance_score`).
    """
    truth_arr = np.asarray(truth.array[...])
    kind = strict_kind(truth.label)
    record: dict[str, Any] = {"crop": truth.crop, "label": truth.label, "kind": kind,
                              "voxel_size": list(truth.grid.spacing), "shape": list(truth.grid.shape)}
    if kind == "semantic":
        if pred is None:
            counts = {"tp": 0, "fp": 0, "fn": int(np.count_nonzero(truth_arr != UNKNOWN))}
        else:
            counts = semantic_counts(pred, truth_arr, ignore_value=UNKNOWN)
        value = iou(counts)
        return {**record, "status": "missing" if pred is None else "scored", **counts,
                "iou": value, "dice": dice(counts), "score": value}
    pred, truth_arr = mask_unknown_instances(pred, truth_arr)
    if pred is None:
        n_truth = int(np.unique(truth_arr[truth_arr != 0]).size)
        return {**record, "status": "missing", "n_pred": 0, "n_truth": n_truth, "tp": 0, "fp": 0,
                "fn": n_truth, "f1": 0.0, "hausdorff_nm": None, "hausdorff_norm": 0.0, "combined": 0.0,
                "score": 0.0}
    result = instance_score(pred, truth_arr, truth.grid.spacing)
    return {**record, **result, "score": result["combined"]}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def aggregate_scores(records: Sequence[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-label and overall figures from per-(crop, label) records of :func:`score_label` (strict rules).

    Returns
    -------
    labels : dict
        Per label. Semantic: pooled ``tp``, ``fp``, ``fn``, ``iou``, ``dice``, and
        ``score`` = IoU. Instance: summed counts, mean ``f1``, mean ``hausdorff_norm``
        and ``score`` = mean combined score over crops. Both: ``n_crops``, ``missing``,
        and for instances ``failed`` (crops with too many predicted objects).
    overall : dict
        ``score``, ``instance_mean``, ``semantic_mean`` and ``rule`` (how the score was
        made).

    Examples
    --------
    >>> recs = [{"label": "er", "kind": "semantic", "status": "scored", "tp": 1, "fp": 1, "fn": 0},
    ...         {"label": "er", "kind": "semantic", "status": "scored", "tp": 1, "fp": 0, "fn": 2},
    ...         {"label": "mito", "kind": "instance", "status": "scored", "tp": 1, "fp": 0, "fn": 0,
    ...          "f1": 1.0, "hausdorff_norm": 1.0, "combined": 1.0}]
    >>> labels, overall = aggregate_scores(recs)
    >>> labels["er"]["iou"], round(overall["score"], 4)          # sqrt(1.0 * 0.4)
    (0.4, 0.6325)
    """
    labels: dict[str, dict[str, Any]] = {}
    for name in sorted({r["label"] for r in records}):
        rows = [r for r in records if r["label"] == name]
        kind = rows[0]["kind"]
        counts = {k: int(sum(r[k] for r in rows)) for k in ("tp", "fp", "fn")}
        entry: dict[str, Any] = {"kind": kind, "n_crops": len(rows),
                                 "missing": sum(r["status"] == "missing" for r in rows), **counts}
        if kind == "semantic":
            entry.update(iou=iou(counts), dice=dice(counts), score=iou(counts))
        else:
            entry.update(f1=_mean([r["f1"] for r in rows]),
                         hausdorff_norm=_mean([r["hausdorff_norm"] for r in rows]),
                         score=_mean([r["combined"] for r in rows]),
                         failed=sum(r["status"] == "too_many_instances" for r in rows))
        labels[name] = entry
    inst = _mean([v["score"] for v in labels.values() if v["kind"] == "instance"])
    sem = _mean([v["score"] for v in labels.values() if v["kind"] == "semantic"])
    if inst is not None and sem is not None:
        score, rule = math.sqrt(inst * sem), "sqrt(mean instance score * mean semantic IoU)"
    elif inst is not None:
        score, rule = inst, "mean instance score (no semantic label scored)"
    elif sem is not None:
        score, rule = sem, "mean semantic IoU (no instance label scored)"
    else:
        score, rule = None, "nothing scored"
    return labels, {"score": score, "instance_mean": inst, "semantic_mean": sem, "rule": rule}
