"""Tuning of the 2-D cell post-processing: one parameter set for every image, chosen for the
official mean F1 of the out-of-fold images (tiled ones joined), by the coordinate search of
:mod:`auto3dseg.postprocess.tune`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from auto3dseg.postprocess.tune import THRESHOLDS, _changed, coordinate_search

__all__ = ["CELL_GRID", "tune_cells"]

CELL_GRID = {"seed_threshold": [0.5, 0.6, 0.7, 0.8, 0.9], "threshold": list(THRESHOLDS), "min_cell_px": [0, 5, 10, 16, 32]}


def tune_cells(oof: Mapping[str, Any], datalist: str | os.PathLike, defaults: Mapping[str, Any], *, budget: int = 24,
               min_images: int = 2, min_gain: float = 0.005, reference: Mapping[str, Any] | None = None,
               log=print) -> dict:
    """Tune the cell parameters on the out-of-fold images (tiled ones joined); returns the report.

    ``reference``: the packaged defaults when ``defaults`` is another start (``--postprocess_params``):
    used instead of the values tuning ends with when they score higher."""
    import tifffile

    from auto3dseg.evaluation.cellseg_metrics import score_image
    from auto3dseg.evaluation.cv import cell_oof_cases
    from auto3dseg.postprocess.cell_instances import cells_from_probabilities

    dl = json.loads(Path(datalist).read_text())
    cases = [(c["stem"], c["prob"], c["channels"], c["scale"], tifffile.imread(c["truth"]))
             for c in cell_oof_cases(oof, datalist)[0]]

    def evaluate(p: dict) -> float:  # per-image F1 rounded to 4 decimals, as the official CSV (and our CV) has it
        return float(np.mean([np.round(score_image(gt, cells_from_probabilities(data, names, dl["class_table"], p,
                                                                                scale=scale))["f1"], 4)
                              for _, data, names, scale, gt in cases]))

    row: dict[str, Any] = {"label": "cell", "kind": "instance", "crops": len(cases)}
    if len(cases) < min_images:
        before = evaluate(dict(defaults)) if cases else None
        return {"kind": "cells", "params": dict(defaults), "classes": [{**row, "kept": True, "score_before": before,
                "score_after": before, "reason": f"{len(cases)} scorable training image(s), fewer than {min_images}"}],
                "before": {"mean_f1": before}, "after": {"mean_f1": before}}
    best, score, trials = coordinate_search(evaluate, dict(defaults), CELL_GRID, budget)
    gain = score - trials[0]["score"]
    change = _changed(defaults, best)
    row.update(evaluations=len(trials), default_objective=trials[0]["score"], tuned_objective=score, trials=trials,
               score_before=trials[0]["score"])
    if not change or gain < min_gain:
        row.update(kept=True, score_after=trials[0]["score"], reason="no value scored higher than the default"
                   if not change else f"best gain {gain:+.4f} is under --tune_min_gain {min_gain}")
        best = dict(defaults)
    else:
        row.update(kept=False, changed=change, score_after=score, reason="")
        log(f"tuned cells: {', '.join(f'{k} {defaults[k]} -> {v}' for k, v in change.items())} "
            f"(mean F1 {trials[0]['score']:.4f} -> {score:.4f})")
    if reference is not None and dict(reference) != dict(defaults):
        packaged = evaluate(dict(reference))
        if packaged > row["score_after"] + 1e-12:
            log(f"note: cells: the packaged defaults score higher than the values tuning ended with from the start "
                f"file (mean F1 {row['score_after']:.4f} -> {packaged:.4f}): they are used")
            best = dict(reference)
            row.update(kept=False, changed=_changed(defaults, best), score_after=packaged, source="packaged defaults",
                       reason=f"the packaged defaults scored higher than the start's values "
                       f"({trials[0]['score']:.4f} -> {packaged:.4f})")
    return {"kind": "cells", "params": best, "classes": [row], "before": {"mean_f1": row["score_before"]},
            "after": {"mean_f1": row["score_after"]}}
