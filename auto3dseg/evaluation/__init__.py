"""Local scoring of CellMap submissions: the challenge's metrics and a scorer.

:mod:`auto3dseg.evaluation.metrics` holds pure functions on arrays (semantic IoU/Dice,
instance matching, F1, Hausdorff); :mod:`auto3dseg.evaluation.score` reads a submission
and a truth store, places the submission on the truth's grids and aggregates
(``python -m auto3dseg.evaluation.score --help``).
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
