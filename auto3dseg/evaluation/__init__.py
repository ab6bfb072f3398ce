"""Local scoring of CellMap submissions: the challenge's metrics and a scorer.

* :mod:`~auto3dseg.evaluation.metrics`: pure functions on arrays (semantic IoU/Dice,
  instance matching, F1, Hausdorff);
* :mod:`~auto3dseg.evaluation.stores`: reading submissions, truth stores and the test manifest;
* :mod:`~auto3dseg.evaluation.resample` and :mod:`~auto3dseg.evaluation.official`: the
  official scorer's placement, per-crop counts and per-class pooling (``rules="official"``);
* :mod:`~auto3dseg.evaluation.strict`: the project's stricter rules (``rules="strict"``);
* :mod:`~auto3dseg.evaluation.traps`: warnings for submissions that score for the wrong reason;
* :mod:`~auto3dseg.evaluation.score`: :func:`score_submission` and the command line
  (``python -m auto3dseg.evaluation.score --help``); :mod:`~auto3dseg.evaluation.report`
  the Markdown report and the JSON/Markdown files.
"""

from auto3dseg.evaluation.metrics import (
    dice,
    hausdorff_cap,
    hausdorff_distance,
    instance_f1,
    instance_ratio_cutoff,
    instance_score,
    iou,
    match_instances,
    normalized_hausdorff,
    overlap_table,
    pair_hausdorff_distances,
    relabel_connected,
    semantic_counts,
)

__all__ = [
    "dice",
    "hausdorff_cap",
    "hausdorff_distance",
    "instance_f1",
    "instance_ratio_cutoff",
    "instance_score",
    "iou",
    "match_instances",
    "normalized_hausdorff",
    "overlap_table",
    "pair_hausdorff_distances",
    "relabel_connected",
    "semantic_counts",
]
