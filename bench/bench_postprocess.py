"""Instance post-processing on a synthetic 512³ probability map: ours vs the common recipe.

Data: ``--objects`` balls (radii ``--rmin``..``--rmax`` voxels) in a ``--size``³ volume;
a fraction ``--touch`` of them is placed overlapping an earlier ball (centres 0.7-0.9 ×
the sum of the radii apart), the others anywhere with no overlap. Where two balls
overlap, each voxel goes to the ball whose centre is nearer relative to its radius, so
the truth is one instance id per ball and touching objects share a face. The
probability map is the Gaussian-smoothed (σ 1 voxel) union of the balls plus smoothed
Gaussian noise of standard deviation ``--noise``, clipped to [0, 1]: the boundary
between touching objects is *not* background, so thresholding alone merges them, and
the noise leaves small specks and rough surfaces.

Methods, all on ``prob`` with the same voxel spacing and size threshold, timed from the
probability map to the final ids:

* **ours**: ``auto3dseg.postprocess.label_instances(prob > threshold, spacing, ...)``
  with the parameters of ``--cls`` from ``auto3dseg/resources/postprocess.yaml``
  (watershed split, h-maxima merge, vectorised size filter, renumbering).
* **ours, no split**: the same with ``watershed=False`` (shows what the split brings).
* **seeds + skimage watershed**: the same threshold, components, distance map and seeds
  (``distance_maxima``), then one ``skimage.segmentation.watershed(-dist, markers,
  mask=mask)`` over the whole volume, our size filter and renumbering; no h-maxima merge.
  What the straightforward whole-volume watershed costs (one repeat).
* **common recipe**: threshold > 0.5, ``cc3d.connected_components``, a size filter
  that loops over every id in Python (``for i in ids: if (labels == i).sum() <
  min_size: labels[labels == i] = 0``), then connected components again.

Score: instance F1 at IoU >= 0.5 against the truth, with one-to-one matching (pairs
sorted by IoU, each object used once); overlaps come from one contingency count over
the foreground voxels (``fastremap.unique`` of paired ids), never from per-object loops
over the volume.

If the common recipe's loop would run past ``--baseline-limit-s`` it stops there, and
its time is extrapolated linearly from the ids done (printed as such; F1 then not
scored).

Usage::

    .venv/bin/python bench/bench_postprocess.py            # 512³, 1,000 objects (~2 min on 2 cores)
    .venv/bin/python bench/bench_postprocess.py --quick    # 192³, 60 objects (~3 s)

Figures go to stdout as a Markdown table (and to ``<out>/bench_postprocess.json``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cc3d
import fastremap
from scipy import ndimage as ndi

from auto3dseg.postprocess import (
    distance_maxima,
    label_instances,
    load_postprocess_params,
    params_for,
    remove_small_objects,
    voxels_for_volume,
)


# ----------------------------------------------------------------------------- data
def make_truth(size: int, n_objects: int, rmin: float, rmax: float, touch: float,
               rng: np.random.Generator) -> np.ndarray:
    """Instance ids (uint16) of balls, a fraction ``touch`` of them overlapping another."""
    shape = np.array([size] * 3)
    centres = np.empty((n_objects, 3))
    radii = np.empty(n_objects)
    k = 0
    for _ in range(200 * n_objects):
        if k == n_objects:
            break
        r = rng.uniform(rmin, rmax)
        if k and rng.random() < touch:
            j = rng.integers(k)
            v = rng.normal(size=3)
            c = centres[j] + v / np.linalg.norm(v) * (radii[j] + r) * rng.uniform(0.7, 0.9)
        else:
            c = rng.uniform(r, shape - 1 - r)
        if np.any(c < r) or np.any(c > shape - 1 - r):
            continue
        if k and np.any(np.linalg.norm(centres[:k] - c, axis=1) < 0.7 * (radii[:k] + r)):
            continue
        centres[k], radii[k] = c, r
        k += 1
    truth = np.zeros(shape, dtype=np.uint16)
    nearest = np.full(shape, np.inf, dtype=np.float32)  # distance to the owner's centre / its radius
    for i in range(k):  # data generation only: one small box per ball
        c, r = centres[i], radii[i]
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        grid = np.ogrid[box]
        d = (np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grid, c))) / r).astype(np.float32)
        mine = (d <= 1) & (d < nearest[box])
        truth[box][mine] = i + 1
        nearest[box][mine] = d[mine]
    return truth


def make_probability(truth: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Smoothed union of the objects + smoothed noise of std ``noise``, in [0, 1] (float32)."""
    prob = ndi.gaussian_filter((truth > 0).astype(np.float32), 1.0)
    speckle = ndi.gaussian_filter(rng.standard_normal(truth.shape, dtype=np.float32), 1.0)
    prob += speckle * np.float32(noise / speckle.std())
    return np.clip(prob, 0, 1, out=prob)


# ----------------------------------------------------------------------------- methods
def common_recipe(prob: np.ndarray, min_size: int, limit_s: float) -> tuple[np.ndarray | None, dict]:
    """Threshold, components, per-id Python size filter, components again."""
    t0 = time.perf_counter()
    labels, n = cc3d.connected_components(prob > 0.5, connectivity=26, return_N=True)
    t_loop = time.perf_counter()
    done = 0
    for i in range(1, n + 1):
        if (labels == i).sum() < min_size:
            labels[labels == i] = 0
        done += 1
        if time.perf_counter() - t0 > limit_s:
            break
    loop_s = time.perf_counter() - t_loop
    info = {"ids": int(n), "ids_done": done}
    if done < n:
        info["extrapolated"] = True
        info["seconds"] = (t_loop - t0) + loop_s * n / done
        return None, info
    labels = cc3d.connected_components(labels > 0, connectivity=26)
    info["seconds"] = time.perf_counter() - t0
    info["extrapolated"] = False
    return labels, info


def skimage_watershed(prob: np.ndarray, threshold: float, spacing: tuple[float, ...], min_distance_nm: float,
                      min_size: int) -> np.ndarray:
    """Our seeds, then one skimage watershed over the whole volume (no h-maxima merge)."""
    import edt
    from skimage.segmentation import watershed

    mask = prob > threshold
    labels = cc3d.connected_components(mask, connectivity=26)
    dist = edt.edt(mask.view(np.uint8), anisotropy=spacing)
    seeds = distance_maxima(dist, labels, spacing, min_distance_nm)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers.ravel()[seeds] = np.arange(1, seeds.size + 1, dtype=np.int32)
    basins = watershed(np.negative(dist), markers, mask=mask, connectivity=3)
    basins = remove_small_objects(basins, min_size, in_place=True)
    return fastremap.renumber(basins, in_place=True)[0]


# ----------------------------------------------------------------------------- scoring
def instance_f1(truth: np.ndarray, pred: np.ndarray, iou_min: float = 0.5) -> dict:
    """F1 with one-to-one matching at IoU >= ``iou_min`` (greedy by IoU on the pairs)."""
    t_ids, t_cnt = fastremap.unique(truth, return_counts=True)
    p_ids, p_cnt = fastremap.unique(pred, return_counts=True)
    t_size = dict(zip(t_ids.tolist(), t_cnt.tolist()))
    p_size = dict(zip(p_ids.tolist(), p_cnt.tolist()))
    n_true, n_pred = int((t_ids > 0).sum()), int((p_ids > 0).sum())
    both = np.flatnonzero((truth > 0) & (pred > 0))
    key = truth.ravel()[both].astype(np.uint64) << np.uint64(32) | pred.ravel()[both].astype(np.uint64)
    pairs, inter = fastremap.unique(key, return_counts=True)
    t_of = (pairs >> np.uint64(32)).astype(np.int64)
    p_of = (pairs & np.uint64(0xFFFFFFFF)).astype(np.int64)
    union = np.array([t_size[t] for t in t_of.tolist()]) + np.array([p_size[p] for p in p_of.tolist()]) - inter
    iou = inter / np.maximum(union, 1)
    cand = np.flatnonzero(iou >= iou_min)
    cand = cand[np.argsort(-iou[cand], kind="stable")]
    used_t: set[int] = set()
    used_p: set[int] = set()
    for c in cand.tolist():  # pairs above the IoU bar: about one per object
        if t_of[c] not in used_t and p_of[c] not in used_p:
            used_t.add(int(t_of[c]))
            used_p.add(int(p_of[c]))
    tp = len(used_t)
    fp, fn = n_pred - tp, n_true - tp
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return {"n_true": n_true, "n_pred": n_pred, "tp": tp, "fp": fp, "fn": fn, "f1": f1}


# ----------------------------------------------------------------------------- machine
def machine() -> dict:
    import edt
    import scipy
    import skimage

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "scikit-image": skimage.__version__, "cc3d": _version("connected-components-3d"),
                "fastremap": _version("fastremap"), "edt": getattr(edt, "__version__", _version("edt"))}
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(ram, 1), "os": platform.platform(),
            "date": datetime.date.today().isoformat(), "versions": versions, "load_avg": os.getloadavg()}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="side of the cubic volume in voxels (default 512)")
    ap.add_argument("--objects", type=int, default=1000, help="number of balls in the truth (default 1000)")
    ap.add_argument("--rmin", type=float, default=6.0, help="smallest ball radius, voxels (default 6)")
    ap.add_argument("--rmax", type=float, default=14.0, help="largest ball radius, voxels (default 14)")
    ap.add_argument("--touch", type=float, default=0.5,
                    help="fraction of balls placed overlapping an earlier one (default 0.5)")
    ap.add_argument("--noise", type=float, default=0.10,
                    help="standard deviation of the smoothed noise added to the probability map (default 0.10)")
    ap.add_argument("--spacing", type=float, default=8.0, help="isotropic voxel size in nm (default 8)")
    ap.add_argument("--cls", default="lyso",
                    help="class whose parameters in resources/postprocess.yaml are used: threshold, size and split "
                         "for ours, the size for the common recipe (default lyso)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of our methods; best is reported (default 3)")
    ap.add_argument("--parallel", type=int, default=1, help="threads for our distance transform (default 1)")
    ap.add_argument("--baseline-limit-s", type=float, default=900.0,
                    help="stop the common recipe's per-id loop after this many seconds and extrapolate its "
                         "time linearly (reported as extrapolated; default 900)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data (default 0)")
    ap.add_argument("--quick", action="store_true", help="small smoke run: 192³, 60 objects, 1 repeat")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out"), help="folder for bench_postprocess.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.objects, args.repeats = 192, 60, 1

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB, {info['os']}, {info['date']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))

    rng = np.random.default_rng(args.seed)
    t = time.perf_counter()
    truth = make_truth(args.size, args.objects, args.rmin, args.rmax, args.touch, rng)
    prob = make_probability(truth, args.noise, rng)
    touching = {int(x) for pair in cc3d.contacts(truth, connectivity=6) for x in pair}
    print(f"data: {args.size}³, {int(truth.max())} objects ({len(touching)} touching another), "
          f"{(truth > 0).mean():.1%} foreground, made in {time.perf_counter() - t:.1f} s")

    params = params_for(load_postprocess_params(), args.cls)
    spacing = (args.spacing,) * 3
    min_size = voxels_for_volume(params["min_size_nm3"], spacing)
    kwargs = {k: params[k] for k in ("connectivity", "min_size_nm3", "min_distance_nm", "h_nm")}
    print(f"parameters ({args.cls}): {params}; min size {min_size} voxels")

    rows = []
    for name, split in (("ours", True), ("ours, no split", False)):
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            pred = label_instances(prob > params["threshold"], spacing, watershed=split, parallel=args.parallel,
                                   **kwargs)
            times.append(time.perf_counter() - t)
        rows.append({"method": name, "seconds": min(times), "seconds_all": times, "dtype": pred.dtype.name,
                     **instance_f1(truth, pred)})
        print(rows[-1])
        del pred
    t = time.perf_counter()
    pred = skimage_watershed(prob, params["threshold"], spacing, params["min_distance_nm"], min_size)
    rows.append({"method": "seeds + skimage watershed", "seconds": time.perf_counter() - t,
                 "dtype": pred.dtype.name, **instance_f1(truth, pred)})
    print(rows[-1])
    del pred
    pred, binfo = common_recipe(prob, min_size, args.baseline_limit_s)
    row = {"method": "common recipe", "seconds": binfo["seconds"], "ids": binfo["ids"],
           "ids_done": binfo["ids_done"], "extrapolated": binfo["extrapolated"]}
    if pred is not None:
        row.update(dtype=pred.dtype.name, **instance_f1(truth, pred))
    rows.append(row)
    print(rows[-1])

    base = rows[-1]["seconds"]
    print("\n| method | seconds | × faster than common recipe | objects found | TP | FP | FN | F1 @ IoU 0.5 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        secs = f"{r['seconds']:.1f}" + (" (extrapolated)" if r.get("extrapolated") else "")
        f1 = f"{r['f1']:.3f}" if "f1" in r else "n/a"
        print(f"| {r['method']} | {secs} | {base / r['seconds']:.1f} | {r.get('n_pred', 'n/a')} | "
              f"{r.get('tp', '')} | {r.get('fp', '')} | {r.get('fn', '')} | {f1} |")
    result = {"args": vars(args), "machine": info, "parameters": params, "min_size_voxels": min_size,
              "touching_objects": len(touching), "rows": rows, "load_avg_end": os.getloadavg()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_postprocess.json").write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
