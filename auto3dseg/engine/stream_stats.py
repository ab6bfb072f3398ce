"""Per-channel intensity statistics of an image streamed in file order, for the preprocessed
cache's record: mean, std and percentiles, exact from a histogram for 8- and 16-bit integers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ChannelStats", "percentile_key", "percentile_of_histogram"]


def percentile_key(q: float) -> str:
    """How a percentile is named in a record: ``percentile_key(1) == '1.0'``."""
    return repr(float(q))


class ChannelStats:
    """Per-channel mean, std (population, as MONAI's ``NormalizeIntensity``) and percentiles of values
    streamed in file order (channel slowest). Integers of 8 or 16 bits: a histogram (exact);
    other types: combined chunk moments and percentiles from the written array."""

    def __init__(self, dtype: np.dtype, channels: int, per_channel: int):
        self.dtype, self.per_channel = np.dtype(dtype), per_channel
        self.histogram = self.dtype.kind in "ui" and self.dtype.itemsize <= 2
        self.low = int(np.iinfo(self.dtype).min) if self.histogram else 0
        bins = 1 << (8 * self.dtype.itemsize) if self.histogram else 0
        self.hist = [np.zeros(bins, np.int64) for _ in range(channels)]
        self.moments = [(0, 0.0, 0.0)] * channels  # count, mean, sum of squared deviations
        self.nonfinite = 0

    def add(self, start: int, values: np.ndarray) -> None:
        while values.size:
            c = start // self.per_channel
            n = min(values.size, (c + 1) * self.per_channel - start)
            piece, values, start = values[:n], values[n:], start + n
            if self.histogram:
                shifted = piece.astype(np.int64) - self.low if self.low else piece
                self.hist[c] += np.bincount(shifted, minlength=self.hist[c].size)
                continue
            finite = np.isfinite(piece)
            if not finite.all():
                self.nonfinite += int(piece.size - np.count_nonzero(finite))
                continue
            (n0, m0, s0), x = self.moments[c], piece.astype(np.float64)
            n1, m1 = x.size, float(x.mean())
            n, d = n0 + n1, m1 - m0  # Chan et al.'s pairwise update: no cancellation, unlike sum of squares
            self.moments[c] = (n, m0 + d * n1 / n, s0 + float(((x - m1) ** 2).sum()) + d * d * n0 * n1 / n)

    def result(self, percentiles: Sequence[float], written: Path) -> dict[str, Any]:
        means, stds, qs = [], [], {percentile_key(q): [] for q in percentiles}
        for c in range(len(self.moments)):
            if self.histogram:
                h, v = self.hist[c], np.arange(self.hist[c].size, dtype=np.float64) + self.low
                n, mean = max(int(h.sum()), 1), float((h * v).sum() / max(int(h.sum()), 1))
                means.append(mean)
                stds.append(float(math.sqrt((h * (v - mean) ** 2).sum() / n)))
                for q in percentiles:
                    qs[percentile_key(q)].append(percentile_of_histogram(h, v, q))
                continue
            n, mean, ss = self.moments[c]
            means.append(mean)
            stds.append(math.sqrt(ss / n) if n else 0.0)
            if percentiles:
                arr = np.load(written, mmap_mode="r")
                values = np.asarray(arr[..., c] if arr.ndim == 4 else arr)
                for q, p in zip(percentiles, np.percentile(values, list(percentiles))):
                    qs[percentile_key(q)].append(float(p))
        return {"mean": means, "std": stds, "percentiles": qs}


def percentile_of_histogram(h: np.ndarray, v: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) from the values' histogram.

    >>> h = np.bincount([3, 1, 4, 1, 5]); percentile_of_histogram(h, np.arange(h.size, dtype=float), 30)
    1.4
    """
    cum = np.cumsum(h)
    pos = q / 100.0 * (int(cum[-1]) - 1)
    lo = math.floor(pos)
    a = v[np.searchsorted(cum, lo, side="right")]
    b = v[np.searchsorted(cum, min(lo + 1, int(cum[-1]) - 1), side="right")]
    return float(a + (b - a) * (pos - lo))
