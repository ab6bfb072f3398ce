"""2-D cell post-processing: ours vs the challenge baseline's recipe, on the same maps.

Maps: each instance mask is encoded as a network would be taught to predict it, then
blurred (Gaussian, σ ``--sigma`` px) and given uniform noise of amplitude ``--noise``, so
that probabilities are soft at edges, as a trained network's are:

* **our encoding** (:mod:`datalists.cell_classes`): channels ``cell_interior``,
  ``cell_contact``, ``cell``;
* **the baseline's encoding** (JunMa11/NeurIPS-CellSeg, 3 classes): interior = cell minus
  its inner boundary dilated by one pixel.

Methods, timed from the probability maps to the instance ids:

* **ours**: ``auto3dseg.postprocess.cell_instances.cells_from_probabilities`` with the
  packaged parameters (seeded, breadth-first growth through the cell mask);
* **baseline recipe on our maps**: ``interior > 0.5``, ``remove_small_holes`` (16 px),
  ``remove_small_objects`` (16 px), ``skimage.measure.label`` — the challenge baseline's
  ``predict.py`` steps, applied to our interior channel;
* **baseline recipe on the baseline's maps**: the same steps on the baseline's interior:
  what the baseline's perfect model would reach.

Scored with the official rules (``auto3dseg.evaluation.cellseg.score_image``). Images: the
real pairs in ``../shared/data/cells2d`` when present, and the labelled built-in synthetic
cells; timing also on a ``--big``² map tiled from the synthetic masks.

Usage::

    .venv/bin/python bench/bench_cells_postprocess.py            # ~1 min on 2 cores
    .venv/bin/python bench/bench_cells_postprocess.py --big 2000 # smaller timing map
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auto3dseg.evaluation.cellseg import score_image  # noqa: E402
from auto3dseg.postprocess.cell_instances import cells_from_probabilities  # noqa: E402
from converters.cells.targets import cell_targets  # noqa: E402
from datalists.cell_classes import CELL_CLASS_TABLE  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "cells2d" / "labels"
CHANNELS = [r["name"] for r in CELL_CLASS_TABLE]


def soften(mask: np.ndarray, sigma: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A binary map blurred and noised into float32 probabilities in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    p = gaussian_filter(mask.astype(np.float32), sigma) if sigma > 0 else mask.astype(np.float32)
    p += rng.uniform(-noise, noise, size=p.shape).astype(np.float32)
    return np.clip(p, 0, 1, out=p)


def our_maps(labels: np.ndarray, sigma: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    t = cell_targets(labels)
    return np.stack([soften(t == 1, sigma, noise, rng), soften(t == 2, sigma, noise, rng),
                     soften(t > 0, sigma, noise, rng)])


def baseline_interior(labels: np.ndarray) -> np.ndarray:
    """The baseline's interior class: cells minus their inner boundary dilated by 1 px."""
    from skimage.morphology import dilation, disk
    from skimage.segmentation import find_boundaries

    boundary = dilation(find_boundaries(labels, mode="inner"), disk(1))
    return (labels > 0) & ~boundary


def baseline_recipe(interior_prob: np.ndarray) -> np.ndarray:
    """The baseline's predict.py steps from an interior probability map to instances."""
    import warnings

    from skimage import measure, morphology

    with warnings.catch_warnings():  # skimage 0.26 renamed the size arguments; same semantics here
        warnings.simplefilter("ignore", FutureWarning)
        mask = morphology.remove_small_holes(interior_prob > 0.5, 16)
        mask = morphology.remove_small_objects(mask, 16)
    return measure.label(mask)


def _timed(fn, *args) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def load_masks(synthetic_dir: Path) -> dict[str, np.ndarray]:
    import tifffile

    masks = {}
    if REAL.is_dir():
        masks.update({f"real/{p.name[:-11]}": tifffile.imread(p) for p in sorted(REAL.glob("*_label.tiff"))})
    masks.update({f"synthetic/{p.name[:-11]}": tifffile.imread(p)
                  for p in sorted((synthetic_dir / "labels").glob("*_label.tiff"))})
    return masks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sigma", type=float, default=1.0, help="blur of the emulated maps, px (default 1)")
    p.add_argument("--noise", type=float, default=0.2, help="uniform noise amplitude (default 0.2)")
    p.add_argument("--big", type=int, default=10_000, help="side of the timing map (default 10000)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"), help="where bench_cells_postprocess.json goes")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    from converters.cells.synthetic import generate_synthetic_cells

    with tempfile.TemporaryDirectory() as tmp:
        generate_synthetic_cells(Path(tmp) / "cells", seed=0)
        masks = load_masks(Path(tmp) / "cells")
    rows = []
    for name, lab in masks.items():
        ours_prob = our_maps(lab, args.sigma, args.noise, rng)
        base_prob = soften(baseline_interior(lab), args.sigma, args.noise, rng)
        ours, t_ours = _timed(cells_from_probabilities, ours_prob, CHANNELS, CELL_CLASS_TABLE)
        recipe, t_recipe = _timed(baseline_recipe, ours_prob[0])
        base, t_base = _timed(baseline_recipe, base_prob)
        rows.append({"image": name, "pixels": int(lab.size), "cells": int(len(np.unique(lab)) - 1),
                     "ours_f1": score_image(lab, ours)["f1"], "recipe_on_our_maps_f1": score_image(lab, recipe)["f1"],
                     "recipe_on_baseline_maps_f1": score_image(lab, base)["f1"],
                     "ours_s": t_ours, "recipe_s": t_recipe})

    # timing on a big map: the synthetic masks tiled, ids kept distinct per tile
    tiles = [m for n, m in masks.items() if n.startswith("synthetic/") and m.shape[0] >= 128]
    big = np.zeros((args.big, args.big), np.int64)
    y = x = 0
    offset = 0
    row_h = 0
    k = 0
    while y < args.big:
        m = tiles[k % len(tiles)].astype(np.int64)
        k += 1
        h, w = min(m.shape[0], args.big - y), min(m.shape[1], args.big - x)
        big[y:y + h, x:x + w] = np.where(m[:h, :w] > 0, m[:h, :w] + offset, 0)
        offset += int(m.max())
        row_h = max(row_h, h)
        x += w
        if x >= args.big:
            x, y, row_h = 0, y + row_h, 0
    big_prob = our_maps(big, args.sigma, args.noise, rng)
    del big
    u8 = np.round(big_prob * 255).astype(np.uint8)  # what the ensemble stores
    del big_prob
    big_ours, t_big_ours = _timed(cells_from_probabilities, u8, CHANNELS, CELL_CLASS_TABLE, None, 255.0)
    big_recipe, t_big_recipe = _timed(baseline_recipe, u8[0].astype(np.float32) / 255)

    lines = ["| image | pixels | cells | F1 ours | F1 recipe on our maps | F1 recipe on baseline maps | s ours "
             "| s recipe |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['image']} | {r['pixels']} | {r['cells']} | {r['ours_f1']:.4f} | "
                     f"{r['recipe_on_our_maps_f1']:.4f} | {r['recipe_on_baseline_maps_f1']:.4f} | {r['ours_s']:.3f} | "
                     f"{r['recipe_s']:.3f} |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("ours_f1", "recipe_on_our_maps_f1",
                                                               "recipe_on_baseline_maps_f1")}
    lines.append(f"| **mean** | | | **{mean['ours_f1']:.4f}** | **{mean['recipe_on_our_maps_f1']:.4f}** | "
                 f"**{mean['recipe_on_baseline_maps_f1']:.4f}** | | |")
    lines.append("")
    lines.append(f"{args.big}² map ({int(big_ours.max())} cells from ours, {int(big_recipe.max())} from the recipe): "
                 f"ours {t_big_ours:.1f} s, baseline recipe {t_big_recipe:.1f} s "
                 f"(ratio {t_big_ours / t_big_recipe:.2f}).")
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cells_postprocess.json").write_text(json.dumps({
        "when": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
        "args": vars(args), "rows": rows, "mean": mean,
        "big": {"side": args.big, "ours_s": t_big_ours, "recipe_s": t_big_recipe}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
