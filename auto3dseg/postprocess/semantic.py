"""Per-class masks from the ensemble's probabilities, groups composed from their parts.

A group class (``mito``) is its own channel above threshold OR the union of its parts'
masks (``mito_mem``, ``mito_lum``), following the datalist's class table, so a voxel
the network gives to a part also counts for the group.

:class:`ClassMasks` makes one class's mask at a time from anything that reads one channel at a
time (a :class:`~auto3dseg.ensembling.probability_maps.ProbabilityMap` on disk, or an array in
memory): a 1000³ map of 48 classes never has to be in memory at once. Masks a group needs are
kept bit-packed (1 bit per voxel) up to a byte budget, so ``cell`` and its 30 parts do not
re-read every part.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ArrayChannels", "ClassMasks", "class_masks"]


def _threshold(thresholds: Mapping[str, float] | float, name: str) -> float:
    if isinstance(thresholds, Mapping):
        return float(thresholds.get(name, thresholds.get("default", 0.5)))
    return float(thresholds)


class ArrayChannels:
    """Channel reader over an in-memory ``[C, *S]`` array of probabilities (float in [0, 1])."""

    def __init__(self, prob: np.ndarray):
        self.prob = np.asarray(prob)
        self.n_channels = int(self.prob.shape[0])
        self.shape = tuple(self.prob.shape[1:])

    def channel(self, c: int) -> np.ndarray:
        return self.prob[c]

    def mask(self, c: int, threshold: float) -> np.ndarray:
        return self.prob[c] > threshold


class ClassMasks:
    """Boolean masks of the classes of ``class_table``, made one at a time.

    Parameters
    ----------
    source : ArrayChannels or ProbabilityMap
        Reads one channel (``channel(c)``) or its thresholded mask (``mask(c, t)``).
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
    cache_bytes : int
        Budget of the bit-packed masks kept for groups.
    """

    def __init__(self, source: Any, channels: Sequence[str], class_table: Sequence[Mapping[str, Any]],
                 thresholds: Mapping[str, float] | float = 0.5, cache_bytes: int = 2**31):
        if source.n_channels != len(channels):
            raise ValueError(f"prob has {source.n_channels} channels but {len(channels)} channel names were given")
        self.source, self.thresholds = source, thresholds
        self.index = {name: c for c, name in enumerate(channels)}
        self.by_id = {int(row["id"]): row for row in class_table}
        self.by_name = {str(row["name"]): row for row in class_table}
        self.softmax = len(channels) > 0 and channels[0] == "background"
        self._winner: np.ndarray | None = None
        self._packed: OrderedDict[str, np.ndarray] = OrderedDict()
        self._budget = int(cache_bytes)
        self._makeable: dict[str, bool] = {}

    # which classes exist ------------------------------------------------------------------
    def makeable(self, name: str, seen: frozenset[int] = frozenset()) -> bool:
        """True when ``name`` has a channel or a part that has one."""
        if name in self._makeable:
            return self._makeable[name]
        row = self.by_name[name]
        if int(row["id"]) in seen:
            raise ValueError(f"class table: {name!r} contains itself through its parts")
        ok = name in self.index
        for part in row.get("parts") or []:
            if int(part) in self.by_id:
                ok = self.makeable(str(self.by_id[int(part)]["name"]), seen | {int(row["id"])}) or ok
        self._makeable[name] = ok
        return ok

    def names(self) -> list[str]:
        """The classes a mask can be made for, in class-table order."""
        return [n for n in self.by_name if self.makeable(n)]

    # masks ---------------------------------------------------------------------------------
    def _own(self, name: str) -> np.ndarray:
        c = self.index[name]
        if not self.softmax:
            return self.source.mask(c, _threshold(self.thresholds, name))
        if self._winner is None:
            self._winner = self._argmax()
        return self._winner == c

    def _argmax(self) -> np.ndarray:
        """Index of the largest channel per voxel (the first on ties, as ``np.argmax``)."""
        best = np.array(self.source.channel(0), copy=True)
        arg = np.zeros(best.shape, dtype=np.min_scalar_type(self.source.n_channels))
        for c in range(1, self.source.n_channels):
            v = self.source.channel(c)
            better = v > best
            arg[better] = c
            np.copyto(best, v, where=better)
        return arg

    def _remember(self, name: str, mask: np.ndarray) -> None:
        packed = np.packbits(mask, axis=None)
        while self._packed and sum(p.nbytes for p in self._packed.values()) + packed.nbytes > self._budget:
            self._packed.popitem(last=False)
        if packed.nbytes <= self._budget:
            self._packed[name] = packed

    def _recall(self, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        packed = self._packed.get(name)
        if packed is None:
            return None
        self._packed.move_to_end(name)
        return np.unpackbits(packed, count=int(np.prod(shape)))[: int(np.prod(shape))].view(bool).reshape(shape)

    def __call__(self, name: str, _seen: frozenset[int] = frozenset()) -> np.ndarray | None:
        """The mask of ``name`` (a new array the caller may change), or None when it has neither
        a channel nor a part with one."""
        row = self.by_name[name]
        if not self.makeable(name):
            return None
        shape = tuple(self.source.shape)
        cached = self._recall(name, shape)
        if cached is not None:
            return cached
        mask = self._own(name) if name in self.index else None
        parts = [int(p) for p in row.get("parts") or [] if int(p) in self.by_id]
        for part in parts:
            part_mask = self(str(self.by_id[part]["name"]), _seen | {int(row["id"])})
            if part_mask is not None:
                if mask is None:
                    mask = part_mask
                else:
                    mask |= part_mask
        if mask is not None and self._is_part_of_a_group(name):
            self._remember(name, mask)
        return mask

    def _is_part_of_a_group(self, name: str) -> bool:
        rid = int(self.by_name[name]["id"])
        return any(rid in [int(p) for p in r.get("parts") or []] for r in self.by_id.values())


def class_masks(prob: np.ndarray, channels: Sequence[str], class_table: Sequence[Mapping[str, Any]],
                thresholds: Mapping[str, float] | float = 0.5) -> dict[str, np.ndarray]:
    """Boolean mask of every class of ``class_table`` that has a channel or parts.

    Parameters
    ----------
    prob : ndarray, shape (C, *S), float
        Probabilities in [0, 1], one channel per name in ``channels``.
    channels, class_table, thresholds
        As :class:`ClassMasks`.

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
    maker = ClassMasks(ArrayChannels(prob), channels, class_table, thresholds)
    out = {}
    for name in maker.names():
        mask = maker(name)
        if mask is not None:
            out[name] = mask
    return out
