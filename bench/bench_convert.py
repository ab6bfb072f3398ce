"""Conversion throughput and peak memory for one large crop, against the I/O floor.

Baseline ("floor"): read the crop's EM region and its ``all`` array from zarr and write
both as NIfTI with nibabel, nothing else. Ours: ``convert_crop`` on the same crop (level
choice, chunk checks, label lookup, resampling, class counts, atomic writes). Both run
in fresh subprocesses in the same invocation, so the ratio is taken on one machine, one
page cache state and one store.

Cases:
* ``aligned``: GT and EM both 8 nm, crop on the EM grid (the common case);
* ``offgrid``: the crop's translation is not a multiple of the EM voxel size, so the EM
  is linearly interpolated (the worst case for the image path).

Usage::

    python bench/bench_convert.py [--size 512] [--repeats 2] [--out bench/out]

Figures go to stdout as a Markdown table; paste them into bench/RESULTS.md with the
machine description printed above the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_store(path: Path, size: int, offset_nm: float) -> dict:
    """A one-crop CellMap store: EM (s0, 8 nm) with texture, GT ``all`` + two classes."""
    import numcodecs
    import zarr

    if (path / ".done").exists():
        return json.loads((path / ".done").read_text())
    rng = np.random.default_rng(0)
    em_shape = (size + 32,) * 3
    root = zarr.open_group(str(path), mode="w")
    comp = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
    em = root.create_group("recon-1/em/fibsem-uint8")
    em.attrs["multiscales"] = [{"version": "0.4", "name": "fibsem-uint8", "axes": [
        {"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [8.0] * 3}, {"type": "translation", "translation": [0.0] * 3}]}]}]
    arr = em.create_dataset("s0", shape=em_shape, chunks=(64, 64, 64), dtype="u1", compressor=comp)
    yy, xx = np.meshgrid(np.arange(em_shape[1]), np.arange(em_shape[2]), indexing="ij")
    for z in range(0, em_shape[0], 64):
        zz = np.arange(z, min(z + 64, em_shape[0]))[:, None, None]
        base = 140 + 40 * np.sin(zz / 9.0) * np.cos(yy / 13.0) * np.sin(xx / 7.0)
        noise = rng.normal(0, 12, (len(zz),) + em_shape[1:])
        arr[z : z + len(zz)] = np.clip(base + noise, 0, 255).astype(np.uint8)
    t = 16 * 8.0 + offset_nm
    crop = root.create_group("recon-1/labels/groundtruth/crop1")
    crop.attrs["cellmap"] = {"annotation": {"class_names": ["mito_mem", "mito_lum", "mito"], "version": "0.1.1"}}
    ms = lambda name: [{"version": "0.4", "name": name, "axes": [
        {"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [8.0] * 3}, {"type": "translation", "translation": [t] * 3}]}]}]
    labels = {}
    for name, cid in (("all", None), ("mito_mem", 3), ("mito_lum", 4), ("mito", 50)):
        g = crop.create_group(name)
        g.attrs["multiscales"] = ms(name)
        kind = "instance_segmentation" if name == "mito" else "semantic_segmentation"
        if name != "all":
            g.attrs["cellmap"] = {"annotation": {"class_name": name, "annotation_type": {"type": kind}}}
        labels[name] = g.create_dataset("s0", shape=(size,) * 3, chunks=(64, 64, 64), dtype="u1", compressor=comp)
        if name != "all":
            labels[name].attrs["cellmap"] = {"annotation": {"class_name": name, "complement_counts": {"absent": 0}}}
    zz, yy, xx = np.ogrid[:64, :size, :size]
    for z in range(0, size, 64):
        r = np.sqrt(((zz + z) % 48 - 24) ** 2 + (yy % 48 - 24) ** 2 + (xx % 48 - 24) ** 2)
        all_ = np.where(r < 14, 4, np.where(r < 17, 3, 0)).astype(np.uint8)
        labels["all"][z : z + 64] = all_
        labels["mito_mem"][z : z + 64] = all_ == 3
        labels["mito_lum"][z : z + 64] = all_ == 4
        labels["mito"][z : z + 64] = all_ > 0
    info = {"size": size, "translation": t, "em_start": 16}
    (path / ".done").write_text(json.dumps(info))
    return info


FLOOR = """
import json, os, resource, sys, time
def peak_kib():
    # VmHWM is this process's own high-water mark; ru_maxrss survives exec, so a child of a
    # parent that just built a 512^3 store reports the parent's peak (seen: 0 MiB "over baseline")
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.path.insert(0, {root!r})
import nibabel as nib, numpy as np, zarr
from converters.geometry import Grid, nifti_affine
root = zarr.open_group({store!r}, mode="r")
rss0 = peak_kib()
t0 = time.perf_counter()
s, a = {size}, {start}
img = root["recon-1/em/fibsem-uint8/s0"][a:a+s, a:a+s, a:a+s]
lab = root["recon-1/labels/groundtruth/crop1/all/s0"][:]
g = Grid(({t},)*3, (8.0,)*3, (s,)*3)
nib.save(nib.Nifti1Image(img.T, nifti_affine(g)), os.path.join({out!r}, "floor_img.nii.gz"))
nib.save(nib.Nifti1Image(lab.T, nifti_affine(g)), os.path.join({out!r}, "floor_lab.nii.gz"))
dt = time.perf_counter() - t0
print(json.dumps({{"seconds": dt, "peak_rss_mb": peak_kib() / 1024,
                  "base_rss_mb": rss0 / 1024}}))
"""

OURS = """
import json, os, resource, sys, time
def peak_kib():
    # VmHWM is this process's own high-water mark; ru_maxrss survives exec, so a child of a
    # parent that just built a 512^3 store reports the parent's peak (seen: 0 MiB "over baseline")
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.path.insert(0, {root!r})
from converters.cellmap.zarr_tree import CropSource
from converters.cellmap.class_mapping import build_class_table
from converters.cellmap.convert import ConvertSettings, convert_crop
os.makedirs(os.path.join({out!r}, "images"), exist_ok=True)
os.makedirs(os.path.join({out!r}, "labels"), exist_ok=True)
src = CropSource("bench", 1, {store!r}, "recon-1/em/fibsem-uint8", {store!r}, "recon-1/labels/groundtruth/crop1")
settings = ConvertSettings((8.0, 8.0, 8.0), class_table=build_class_table(["mito_mem", "mito_lum", "mito"]))
rss0 = peak_kib()
t0 = time.perf_counter()
rec = convert_crop(src, settings, {out!r})
dt = time.perf_counter() - t0
assert rec["verdict"] == "converted", rec
print(json.dumps({{"seconds": dt, "peak_rss_mb": peak_kib() / 1024,
                  "base_rss_mb": rss0 / 1024}}))
"""


def run(code: str) -> dict:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512, help="crop edge in voxels (the crop is size^3)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side; the best time is kept")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"), help="scratch folder (stores and outputs)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = args.size**3
    out_mb = 2 * n / 2**20  # uint8 image + uint8 label
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
          f"{platform.platform()}")
    print(f"crop: {args.size}^3 voxels, uint8 image + uint8 label = {out_mb:.0f} MiB of output voxels\n")
    print("| case | side | best s | MB/s (output voxels) | peak RSS over baseline MiB | x output size |")
    print("|---|---|---|---|---|---|")
    for case, offset in (("aligned", 0.0), ("offgrid", 3.0)):
        store = out / f"store_{case}_{args.size}.zarr"
        t = time.perf_counter()
        info = make_store(store, args.size, offset)
        if time.perf_counter() - t > 1:
            print(f"<!-- built {store} in {time.perf_counter() - t:.0f} s -->")
        results = {}
        for side, code in (("floor", FLOOR), ("ours", OURS)):
            runs = []
            for _ in range(args.repeats):
                work = out / f"work_{side}"
                work.mkdir(exist_ok=True)
                runs.append(run(code.format(root=str(ROOT), store=str(store), out=str(work), size=args.size,
                                            start=info["em_start"], t=info["translation"])))
            best = min(runs, key=lambda r: r["seconds"])
            mem = max(r["peak_rss_mb"] - r["base_rss_mb"] for r in runs)
            results[side] = best
            print(f"| {case} | {side} | {best['seconds']:.2f} | {out_mb / best['seconds']:.0f} | {mem:.0f} "
                  f"| {mem / out_mb:.2f} |")
        print(f"| {case} | **ratio ours/floor** | **{results['ours']['seconds'] / results['floor']['seconds']:.2f}** "
              "| | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
