"""Per-class masks from the ensemble's probabilities, groups composed from their parts.

A group class (``mito``) is its own channel above threshold OR the union of its parts'
masks (``mito_mem``, ``mito_lum``), following the datalist's class table, so a voxel
the network gives to a part also counts for the group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["class_masks"]


def _threshold(thresholds: Mapping[str, float] | float, name: str) -> float:
    if isinstance(thresholds, Mapping):
        return float(thresholds.get(name, thresholds.get("default", 0.5)))
    return float(thresholds)


def class_masks(prob: np.ndarray, channels: Sequence[str], class_table: Sequence[Mapping[str, Any]],
                thresholds: Mapping[str, float] | float = 0.5) -> dict[str, np.ndarray]:
    """Boolean mask of every class of ``class_table`` that has a channel or parts.

    Parameters
    ----------
    prob : ndarray, shape (C, *S), float
        Probabilities in [0, 1], one channel per name in ``channels``.
    channels : sequence of str
        Channel names (class-table order). With ``channels[0] == "background"`` the
        channels are a softmax: each voxel goes to its argmax channel and thresholds
        are not used. Otherwise each channel is an independent sigmoid.
    class_table : sequence of dict
        Datalist rows ``{"id", "name", "parts", ...}``; ``parts`` are ids of rows whose
        union makes up the group.
    thresholds : float or mapping of class name to float
        Sigmoid threshold (``prob > threshold``); a mapping falls back to its
        ``"default"`` entry, then to 0.5.

    Returns
    -------
    dict of str to ndarray of bool, shape S
        Groups are their own channel's mask OR the union of their parts' masks
        (recursively). A class with neither a channel nor parts is left out.

    Examples
    --------
    >>> table = [{"id": 1, "name": "mito_mem", "parts": []}, {"id": 2, "name": "mito_lum", "parts": []},
    ...          {"id": 3, "name": "mito", "parts": [1, 2]}]
    >>> prob = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.7]], dtype=np.float32)
    >>> masks = class_masks(prob, ["mito_mem", "mito_lum", "mito"], table)
    >>> masks["mito"].astype(np.uint8)
    array([1, 1, 1], dtype=uint8)
    >>> masks = class_masks(np.stack([1 - prob[0], prob[0]]), ["background", "mito_mem"], table)
    >>> masks["mito"].astype(np.uint8)
    array([1, 0, 0], dtype=uint8)
    """
    prob = np.asarray(prob)
    if prob.shape[0] != len(channels):
        raise ValueError(f"prob has {prob.shape[0]} channels but {len(channels)} channel names were given")
    index = {name: c for c, name in enumerate(channels)}
    by_id = {int(row["id"]): row for row in class_table}
    softmax = len(channels) > 0 and channels[0] == "background"
    winner = np.argmax(prob, axis=0).astype(np.min_scalar_type(len(channels))) if softmax else None

    own: dict[str, np.ndarray] = {}
    for row in class_table:
        name = row["name"]
        if name in index:
            c = index[name]
            own[name] = winner == c if winner is not None else prob[c] > _threshold(thresholds, name)

    masks: dict[str, np.ndarray] = {}

    def compose(row_id: int, seen: frozenset[int]) -> np.ndarray | None:
        row = by_id[row_id]
        name = row["name"]
        if name in masks:
            return masks[name]
        if row_id in seen:
            raise ValueError(f"class table: {name!r} contains itself through its parts")
        mask = own.get(name)
        for part in row.get("parts") or []:
            part_mask = compose(int(part), seen | {row_id})
            if part_mask is not None:
                mask = part_mask.copy() if mask is None else mask | part_mask
        if mask is not None:
            masks[name] = mask
        return mask

    for row in class_table:
        compose(int(row["id"]), frozenset())
    return masks
