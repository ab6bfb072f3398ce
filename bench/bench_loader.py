"""Loader throughput per worker: training draws with the preprocessed cache against without it.

One draw is what a bundle's loader worker does per item: ``training_transforms(cfg)`` gives 2
patches of 128³ (z-score, 48 classes, sigmoid), and ``list_data_collate`` makes them a batch.

* **uncached** (``cache: false``, what every draw did before): ``LoadImaged`` gunzips the whole
  ``.nii.gz`` image and label, the image becomes float32 and is z-scored whole, the label padded,
  ``ClassesToIndicesd`` runs over every voxel for 49 values, then 2 patches are cropped.
* **cached** (``cache: true``, the default): the entry (``auto3dseg/engine/preprocessed.py``) is
  built once; a draw memory-maps ``image.npy`` / ``label.npy`` / ``indices.npy``, chooses the
  centres with MONAI's ``generate_label_classes_crop_centers`` and reads, normalises and pads
  only the 2 patches. Also run with the entry's pages dropped from the page cache before every
  draw (``posix_fadvise(DONTNEED)``): each patch is then read from the disk.
* **build**: the one-off cost of an entry (``build_cache`` for one crop): seconds, bytes on disk.

Crops: synthetic uint8 EM-like image and uint8 label map of 48 classes plus background (balls of
48 sizes and counts, from cell-sized to vesicle-sized), written as the converter writes them
(``nib.Nifti1Image(array_zyx.T)``, nibabel's ``.nii.gz``). Every measurement runs in a fresh
process; peak RSS is ``VmHWM`` (see ``bench_training.py``), also over a process that only imports.

Usage::

    .venv/bin/python bench/bench_loader.py                 # 256^3 and 512^3 (about 6 min on 2 cores)
    .venv/bin/python bench/bench_loader.py --sizes 128 --items 1 --cached-items 5   # smoke run

Markdown tables go to stdout, raw figures to ``<out>/bench_loader.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine_info import machine_description, peak_rss_mib  # noqa: E402

N_CLASSES = 48
PATCH = 128
#: assumed GPU consumption, patches of 128^3 per second (see RESULTS.md for where they come from)
GPU_RATES = {"A100": 10.0, "H100": 20.0}


# ----------------------------------------------------------------------------- data
def make_crop(folder: Path, size: int, seed: int = 0) -> dict:
    """A synthetic crop as the converter writes it; returns its datalist item (absolute paths)."""
    import nibabel as nib

    img_path, lab_path = folder / "images" / f"crop_{size}.nii.gz", folder / "labels" / f"crop_{size}.nii.gz"
    item = {"image": str(img_path), "label": str(lab_path), "annotated_mask": (1 << N_CLASSES) - 1, "fold": 0}
    if img_path.is_file() and lab_path.is_file():
        return item
    rng = np.random.default_rng(seed)
    lab = np.zeros((size,) * 3, np.uint8)  # z, y, x
    for c in range(1, N_CLASSES + 1):  # large, few balls for the first classes; small, many for the last
        radius = max(2.0, size * 0.16 / (1 + (c - 1) / 6))
        for _ in range(1 + (c - 1) // 4):
            centre = rng.uniform(0, size, 3)
            lo = np.maximum((centre - radius).astype(int), 0)
            hi = np.minimum((centre + radius).astype(int) + 1, size)
            zz, yy, xx = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            ball = (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius ** 2
            lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][ball] = c
    img = np.empty_like(lab)
    for z in range(size):  # slab by slab: bounded memory
        noise = rng.normal(0, 18, (size, size))
        img[z] = np.clip(90 + 3 * (lab[z] % 11) + noise, 0, 255).astype(np.uint8)
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    for path, arr in ((img_path, img), (lab_path, lab)):
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(arr.T, affine), str(path))  # x, y, z, as converters/cellmap/crop.py
    return item


def bench_cfg(folder: Path, cache: bool) -> dict:
    return {"patch_size": [PATCH] * 3, "num_patches_per_image": 2, "intensity": {"mode": "zscore"},
            "class_ids": list(range(1, N_CLASSES + 1)), "class_members": [[i] for i in range(1, N_CLASSES + 1)],
            "output_activation": "sigmoid", "spatial_dims": 3, "max_samples_per_class": 100_000,
            "bundle_root": str(folder / "work" / "segresnet_0"), "dataroot": str(folder), "cache": cache}


# ----------------------------------------------------------------------------- workers (fresh processes)
def worker_floor(_: dict) -> dict:
    import monai  # noqa: F401
    import nibabel  # noqa: F401
    import torch  # noqa: F401

    import auto3dseg.engine.transforms  # noqa: F401
    return {"peak_rss_mib": peak_rss_mib()}


def _drop_page_cache(folder: Path) -> None:
    for f in folder.glob("*.npy"):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def worker_draws(spec: dict) -> dict:
    """``spec["items"]`` timed draws (after one warm-up), each transform + collate, as a loader worker."""
    from monai.data import list_data_collate

    from auto3dseg.engine.preprocessed import cache_dir_of, entry_key
    from auto3dseg.engine.transforms import training_transforms

    folder, item = Path(spec["folder"]), spec["item"]
    cfg = bench_cfg(folder, spec["cache"])
    entry = cache_dir_of(cfg) / entry_key(item["image"], folder) if spec["cache"] else None
    pipe = training_transforms(cfg)
    pipe.set_random_state(seed=spec["seed"])
    list_data_collate([pipe(dict(item))])  # warm-up draw, not timed
    times = []
    for _ in range(spec["items"]):
        if spec.get("cold"):
            _drop_page_cache(entry)
        t0 = time.perf_counter()
        batch = list_data_collate([pipe(dict(item))])
        times.append(time.perf_counter() - t0)
        shape = list(batch["image"].shape)
        del batch
    return {"peak_rss_mib": peak_rss_mib(), "s_per_item": float(np.median(times)), "s_min": float(np.min(times)),
            "batch_shape": shape}


def worker_build(spec: dict) -> dict:
    from auto3dseg.engine.preprocessed import CacheParams, build_cache, cache_dir_of

    folder = Path(spec["folder"])
    cache = cache_dir_of(bench_cfg(folder, True))
    shutil.rmtree(cache, ignore_errors=True)
    base = peak_rss_mib()
    t0 = time.perf_counter()
    report = build_cache([spec["item"]], folder, cache, CacheParams(100_000), progress=False)
    seconds = time.perf_counter() - t0
    entry = cache / report[0]["key"]
    sizes = {f.name: f.stat().st_size for f in entry.iterdir() if f.is_file()}
    return {"seconds": seconds, "bytes": sizes, "peak_rss_mib": peak_rss_mib(), "import_rss_mib": base,
            "nii_gz_bytes": sum(Path(spec["item"][k]).stat().st_size for k in ("image", "label"))}


WORKERS = {"floor": worker_floor, "draws": worker_draws, "build": worker_build}


def spawn(spec: dict) -> dict:
    """Run one worker in a fresh interpreter; returns its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"worker {spec.get('kind')} failed ({res.returncode}):\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512", help="crop edges in voxels, comma-separated (default 256,512)")
    p.add_argument("--items", type=int, default=3, help="timed uncached draws per crop, after 1 warm-up (default 3)")
    p.add_argument("--cached-items", type=int, default=40, help="timed cached draws per crop and mode (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the transforms (default 0)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out" / "loader"),
                   help="scratch folder for the crops, the cache and bench_loader.json (default bench/out/loader)")
    p.add_argument("--worker", default=None, metavar="JSON", help="internal: run one measurement in this process")
    args = p.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(WORKERS[spec["kind"]](spec)))
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": machine_description(), "argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d"),
                     "crops": {}}
    print(f"machine: {results['machine']}\n")
    floor = spawn({"kind": "floor"})["peak_rss_mib"]
    load0 = os.getloadavg()[0]
    for size in (int(s) for s in args.sizes.split(",")):
        t = time.perf_counter()
        folder = out / f"crop{size}"
        item = make_crop(folder, size, args.seed)
        print(f"<!-- crop {size}^3 ready in {time.perf_counter() - t:.0f} s -->", flush=True)
        base = {"folder": str(folder), "item": item, "seed": args.seed}
        build = spawn({**base, "kind": "build"})
        runs = {"uncached": spawn({**base, "kind": "draws", "cache": False, "items": args.items}),
                "cached": spawn({**base, "kind": "draws", "cache": True, "items": args.cached_items}),
                "cached, page cache dropped": spawn({**base, "kind": "draws", "cache": True, "cold": True,
                                                     "items": args.cached_items})}
        results["crops"][size] = {"build": build, "runs": runs}
        print(f"### {size}^3 crop: 2 patches of {PATCH}^3 per draw, {N_CLASSES} classes, z-score\n")
        print("| pipeline | s per draw, median (min) | patches/s per worker | peak RSS MiB (over floor) | "
              + " | ".join(f"workers for {g} ({r:g} patches/s)" for g, r in GPU_RATES.items()) + " |")
        print("|---|---|---|---|" + "---|" * len(GPU_RATES))
        for name, r in runs.items():
            rate = 2 / r["s_per_item"]
            need = " | ".join(str(math.ceil(g / rate)) for g in GPU_RATES.values())
            print(f"| {name} | {r['s_per_item']:.2f} ({r['s_min']:.2f}) | {rate:.1f} | {r['peak_rss_mib']:.0f} "
                  f"({r['peak_rss_mib'] - floor:.0f}) | {need} |")
        b = build["bytes"]
        print(f"\none-off build: {build['seconds']:.1f} s, peak RSS {build['peak_rss_mib']:.0f} MiB "
              f"({build['peak_rss_mib'] - build['import_rss_mib']:.0f} over its imports: numpy, nibabel, the cache "
              f"module, no torch); on disk "
              f"{sum(b.values()) / 2**20:.1f} MiB ({', '.join(f'{k} {v / 2**20:.1f}' for k, v in sorted(b.items()))}) "
              f"against {build['nii_gz_bytes'] / 2**20:.1f} MiB of .nii.gz\n", flush=True)
    load1 = os.getloadavg()[0]
    print(f"floor (a process importing torch, monai, nibabel, the transforms): {floor:.0f} MiB; 1-min load "
          f"average before/after: {load0:.2f} / {load1:.2f} on {os.cpu_count()} cores")
    results.update(floor_mib=floor, load=[load0, load1])
    (out / "bench_loader.json").write_text(json.dumps(results, indent=1))
    print(f"\n<!-- raw figures: {out / 'bench_loader.json'} -->")
    return 0


if __name__ == "__main__":
    sys.exit(main())
