"""What tuning keeps (auto3dseg.postprocess.tune_guards): a class that lowered a group is
reverted alone, and a class that helped keeps its values; figures from a scorer of known
per-label scores, pooled by the official aggregation."""

from __future__ import annotations

import copy

from auto3dseg.postprocess.tune_guards import keep_what_holds


CONSTANT = [f"c{i}" for i in range(8)]  # semantic classes no parameter here changes (IoU 0.5)
LABELS = ["a", "b", "g", *CONSTANT]


class KnownScores:
    """``records`` as CellMapObjective gives them, for known per-label scores set by the thresholds:
    at 0.3 the semantic class ``a`` rises from IoU 0.5 to 0.65 and ``b`` to 0.55, while the
    instance group ``g`` made of ``a`` falls from 0.943 to 0.842. The mean of ``a`` and ``g`` (what
    a's search maximised) rises, but the overall score, sqrt(instance mean x semantic mean) over
    ten semantic classes and two instance ones, falls; ``m`` (instance) scores 1.0 throughout."""

    def records(self, params, labels):
        from auto3dseg.postprocess.params import params_for

        a, b = params_for(params, "a")["threshold"], params_for(params, "b")["threshold"]
        iou = {"a": 0.65 if a == 0.3 else 0.5, "b": 0.55 if b == 0.3 else 0.5, **dict.fromkeys(CONSTANT, 0.5)}
        out = [{"label": k, "kind": "semantic", "status": "scored", "tp": round(v * 100), "fp": 0,
                "fn": 100 - round(v * 100)} for k, v in iou.items() if k in labels]
        tp = 55 if a == 0.3 else 80  # combined score 0.842 or 0.943
        if "g" in labels:
            out.append({"label": "g", "kind": "instance", "status": "scored", "tp": tp, "fp": 0, "fn": 100 - tp,
                        "hausdorff_norm_sum": float(tp), "n_hausdorff": tp})
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
    before, overall_before, after, overall_after = keep_what_holds(rows, tuned, start, KnownScores(), LABELS,
                                                                   log=notes.append)
    assert tuned == {"default": {"threshold": 0.5}, "a": {"threshold": 0.5}, "b": {"threshold": 0.3}}  # b: kept
    by = {r["label"]: r for r in rows}
    assert by["a"]["kept"] and by["a"]["rejected"] == {"threshold": 0.3} and "g lower" in by["a"]["reason"]
    assert "overall score" in by["a"]["reason"]  # not the per-class check: a's own objective rose
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
    *_, after, overall_after = keep_what_holds(rows, tuned, start, KnownScores(), LABELS,
                                               reference=packaged, log=notes.append)
    by = {r["label"]: r for r in rows}
    assert tuned["b"] == {"threshold": 0.3} and by["b"]["source"] == "packaged defaults" and not by["b"]["kept"]
    # a's packaged value raises a but lowers the overall score through g: the start's value stays
    assert tuned["a"] == {"threshold": 0.5} and by["a"]["kept"]
    assert any("b: the packaged defaults score higher" in n for n in notes)
    assert after["b"]["score"] == 0.55


class GroupGain:
    """``d`` at threshold 0.3 scores a little lower itself (0.5 -> 0.45) but its group ``h`` much
    higher (0.5 -> 0.7): what d's search maximised (their mean) rose."""

    def records(self, params, labels):
        from auto3dseg.postprocess.params import params_for

        low = params_for(params, "d")["threshold"] == 0.3
        iou = {"d": 0.45 if low else 0.5, "h": 0.7 if low else 0.5}
        return [{"label": k, "kind": "semantic", "status": "scored", "tp": round(v * 100), "fp": 0,
                 "fn": 100 - round(v * 100)} for k, v in iou.items() if k in labels] + [
            {"label": "m", "kind": "instance", "status": "scored", "tp": 1, "fp": 0, "fn": 0,
             "hausdorff_norm_sum": 1.0, "n_hausdorff": 1}]


def test_a_class_whose_group_gains_keeps_its_values_though_its_own_score_fell():
    start = {"default": {"threshold": 0.5}}
    tuned = {"default": {"threshold": 0.5}, "d": {"threshold": 0.3}}
    rows = [{"label": "d", "crops": 3, "kept": False, "changed": {"threshold": 0.3}, "trials": [],
             "objective_labels": ["d", "h"]}]
    before, _, after, _ = keep_what_holds(rows, tuned, start, GroupGain(), ["d", "h"], log=lambda m: None)
    assert not rows[0]["kept"] and tuned["d"] == {"threshold": 0.3}
    assert after["d"]["score"] < before["d"]["score"] and after["h"]["score"] > before["h"]["score"]
