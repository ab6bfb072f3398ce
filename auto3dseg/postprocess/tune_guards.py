"""What tuning keeps: values chosen on a sample, or together, must hold on all crops.

After the search (:func:`auto3dseg.postprocess.tune.tune_cellmap`) every class's values are
checked on all of its crops, in this order:

1. with a start other than the packaged defaults (``--postprocess_params``), a class the
   start file sets otherwise whose packaged values score higher than what tuning ends with
   takes the packaged ones: a start file is where the search begins, not values installed
   without a look;
2. a class whose new values score lower on all its crops than its start values did (chosen
   on a sample of crops) gets its start values back;
3. while the overall score is below the start's, the changed class that lowered a label
   (a group made of it) gets its start values back, the smallest gain first, one at a time:
   a class that helped alone keeps its values.

A class is judged (1, 2) by what the search maximised: the mean objective of the class and
the groups made of it, an instance crop skipped for too many objects counting 0 (not the 1.0
the official rules give a class skipped everywhere). Each row reverted says why (``reason``)
and what was not kept (``rejected``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["class_objective", "keep_what_holds", "revert"]

_EPS = 1e-12


def revert(tuned: dict, start: Mapping[str, Any], row: dict, why: str, log) -> None:
    """Give ``row``'s class its start values back, marking the row kept with ``why``."""
    if row["label"] in start:
        tuned[row["label"]] = copy.deepcopy(start[row["label"]])
    else:
        tuned.pop(row["label"], None)
    row.update(kept=True, reason=why, rejected=row.pop("changed", {}))
    row.pop("source", None)
    log(f"note: {row['label']}: tuned values not kept: {why}")


def _figures(records: Sequence[dict]) -> tuple[dict, dict]:
    """Official per-label and overall figures, each label with its search ``objective``."""
    from auto3dseg.evaluation.official import aggregate_official

    labels, overall = aggregate_official(records)
    for name, entry in labels.items():
        skipped = any(str(r.get("status", "")).startswith("skipped") for r in records if r["label"] == name)
        entry["objective"] = 0.0 if skipped else float(entry["score"])
    return labels, overall


def class_objective(figures: Mapping[str, dict], row: Mapping[str, Any]) -> float:
    """The mean objective of a row's class and the groups made of it (what its search maximised)."""
    watch = [w for w in (row.get("objective_labels") or [row["label"]]) if w in figures]
    return sum(figures[w]["objective"] for w in watch) / max(1, len(watch))


def _prefer_reference(rows: list[dict], tuned: dict, start: Mapping[str, Any], reference: Mapping[str, Any],
                      objective: Any, after: Mapping[str, dict], log) -> bool:
    from auto3dseg.postprocess.params import params_for

    moved = False
    for r in rows:
        label = r["label"]
        if "trials" not in r or label not in after:  # kept for want of data: the start's values stay
            continue
        if params_for(start, label) == params_for(reference, label):  # the start file left it as packaged
            continue
        packaged = copy.deepcopy(params_for(reference, label))
        trial = {**tuned, label: packaged}  # this class packaged, every other as tuning left it
        watch = [w for w in (r.get("objective_labels") or [label]) if w in after]
        ref, now = class_objective(_figures(objective.records(trial, watch))[0], r), class_objective(after, r)
        if ref <= now + _EPS:
            continue
        change = {k: v for k, v in packaged.items() if params_for(start, label).get(k) != v}
        tuned[label] = packaged
        r.update(kept=False, changed=change, source="packaged defaults",
                 reason=f"the packaged defaults scored higher than the start's values ({now:.4f} -> {ref:.4f})")
        log(f"note: {label}: the packaged defaults score higher on all {r['crops']} crops than the values tuning "
            f"ended with from the start file ({now:.4f} -> {ref:.4f}): they are used")
        moved = True
    return moved


def keep_what_holds(rows: list[dict], tuned: dict, start: Mapping[str, Any], objective: Any, labels: Sequence[str],
                    reference: Mapping[str, Any] | None = None, log=print) -> tuple[dict, dict, dict, dict]:
    """Apply the three checks to ``tuned`` (edited in place) and ``rows``.

    Parameters
    ----------
    rows : list of dict
        One per class, as the search left them (``kept``, ``changed``, ``trials`` when searched).
    tuned, start : dict
        The parameters after the search, and those it started from.
    objective : CellMapObjective
        Scores a parameter set on all crops (``records``).
    labels : sequence of str
        The scored labels.
    reference : dict, optional
        The packaged defaults, when the start is another file.

    Returns
    -------
    tuple
        ``(before, overall_before, after, overall_after)``: per-label and overall official figures
        of the start and of the kept values.
    """
    def score(params: Mapping[str, Any]) -> tuple[dict, dict]:
        return _figures(objective.records(params, labels))

    before, overall_before = score(start)
    after, overall_after = score(tuned)
    if reference is not None and reference != start:
        if _prefer_reference(rows, tuned, start, reference, objective, after, log):
            after, overall_after = score(tuned)
    worse = [r for r in rows if not r["kept"] and class_objective(after, r) < class_objective(before, r) - _EPS]
    for r in worse:
        revert(tuned, start, r, f"scored lower on all {r['crops']} crops ({class_objective(before, r):.4f} -> "
               f"{class_objective(after, r):.4f}, the mean of {', '.join(r.get('objective_labels') or [r['label']])})"
               f" than on the {r.get('crops_searched')} searched", log)
    if worse:
        after, overall_after = score(tuned)
    while overall_after["score"] < overall_before["score"] - _EPS:
        live = [r for r in rows if not r["kept"]]
        if not live:
            break
        dropped = {lab for lab in after if after[lab]["score"] < before.get(lab, after[lab])["score"] - _EPS}
        suspects = [r for r in live if dropped & set(r.get("objective_labels") or [r["label"]])] or live
        r = min(suspects, key=lambda r: after[r["label"]]["score"] - before[r["label"]]["score"])
        revert(tuned, start, r, f"with it, the tuned values together lowered the overall score "
               f"({overall_before['score']:.4f} -> {overall_after['score']:.4f}"
               + (f"; {', '.join(sorted(dropped))} lower" if dropped else "") + ")", log)
        after, overall_after = score(tuned)
    return before, overall_before, after, overall_after
