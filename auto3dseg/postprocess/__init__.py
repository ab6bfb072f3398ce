"""Post-processing: per-class probabilities → CellMap semantic masks and instance ids.

* :func:`postprocess_probabilities` — the whole step for one image.
* :func:`class_masks` — threshold (or argmax) each channel, compose groups from parts.
* :func:`label_instances` — components, optional watershed split, size filter, ids in a
  dtype that never wraps (:func:`smallest_id_dtype`).
* :func:`load_postprocess_params` / :func:`params_for` — per-class parameters in
  physical units (``resources/postprocess.yaml``, overridable).

Examples
--------
>>> import numpy as np
>>> from auto3dseg.postprocess import label_instances
>>> mask = np.zeros((3, 3, 7), dtype=bool)
>>> mask[1, 1, [0, 1, 4, 5, 6]] = True
>>> label_instances(mask, (8.0, 8.0, 8.0))[1, 1]
array([1, 1, 0, 0, 2, 2, 2], dtype=uint16)
"""

from __future__ import annotations

from auto3dseg.postprocess.ids import (
    remove_small_objects,
    smallest_id_dtype,
    voxels_for_volume,
)
from auto3dseg.postprocess.instances import label_instances
from auto3dseg.postprocess.params import load_postprocess_params, params_for
from auto3dseg.postprocess.pipeline import postprocess_probabilities
from auto3dseg.postprocess.semantic import class_masks
from auto3dseg.postprocess.split import distance_maxima, split_touching

__all__ = [
    "class_masks",
    "distance_maxima",
    "label_instances",
    "load_postprocess_params",
    "params_for",
    "postprocess_probabilities",
    "remove_small_objects",
    "smallest_id_dtype",
    "split_touching",
    "voxels_for_volume",
]
