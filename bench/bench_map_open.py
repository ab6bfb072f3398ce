"""Opening a probability map: what its integrity checks cost as the chunk files grow.

A map (``<case>_prob.zarr``) records how many chunk files it was written with and their bytes;
:func:`auto3dseg.ensembling.probability_maps.open_probability_map` lists the folder once to
check both (a deleted chunk would read as 0, a chunk cut short would fail later). Timed here:

* ``zarr open`` (the floor): ``zarr.open_array`` and its attributes, no check;
* ``two listings`` (the baseline, the code before this script): zarr's ``nchunks_initialized``,
  then a second listing for the bytes;
* ``ours``: ``open_probability_map``, one listing for both.

The maps are written with small chunks so that many files are made quickly: the cost depends on
the number of files (48 classes x 64 chunks of 128^3 is 3,072 files for a 512^3 test crop).

Run::

    .venv/bin/python bench/bench_map_open.py            # 3k, 10k and 25k chunk files (about 3 min on 2 cores)
    .venv/bin/python bench/bench_map_open.py --quick    # 3k only
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import machine_description  # noqa: E402


def write_map(folder: Path, channels: int, side: int, chunk: int) -> Path:
    """A map of ``channels`` x ``side``^3 with chunks of ``chunk``^3, every chunk stored."""
    from auto3dseg.ensembling.probability_maps import ProbabilityMapWriter

    rng = np.random.default_rng(0)
    writer = ProbabilityMapWriter(folder / "case_prob.zarr", channels, (side,) * 3, np.eye(4), chunks=(chunk,) * 3)
    for c in range(channels):  # one class at a time: little memory
        block = rng.random((1, side, side, side), dtype=np.float32) * 0.5 + 0.1
        writer.array[c:c + 1] = (block * 255).astype(np.uint8)
    return writer.commit([f"class{c}" for c in range(channels)], "sigmoid")


def two_listings(path: Path) -> None:
    import os

    import zarr

    arr = zarr.open_array(str(path), mode="r")
    attrs = dict(arr.attrs)
    assert arr.nchunks_initialized >= int(attrs["stored_chunks"])
    with os.scandir(path) as entries:
        size = sum(e.stat().st_size for e in entries if not e.name.startswith(".") and e.is_file())
    assert size == int(attrs["stored_bytes"])


def zarr_open(path: Path) -> None:
    import zarr

    dict(zarr.open_array(str(path), mode="r").attrs)


def ours(path: Path) -> None:
    from auto3dseg.ensembling.probability_maps import open_probability_map

    open_probability_map(path)


def timed(fn, path: Path, repeats: int) -> float:
    fn(path)  # warm: the directory in the page cache, as a second read of a map is
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Figures go to stdout as Markdown.")
    p.add_argument("--quick", action="store_true", help="only the smallest map (3,072 chunk files)")
    p.add_argument("--repeats", type=int, default=7, help="timed opens per variant (median reported)")
    p.add_argument("--channels", type=int, default=48, help="classes of the map")
    args = p.parse_args()
    # (side, chunk): 64, 216 and 512 chunks per class
    shapes = [(64, 16)] if args.quick else [(64, 16), (96, 16), (128, 16)]
    print(f"Machine: {machine_description()}\n")
    print("| chunk files | zarr open (floor), ms | two listings (baseline), ms | ours (one listing), ms |")
    print("|---:|---:|---:|---:|")
    for side, chunk in shapes:
        scratch = Path(tempfile.mkdtemp(prefix="bench_map_open_"))
        try:
            path = write_map(scratch, args.channels, side, chunk)
            files = args.channels * (side // chunk) ** 3
            row = [timed(fn, path, args.repeats) for fn in (zarr_open, two_listings, ours)]
            print(f"| {files:,} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} |")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
