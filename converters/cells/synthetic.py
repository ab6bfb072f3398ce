"""Deterministic synthetic 2-D cell microscopy in the NeurIPS 2022 CellSeg layout.

Each image is a random instance mask (cells grown from seeds by a weighted Voronoi
diagram inside blob masks, so neighbours share borders, plus isolated cells and cells cut
by the image border) rendered by one modality with its real-world quirk: 16-bit
fluorescence on a high background offset, RGB stained brightfield, a 4-channel
channel-first TIFF, an 8-bit phase-contrast PNG, a lossy RGB JPEG. Each image is one hard
case, listed in ``cases.json``. The whole tree takes ~2 s and ~3 MB.

Output tree (``--out DIR``)::

    DIR/images/<stem>.<ext>            .tif .tiff .png .jpg .bmp (labelled and test images)
    DIR/labels/<stem>_label.tiff       instance masks of the labelled images (zlib)
    DIR/test_truth/<stem>_label.tiff   truth of the unlabelled test images (scoring only)
    DIR/cases.json                     {"generator", "seed", "out", "cases": {stem: record}}

Command line: ``python -m converters.cells.synthetic --out DIR [--seed 0] [--force]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import tifffile

from converters.cells.synthetic_drawing import (
    MODALITIES,
    cell_layout,
    cell_stats,
    relabel_ids,
    render_brightfield,
    render_fluorescence,
    render_fluorescence_rgb,
    render_multiplex,
    render_phase_contrast,
)

__all__ = ["CASES", "GENERATOR", "MODALITIES", "CaseSpec", "cell_layout", "cell_stats",
           "generate_synthetic_cells", "main", "relabel_ids", "render_brightfield",
           "render_fluorescence", "render_fluorescence_rgb", "render_multiplex",
           "render_phase_contrast"]


GENERATOR = "converters.cells.synthetic"


@dataclass(frozen=True)
class CaseSpec:
    """One image: file, modality, (H, W), label dtype, split, and layout parameters."""

    stem: str
    ext: str
    modality: str
    shape: tuple[int, int]
    label_dtype: str
    labelled: bool
    hard_case: str
    diameter: tuple[float, float] = (10.0, 26.0)
    small_fraction: float = 0.15
    blob_fraction: float = 0.5
    n_isolated: int = 3
    n_border: int = 2
    sequential: bool = True


CASES: tuple[CaseSpec, ...] = (
    CaseSpec("cell_00_fluo16", ".tif", "fluo_gray16", (192, 192), "int16", True,
             "uint16 on a high background offset (~27000-65535), dense touching cells"),
    CaseSpec("cell_01_fluo16_small", ".tiff", "fluo_gray16", (160, 224), "uint16", True,
             "mostly tiny cells (6-9 px across), non-sequential ids",
             diameter=(6.0, 14.0), small_fraction=0.6, sequential=False),
    CaseSpec("cell_02_he", ".tif", "brightfield_rgb8", (224, 224), "int32", True,
             "RGB stained brightfield (purple cells on pink/white), channel-last TIFF"),
    CaseSpec("cell_03_he_png", ".png", "brightfield_rgb8", (176, 208), "int16", True,
             "RGB PNG, non-sequential ids", sequential=False),
    CaseSpec("cell_04_4ch", ".tif", "multiplex_4ch16", (192, 160), "uint16", True,
             "4-channel channel-first (4, H, W) uint16 TIFF; use the first 3 channels"),
    CaseSpec("cell_05_phase8", ".png", "phase_gray8", (200, 200), "int16", True,
             "8-bit grayscale PNG, dark cells with bright halos"),
    CaseSpec("cell_06_rgb_jpg", ".jpg", "fluo_rgb8", (160, 160), "int32", True,
             "lossy RGB JPEG, non-sequential ids", sequential=False),
    CaseSpec("cell_07_he_bmp", ".bmp", "brightfield_rgb8", (144, 192), "uint16", True,
             "RGB BMP, big cells, many cut by the image border",
             diameter=(18.0, 34.0), small_fraction=0.0, n_border=6),
    CaseSpec("cell_08_sparse", ".tif", "fluo_gray16", (128, 160), "int16", True,
             "sparse isolated cells only (none touch), several cut by the border",
             blob_fraction=0.0, n_isolated=8, n_border=4),
    CaseSpec("cell_09_large", ".tif", "fluo_gray16", (768, 1024), "int32", True,
             "large image (1024 x 768) for --max_pixels tiling, non-sequential ids",
             diameter=(10.0, 30.0), n_isolated=10, n_border=6, sequential=False),
    CaseSpec("cell_10_test_fluo16", ".tif", "fluo_gray16", (192, 192), "int16", False,
             "test image: 16-bit fluorescence, truth only in test_truth/"),
    CaseSpec("cell_11_test_he", ".png", "brightfield_rgb8", (160, 200), "uint16", False,
             "test image: RGB brightfield PNG, truth only in test_truth/"),
    CaseSpec("cell_12_test_4ch", ".tiff", "multiplex_4ch16", (176, 176), "int32", False,
             "test image: 4-channel channel-first TIFF, truth only in test_truth/"),
)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def _write_image(path: Path, img: np.ndarray, layout: str) -> None:
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, img, photometric="rgb" if layout == "HWC" else "minisblack",
                         planarconfig="separate" if layout == "CHW" else None)
    else:
        iio.imwrite(path, img, **({"quality": 92} if path.suffix == ".jpg" else {}))


def _make_case(tmp: Path, spec: CaseSpec, rng: np.random.Generator) -> dict[str, Any]:
    render, dtype, channels, layout = MODALITIES[spec.modality]
    seq = cell_layout(spec.shape, rng, diameter=spec.diameter,
                      small_fraction=spec.small_fraction, blob_fraction=spec.blob_fraction,
                      n_isolated=spec.n_isolated, n_border=spec.n_border)
    img = render(seq, rng)
    labels = relabel_ids(seq, rng, spec.label_dtype, spec.sequential)
    fname, lname = spec.stem + spec.ext, f"{spec.stem}_label.tiff"
    ldir = "labels" if spec.labelled else "test_truth"
    _write_image(tmp / "images" / fname, img, layout)
    tifffile.imwrite(tmp / ldir / lname, labels, compression="zlib")
    path = tmp / "images" / fname
    back = tifffile.imread(path) if path.suffix in (".tif", ".tiff") else iio.imread(path)
    hw = back.shape[1:] if layout == "CHW" else back.shape[:2]
    if str(back.dtype) != dtype or tuple(hw) != labels.shape:
        raise RuntimeError(f"{fname}: read back {back.dtype} {back.shape}, "
                           f"expected {dtype} and labels {labels.shape}")
    return {"stem": spec.stem, "file": fname, "image": f"images/{fname}",
            "label": f"labels/{lname}" if spec.labelled else None,
            "truth": f"{ldir}/{lname}", "split": "train" if spec.labelled else "test",
            "labelled": spec.labelled, "modality": spec.modality, "format": spec.ext[1:],
            "dtype": dtype, "channels": channels, "channel_layout": layout,
            "use_channels": list(range(min(channels, 3))), "shape": list(back.shape),
            "height": int(labels.shape[0]), "width": int(labels.shape[1]),
            "value_range": [int(back.min()), int(back.max())],
            "label_dtype": spec.label_dtype, **cell_stats(labels), "hard_case": spec.hard_case}


def _is_ours(path: Path) -> bool:
    try:
        return json.loads((path / "cases.json").read_text()).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False


def generate_synthetic_cells(out: str | Path, seed: int = 0, force: bool = False) -> dict:
    """Write the synthetic CellSeg-layout tree to ``out``; return ``cases.json``'s dict.

    Built in a temporary sibling folder and renamed into place, so ``out`` is either
    complete or untouched. An existing ``out`` is replaced when it is empty or was written
    by this generator (its ``cases.json`` says so); any other folder only with ``force``.

    Parameters
    ----------
    out : str or Path
    seed : int
        The same seed gives identical arrays; the cases (files, modalities) are fixed.
    force : bool
        Replace an existing non-empty folder that this generator did not write.

    Returns
    -------
    dict
        ``{"generator", "seed", "out", "cases": {stem: record}}`` as in ``cases.json``; a
        record has the image/label paths, split, modality, dtype, channels and layout,
        shape, cell count, ids, diameters, border cells, touching pairs and hard case.

    Raises
    ------
    FileExistsError
        ``out`` is a file, or a non-empty foreign folder and ``force`` is False.

    Examples
    --------
    >>> info = generate_synthetic_cells("/tmp/synthetic_cells", force=True)  # doctest: +SKIP
    >>> info["cases"]["cell_04_4ch"]["shape"]  # doctest: +SKIP
    [4, 192, 160]
    """
    final = Path(out).expanduser().resolve()
    if final.exists():
        if not final.is_dir():
            raise FileExistsError(f"{final} exists and is not a directory")
        if any(final.iterdir()) and not _is_ours(final) and not force:
            raise FileExistsError(f"refusing to replace {final}: not empty and not written by "
                                  f"{GENERATOR}; pass force=True (--force) to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        for sub in ("images", "labels", "test_truth"):
            (tmp / sub).mkdir()
        cases = {spec.stem: _make_case(tmp, spec, np.random.default_rng(
            np.random.SeedSequence([int(seed), i]))) for i, spec in enumerate(CASES)}
        info = {"generator": GENERATOR, "seed": int(seed), "out": str(final), "cases": cases}
        (tmp / "cases.json").write_text(json.dumps(info, indent=2) + "\n")
        trash = None
        if final.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.rename(final, trash / "old")
        os.rename(tmp, final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 when refusing to overwrite)."""
    p = argparse.ArgumentParser(
        prog="python -m converters.cells.synthetic",
        description="Generate small deterministic 2-D cell microscopy data in the NeurIPS 2022 "
                    "CellSeg layout (images/, labels/, test_truth/, cases.json).")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (written atomically)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--force", action="store_true",
                   help="replace DIR even if it is a non-empty folder not written by this tool")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    try:
        info = generate_synthetic_cells(args.out, seed=args.seed, force=args.force)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    root = Path(info["out"])
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    print(f"wrote {root} in {time.perf_counter() - t0:.1f} s, {size / 1e6:.1f} MB "
          f"(seed {info['seed']})")
    for r in info["cases"].values():
        print(f"  {r['split']:5s} {r['image']:32s} {r['modality']:16s} {r['dtype']:6s} "
              f"{'x'.join(map(str, r['shape'])):10s} {r['n_cells']:4d} cells -> {r['truth']}")
    print(f"  cases: {root / 'cases.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
