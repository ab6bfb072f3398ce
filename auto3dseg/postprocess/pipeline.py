"""Probabilities of every class → the arrays a CellMap submission holds."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from auto3dseg.postprocess.instances import label_instances
from auto3dseg.postprocess.params import INSTANCE_KEYS, load_postprocess_params, params_for
from auto3dseg.postprocess.semantic import ArrayChannels, ClassMasks

__all__ = ["ClassLabels", "iter_class_labels", "postprocess_probabilities"]


def postprocess_probabilities(prob: np.ndarray, channels: Sequence[str], class_table: Sequence[Mapping[str, Any]],
                              spacing: Sequence[float], params: Mapping[str, Mapping[str, Any]] | None = None,
                              labels: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """One array per class: uint8 0/1 for semantic classes, instance ids for instance classes.

    Masks come from :func:`class_masks` with each class's ``threshold`` (groups are the
    union of their parts); a class whose ``class_table`` row has ``instance: true`` goes
    through :func:`label_instances` with its parameters (:func:`params_for`).

    Parameters
    ----------
    prob : ndarray, shape (C, *S), float
        Per-channel probabilities in [0, 1] (what the ensemble writes).
    channels : sequence of str
        Channel names; ``channels[0] == "background"`` marks a softmax output.
    class_table : sequence of dict
        Datalist rows ``{"id", "name", "cellmap_id", "instance", "parts"}``.
    spacing : sequence of float
        Voxel size per spatial axis in nm, in the axis order of ``prob[0]``.
    params : mapping, optional
        From :func:`load_postprocess_params`; the packaged defaults when None.
    labels : collection of str, optional
        Only these classes (e.g. what a test crop asks for): instance splitting, the costly
        part, is skipped for the others. Default: every class.

    Returns
    -------
    dict of str to ndarray, shape S
        Every class of ``class_table`` that has a channel or parts.

    Examples
    --------
    >>> table = [{"id": 1, "name": "mito_mem", "cellmap_id": 3, "instance": False, "parts": []},
    ...          {"id": 2, "name": "mito", "cellmap_id": 50, "instance": True, "parts": [1]}]
    >>> prob = np.zeros((2, 1, 1, 7), dtype=np.float32)
    >>> prob[0, 0, 0, [1, 2, 4, 5]] = 0.9
    >>> out = postprocess_probabilities(prob, ["mito_mem", "mito"], table, (8, 8, 8), {"default": {
    ...     "threshold": 0.5, "connectivity": 26, "min_size_nm3": 0, "watershed": False,
    ...     "min_distance_nm": 40, "h_nm": 0}})
    >>> out["mito_mem"][0, 0], out["mito"][0, 0]
    (array([0, 1, 1, 0, 1, 1, 0], dtype=uint8), array([0, 1, 1, 0, 2, 2, 0], dtype=uint16))
    """
    return dict(iter_class_labels(ArrayChannels(prob), channels, class_table, spacing, params, labels))


class ClassLabels:
    """The array of one class at a time from a channel reader (:class:`ArrayChannels` or a
    :class:`~auto3dseg.ensembling.probability_maps.ProbabilityMap`): uint8 0/1 for semantic
    classes, instance ids for instance classes, as :func:`postprocess_probabilities` makes them.

    ``cache_bytes`` bounds the bit-packed part masks kept for groups (:class:`ClassMasks`).
    """

    def __init__(self, source: Any, channels: Sequence[str], class_table: Sequence[Mapping[str, Any]],
                 spacing: Sequence[float], params: Mapping[str, Mapping[str, Any]] | None = None,
                 cache_bytes: int = 2**31):
        self.params = load_postprocess_params() if params is None else params
        self.rows = {str(row["name"]): row for row in class_table}
        thresholds = {name: float(params_for(self.params, name)["threshold"]) for name in self.rows}
        self.masks = ClassMasks(source, list(channels), class_table, thresholds, cache_bytes)
        self.spacing = tuple(float(s) for s in spacing)

    def __call__(self, name: str) -> np.ndarray | None:
        """The array of ``name``; None when the map can make no mask of it."""
        mask = self.masks(name)
        if mask is None:
            return None
        if self.rows[name].get("instance"):
            p = params_for(self.params, name)
            return label_instances(mask, self.spacing, **{k: p[k] for k in INSTANCE_KEYS})
        return mask.view(np.uint8)


def iter_class_labels(source: Any, channels: Sequence[str], class_table: Sequence[Mapping[str, Any]],
                      spacing: Sequence[float], params: Mapping[str, Mapping[str, Any]] | None = None,
                      labels: Collection[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(class, array)`` one class at a time, in class-table order (only ``labels`` when
    given): what :func:`postprocess_probabilities` returns, one class in memory at a time."""
    make = ClassLabels(source, channels, class_table, spacing, params)
    for row in class_table:
        name = str(row["name"])
        if labels is not None and name not in labels:
            continue
        array = make(name)
        if array is not None:
            yield name, array
