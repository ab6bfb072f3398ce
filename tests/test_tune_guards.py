"""What tuning keeps (auto3dseg.postprocess.tune_guards): a class that lowered a group is
reverted alone, and a class that helped keeps its values; figures from a scorer of known
per-label scores, pooled by the official aggregation."""

from __future__ import annotations

import copy

from auto3dseg.postprocess.tune_guards import keep_what_holds


class KnownScores:
    """``records`` as CellMapObjective gives them, from per-label IoUs set by the thresholds:
    ``a`` rises from 0.5 to 0.6 at threshold 0.3 and ``b`` from 0.5 to 0.55, but the group ``g``
    made of ``a`` falls from 0.8 to 0.3; the instance class ``m`` scores the same throughout."""

    def records(self, params, labels):
        from auto3dseg.postprocess.params import params_for

        a, b = params_for(params, "a")["threshold"], params_for(params, "b")["threshold"]
        iou = {"a": 0.6 if a == 0.3 else 0.5, "b": 0.55 if b == 0.3 else 0.5, "g": 0.3 if a == 0.3 else 0.8}
        out = [{"label": k, "kind": "semantic", "status": "scored", "tp": round(v * 100), "fp": 0,
                "fn": 100 - round(v * 100)} for k, v in iou.items() if k in labels]
        out.append({"label": "m", "kind": "instance", "status": "scored", "tp": 1, "fp": 0, "fn": 0,
                    "hausdorff_norm_sum": 1.0, "n_hausdorff": 1})
        return out


def _rows():
    return [{"label": "a", "crops": 3, "kept": False, "changed": {"threshold": 0.3}, "trials": [],
             "objective_labels": ["a", "g"]},
            {"label": "b", "crops": 3, "kept": False, "changed": {"threshold": 0.3}, "trials": [],
             "objective_labels": ["b"]},
            {"label": "g", "crops": 3, "kept": True, "reason": "no value scored higher than the default", "trials": []}]


def test_only_the_class_that_lowered_a_group_is_reverted():
    start = {"default": {"threshold": 0.5}, "a": {"threshold": 0.5}, "b": {"threshold": 0.5}}
    tuned = {"default": {"threshold": 0.5}, "a": {"threshold": 0.3}, "b": {"threshold": 0.3}}
    rows, notes = _rows(), []
    before, overall_before, after, overall_after = keep_what_holds(rows, tuned, start, KnownScores(), ["a", "b", "g"],
                                                                   log=notes.append)
    assert tuned == {"default": {"threshold": 0.5}, "a": {"threshold": 0.5}, "b": {"threshold": 0.3}}  # b: kept
    by = {r["label"]: r for r in rows}
    assert by["a"]["kept"] and by["a"]["rejected"] == {"threshold": 0.3} and "g lower" in by["a"]["reason"]
    assert not by["b"]["kept"] and by["b"]["changed"] == {"threshold": 0.3}
    assert overall_after["score"] > overall_before["score"] and after["b"]["score"] == 0.55
    assert any(n.startswith("note: a: tuned values not kept") for n in notes) and not any("note: b" in n for n in notes)


def test_packaged_values_that_score_higher_than_the_start_file_are_used():
    packaged = {"default": {"threshold": 0.3}}                     # b at 0.3 scores 0.55; a at 0.3 lowers g
    start = {"default": {"threshold": 0.3}, "a": {"threshold": 0.5}, "b": {"threshold": 0.5}}  # a start file
    tuned = copy.deepcopy(start)                                   # the search found nothing better
    rows = [dict(r, kept=True, reason="no value scored higher than the default") for r in _rows()]
    for r in rows:
        r.pop("changed", None)
    notes = []
    *_, after, overall_after = keep_what_holds(rows, tuned, start, KnownScores(), ["a", "b", "g"],
                                               reference=packaged, log=notes.append)
    by = {r["label"]: r for r in rows}
    assert tuned["b"] == {"threshold": 0.3} and by["b"]["source"] == "packaged defaults" and not by["b"]["kept"]
    # a's packaged value raises a but lowers the overall score through g: the start's value stays
    assert tuned["a"] == {"threshold": 0.5} and by["a"]["kept"]
    assert any("b: the packaged defaults score higher" in n for n in notes)
    assert after["b"]["score"] == 0.55
