"""What stamping a work_dir's weights by content costs, against the file-time stamp it replaced.

Ensemble and out-of-fold maps are kept while their bundles' weights are the same: the stamp
is each weights file's name, size and SHA-1 (:mod:`auto3dseg.ensembling.weights_stamp`),
cached per bundle by size and time. The baseline is the old stamp, name, size and mtime
(``legacy=True``), which a ``cp -r`` copy invalidated. Measured, same run: the stamp of every
bundle of a work_dir read cold from the page cache (after training or a copy: the files were
just written), from the per-bundle cache, and the baseline.

Usage::

    .venv/bin/python bench/bench_weights_stamp.py                 # 15 bundles of 100 MB
    .venv/bin/python bench/bench_weights_stamp.py --bundles 3 --mb 250
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import auto3dseg.ensembling.weights_stamp as ws  # noqa: E402


def stamp_all(bundles: list[Path], legacy: bool = False) -> float:
    start = time.perf_counter()
    for b in bundles:
        ws.weights_stamp(b, legacy)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundles", type=int, default=15, help="bundles (3 networks x 5 folds: 15)")
    p.add_argument("--mb", type=int, default=100, help="size of each bundle's model.pt in MB")
    p.add_argument("--dir", default=None, help="where to write the fake work_dir (default: a temporary folder)")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        bundles = []
        for i in range(args.bundles):
            b = root / f"segresnet_{i}"
            (b / "model").mkdir(parents=True)
            (b / "model" / "model.pt").write_bytes(os.urandom(args.mb * 2**20))
            bundles.append(b)
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
              f"{args.bundles} bundles x {args.mb} MB")
        legacy = min(stamp_all(bundles, legacy=True) for _ in range(3))
        uncached = []
        for _ in range(3):
            for b in bundles:
                (b / ws.DIGEST_CACHE).unlink(missing_ok=True)
            ws._MEMO.clear()
            uncached.append(stamp_all(bundles))
        ws._MEMO.clear()
        cached = min(stamp_all(bundles) for _ in range(3))
        print("| stamp | s for the work_dir |\n|---|---|")
        print(f"| baseline: name, size, mtime | {legacy:.4f} |")
        print(f"| SHA-1, no cache (files in the page cache), best of 3 | {min(uncached):.3f} |")
        print(f"| SHA-1, per-bundle cache | {cached:.4f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
