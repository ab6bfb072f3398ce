"""The per-image label checks of the cells converter: ours vs the numpy baseline, same run.

A training pair costs, beyond reading and writing, a test that the label is no copy of its
image (:func:`converters.cells.item._derived_from`, on a sample of at most 1M pixels) and a
count of its cells. Both need the distinct values of an int array; the baseline is the same
test with ``np.unique`` (a sort), ours uses ``fastremap.unique`` (hashing).

Usage::

    .venv/bin/python bench/bench_cell_label_checks.py            # 1,000², 4,000², 10,000²
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from converters.cells.item import _derived_from  # noqa: E402


def derived_from_numpy(plane: np.ndarray, labels: np.ndarray, max_pixels: int = 1_000_000) -> bool:
    """The baseline: the same test with ``np.unique``."""
    step = max(1, int(np.ceil(np.sqrt(plane.size / max_pixels))))
    img, lab = plane[::step, ::step].ravel().astype(np.int64), labels[::step, ::step].ravel().astype(np.int64)
    levels = np.unique(img)
    if levels.size < 16 or np.unique(lab).size < 3:
        return False
    return np.unique(img * (int(lab.max()) + 1) + lab).size == levels.size


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    import fastremap

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sides", type=int, nargs="+", default=[1000, 4000, 10000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    from importlib.metadata import version

    print(f"{platform.machine()}, {os.cpu_count()} cores, numpy {np.__version__}, "
          f"fastremap {version('fastremap')}")
    print("| side | label-is-image test: numpy / ours (s) | cell count: numpy / ours (s) |")
    print("|---|---|---|")
    for side in args.sides:
        image = rng.integers(0, 65535, (side, side), dtype=np.uint16)
        labels = rng.integers(0, 2000, (side, side), dtype=np.uint32)
        assert derived_from_numpy(image, labels) == _derived_from(image, labels)
        a = best_of(lambda: derived_from_numpy(image, labels), args.repeats)
        b = best_of(lambda: _derived_from(image, labels), args.repeats)
        c = best_of(lambda: np.unique(labels), args.repeats)
        d = best_of(lambda: fastremap.unique(labels), args.repeats)
        print(f"| {side:,}² | {a:.3f} / {b:.3f} | {c:.3f} / {d:.3f} |")


if __name__ == "__main__":
    main()
