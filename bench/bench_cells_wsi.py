"""A whole-slide cell image from file to ``<stem>_label.tiff`` on the CPU: seconds and peak RSS.

The challenge's test set has ~10,000 × 10,000 RGB images and its machine 28 GB of RAM
(10 GB of GPU); this measures each step of our pipeline on one such image:

1. **data**: a ``--side``² RGB uint8 brightfield image (uncompressed TIFF, read
   memory-mapped), tiled from the built-in synthetic cells, with its truth;
2. **model**: a tiny segresnet (init_filters 8, 3 levels of one block, patch ``--patch``²,
   ``--epochs`` epochs, one fold) trained on the built-in synthetic cells — its accuracy is
   not the point, the memory of stitching and post-processing a whole slide is;
3. **convert**: ``python -m converters.cells.convert`` (normalisation, NIfTI);
4. **predict**: ``run_auto3dseg.py --mode predict`` (sliding windows, output stitched on
   the CPU, written as a uint8 probability map);
5. **post-process**: ``python -m auto3dseg.postprocess.cells`` → ``<stem>_label.tiff``;
6. **score**: ``python -m auto3dseg.evaluation.cellseg`` (official rules: 2000² tiles).

Each step runs in its own process; its peak RSS is the largest resident set of that
process and its children, sampled every 50 ms. Steps 1-2 are set-up, not timed as the
pipeline. Figures go to stdout (Markdown) and ``<out>/bench_cells_wsi.json``.

Usage::

    .venv/bin/python bench/bench_cells_wsi.py                 # 10,000², ~10 min on 2 cores
    .venv/bin/python bench/bench_cells_wsi.py --side 2000     # a quick try
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable


def run_measured(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run ``cmd``; return (seconds, peak RSS in GiB of it and its children)."""
    import psutil

    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            p = psutil.Process(proc.pid)
            while not done.is_set():
                try:
                    rss = p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))
                    peak = max(peak, rss)
                except psutil.Error:
                    pass
                time.sleep(0.05)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = proc.wait()
        done.set()
        th.join()
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {rc}; see {log}")
    return time.perf_counter() - t0, peak / 2**30


def make_slide(side: int, cells_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """A ``side``² RGB slide and its truth, tiled from the synthetic brightfield images."""
    import tifffile

    from converters.cells.synthetic import cell_layout, render_brightfield

    rng = np.random.default_rng(0)
    tile = 500
    image = np.empty((side, side, 3), np.uint8)
    truth = np.zeros((side, side), np.uint32)
    offset = 0
    for y in range(0, side, tile):
        for x in range(0, side, tile):
            lab = cell_layout((tile, tile), rng, diameter=(10.0, 26.0))
            rgb = render_brightfield(lab, rng)
            h, w = min(tile, side - y), min(tile, side - x)
            image[y:y + h, x:x + w] = rgb[:h, :w]
            truth[y:y + h, x:x + w] = np.where(lab[:h, :w] > 0, lab[:h, :w].astype(np.uint32) + offset, 0)
            offset += int(lab.max())
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "truth").mkdir(exist_ok=True)
    img_path = out_dir / "images" / "slide.tif"
    tifffile.imwrite(img_path, image, photometric="rgb")  # uncompressed: read memory-mapped
    tifffile.imwrite(out_dir / "truth" / "slide_label.tiff", truth, compression="zlib")
    return img_path, out_dir / "truth"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--side", type=int, default=10_000, help="slide side in pixels (default 10000)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the tiny model (default 3)")
    p.add_argument("--patch", type=int, default=128, help="patch side of the tiny model (default 128)")
    p.add_argument("--work", default=str(ROOT / "bench" / "out" / "cells_wsi"), help="scratch folder")
    args = p.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    from converters.cells.synthetic import generate_synthetic_cells

    t0 = time.perf_counter()
    cells = work / "synthetic_cells"
    if not (cells / "cases.json").is_file():
        generate_synthetic_cells(cells, seed=0, force=True)
    slide, truth = make_slide(args.side, cells, work / "slide")
    setup_data = time.perf_counter() - t0
    model_dir = work / "model"
    steps: list[tuple[str, list[str]]] = [
        ("train the tiny model (set-up)", [PY, "-m", "converters.cells.convert", "--images",
                                           str(cells / "images"), "--labels", str(cells / "labels"), "--output_dir",
                                           str(work / "train_nifti"), "--num_folds", "2", "--no_progress"]),
        ("", [PY, "run_auto3dseg.py", "--mode", "full", "--datalist", str(work / "train_nifti" / "datalist.json"),
              "--work_dir", str(model_dir), "--workers", "0", "--algos", "segresnet", "--num_fold", "1",
              "--num_epochs", str(args.epochs), "--patch_size", str(args.patch), "--override", "num_workers=0",
              "--override", "segresnet:network#init_filters=8", "--override", "segresnet:network#blocks_down=[1,1,1]",
              "--override", "segresnet:network#dsdepth=1"]),
        ("convert", [PY, "-m", "converters.cells.convert", "--images", str(slide.parent), "--output_dir",
                     str(work / "slide_nifti"), "--no_progress"]),
        ("predict", [PY, "run_auto3dseg.py", "--mode", "predict", "--work_dir", str(model_dir), "--algos", "segresnet",
                     "--images", str(work / "slide_nifti" / "images" / "slide.nii.gz"), "--output_dir",
                     str(work / "slide_pred"), "--force"]),
        ("post-process", [PY, "-m", "auto3dseg.postprocess.cells", str(work / "slide_pred"), "--output_dir",
                          str(work / "slide_labels"), "--no_progress"]),
        ("score", [PY, "-m", "auto3dseg.evaluation.cellseg", "--gt", str(truth), "--pred", str(work / "slide_labels"),
                   "--out", str(work / "slide_scores.json"), "--no_progress"]),
    ]
    rows = []
    for i, (name, cmd) in enumerate(steps):
        seconds, peak = run_measured(cmd, logs / f"step{i}.log")
        rows.append({"step": name or "(set-up, continued)", "seconds": seconds, "peak_rss_gib": peak})
        print(f"{rows[-1]['step']}: {seconds:.1f} s, peak RSS {peak:.2f} GiB", flush=True)
    pipeline = [r for r in rows if r["step"] in ("convert", "predict", "post-process")]
    total_s = sum(r["seconds"] for r in pipeline)
    peak = max(r["peak_rss_gib"] for r in pipeline)
    scores = json.loads((work / "slide_scores.json").read_text())
    lines = [f"Slide {args.side} x {args.side} RGB uint8 ({args.side ** 2 * 3 / 2**20:.0f} MiB), tiny segresnet "
             f"(init_filters 8, blocks_down [1,1,1], patch {args.patch}², {args.epochs} epochs); data set-up "
             f"{setup_data:.0f} s.", "",
             "| step | seconds | peak RSS GiB |", "|---|---|---|"]
    lines += [f"| {r['step']} | {r['seconds']:.1f} | {r['peak_rss_gib']:.2f} |" for r in rows]
    lines += [f"| **file → _label.tiff** | **{total_s:.1f}** | **{peak:.2f}** |", "",
              f"F1 of the tiny model on the slide (official rules, tiled): {scores['mean_f1']:.4f}"]
    print("\n".join(lines))
    (work.parent / "bench_cells_wsi.json").write_text(json.dumps({
        "when": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
        "cpus": os.cpu_count(), "args": vars(args), "rows": rows, "pipeline_seconds": total_s,
        "pipeline_peak_rss_gib": peak, "mean_f1": scores["mean_f1"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
