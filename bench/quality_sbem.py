"""Quality on real data: segresnet on the shared SBEM mitochondria sample, z slices held out.

The sample (``../shared/data/em_sbem_mito``: one crop of 16 × 768 × 704 voxels at 40 × 6 × 6 nm,
mitochondria labelled) is cut along z: the first ``--train_slices`` slices train (in three
y-slabs: slab 0 validates, slabs 1-2 train, i.e. fold 0), the remaining slices are never seen
and are predicted at the end, by the whole pipeline (``run_auto3dseg.py --mode full`` with
``--budget`` iterations, then post-processing as ``--mode submit`` does it). Reported on the
held-out slices, in the same run:

* **ours**: semantic Dice of ``mito``, and instance F1 (one-to-one matching at IoU ≥ 0.5, 26-
  connected objects) after our post-processing (``auto3dseg.postprocess``: threshold, components,
  size filter in nm³ from ``resources/postprocess.yaml``);
* **Otsu**: ``skimage.filters.threshold_otsu`` on the held-out EM, the polarity chosen on the
  training slices (mitochondria are darker here), the same post-processing.

Figures go to stdout (Markdown) and ``bench/out/quality_sbem.json``. It is the figure later
changes to the engine must move.

Usage::

    .venv/bin/python bench/quality_sbem.py                    # 600 iterations, ~15 min on 2 cores
    .venv/bin/python bench/quality_sbem.py --budget 100       # a quick try
    .venv/bin/python bench/quality_sbem.py --isotropic        # the baseline: no anisotropy-aware network/patch
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT.parent / "shared" / "data" / "em_sbem_mito" / "sbem_mito.zarr"
SPACING_ZYX = (40.0, 6.0, 6.0)


def load_crop() -> tuple[np.ndarray, np.ndarray]:
    """EM and mito instance ids of crop1, both z, y, x on the crop's grid."""
    import zarr

    root = zarr.open(str(SAMPLE), mode="r")
    mito = root["recon-1/labels/groundtruth/crop1/mito"]
    ms = mito.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    scale = ms[0]["scale"]
    start = [int(round(t / s)) for t, s in zip(ms[1]["translation"], scale)]
    labels = np.asarray(mito["s0"][:])
    em = root["recon-1/em/fibsem-uint8/s0"]
    sl = tuple(slice(a, a + n) for a, n in zip(start, labels.shape))
    return np.asarray(em[sl]), labels


def _nifti(path: Path, zyx: np.ndarray) -> None:
    import nibabel as nib

    affine = np.diag([SPACING_ZYX[2], SPACING_ZYX[1], SPACING_ZYX[0], 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.T), affine), str(path))


def write_dataset(out: Path, em: np.ndarray, labels: np.ndarray, train_slices: int) -> Path:
    """NIfTI items and a datalist: three y-slabs of the training slices (fold 0 = slab 0), and
    the held-out slices as the testing item."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(exist_ok=True)
    training = []
    bounds = np.linspace(0, em.shape[1], 4).astype(int)
    for k in range(3):
        ys = slice(bounds[k], bounds[k + 1])
        _nifti(out / "images" / f"train{k}.nii.gz", em[:train_slices, ys])
        _nifti(out / "labels" / f"train{k}.nii.gz", (labels[:train_slices, ys] > 0).astype(np.uint8))
        training.append({"image": f"images/train{k}.nii.gz", "label": f"labels/train{k}.nii.gz",
                         "fold": 0 if k == 0 else 1, "annotated_mask": 1})
    _nifti(out / "images" / "heldout.nii.gz", em[train_slices:])
    datalist = {"name": "sbem_mito", "modality": "em", "num_folds": 2, "labels": {"0": "background", "1": "mito"},
                "class_table": [{"id": 1, "name": "mito", "cellmap_id": 50, "instance": True, "parts": []}],
                "training": training, "testing": [{"image": "images/heldout.nii.gz"}]}
    (out / "datalist.json").write_text(json.dumps(datalist, indent=1))
    return out / "datalist.json"


def scores(pred_mask: np.ndarray, truth_ids: np.ndarray) -> dict[str, float]:
    """Dice of the masks; F1 of post-processed objects against the truth's (IoU ≥ 0.5)."""
    import fastremap

    from auto3dseg.evaluation.cellseg import match_instances
    from auto3dseg.postprocess import label_instances, load_postprocess_params, params_for

    truth = truth_ids > 0
    dice = 2.0 * float((pred_mask & truth).sum()) / max(1.0, float(pred_mask.sum() + truth.sum()))
    p = params_for(load_postprocess_params(), "mito")
    pred_ids = label_instances(pred_mask, SPACING_ZYX, connectivity=26, min_size_nm3=p["min_size_nm3"],
                               watershed=p["watershed"], min_distance_nm=p["min_distance_nm"], h_nm=p["h_nm"])
    truth_seq = fastremap.renumber(np.ascontiguousarray(truth_ids))[0]
    tp, fp, fn = match_instances(truth_seq, pred_ids.astype(np.int64), 0.5)
    f1 = 2.0 * tp / max(1, 2 * tp + fp + fn)
    return {"dice": dice, "f1": f1, "objects": int(pred_ids.max()), "true_objects": int(truth_seq.max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="600", help="training iterations (or a time such as 20min); default 600")
    p.add_argument("--train_slices", type=int, default=10, help="z slices that train; the rest is held out (10)")
    p.add_argument("--init_filters", type=int, default=16, help="segresnet width (default 16: a CPU-sized net)")
    p.add_argument("--isotropic", action="store_true",
                   help="the baseline before anisotropy-aware bundles: network#resolution=null and the patch's z "
                        "rounded up to segresnet's isotropic multiple of 8 (padded slices)")
    p.add_argument("--work", default=None, help="scratch folder (default bench/out/quality_sbem[_isotropic])")
    args = p.parse_args(argv)
    tag = "quality_sbem_isotropic" if args.isotropic else "quality_sbem"
    args.work = args.work or str(ROOT / "bench" / "out" / tag)
    if not SAMPLE.is_dir():
        print(f"error: {SAMPLE} is absent: this benchmark needs ../shared/data/em_sbem_mito", file=sys.stderr)
        return 2
    import shutil

    import run_auto3dseg

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    em, labels = load_crop()
    datalist = write_dataset(work / "nifti", em, labels, args.train_slices)
    baseline: list[str] = []
    if args.isotropic:
        from auto3dseg.bundles.config import derive_patch_size

        train_xyz = [em.shape[2], int(np.ceil(em.shape[1] / 3)), args.train_slices]
        iso = derive_patch_size("segresnet", train_xyz, None, 96)
        baseline = ["--override", "segresnet:network#resolution=null",
                    "--override", f"segresnet:patch_size=[{','.join(str(v) for v in iso)}]"]
    t0 = time.perf_counter()
    rc = run_auto3dseg.main([*baseline, "--mode", "full", "--datalist", str(datalist), "--work_dir", str(work / "work_dir"),
                             "--workers", "0", "--algos", "segresnet", "--num_fold", "1", "--budget", str(args.budget),
                             "--patch_size", "96", "--override", "num_workers=0", "--override", "num_iterations_per_epoch=50",
                             "--override", f"segresnet:network#init_filters={args.init_filters}"])
    train_s = time.perf_counter() - t0
    if rc != 0:
        print(f"error: the pipeline exited {rc}", file=sys.stderr)
        return 1
    from auto3dseg.ensembling.probability_maps import open_probability_map

    import yaml

    hp = yaml.safe_load((work / "work_dir" / "segresnet_0" / "configs" / "hyper_parameters.yaml").read_text())
    patch, resolution = hp["patch_size"], hp["network"].get("resolution")
    for o in baseline[1::2]:  # train-time overrides: what the bundle actually trained with
        key, _, value = o.partition(":")[2].partition("=")
        if key == "patch_size":
            patch = yaml.safe_load(value)
        elif key == "network#resolution":
            resolution = yaml.safe_load(value)
    pmap = open_probability_map(work / "work_dir" / "ensemble_output" / "heldout_prob.zarr")
    ours_mask = pmap.mask(pmap.n_channels - 1 if pmap.n_channels == 1 else 1, 0.5)  # softmax: background, mito
    truth = labels[args.train_slices:]
    from skimage.filters import threshold_otsu

    t = threshold_otsu(em[args.train_slices:])
    train_truth = labels[: args.train_slices] > 0
    dark = float((em[: args.train_slices] < t)[train_truth].mean()) > 0.5
    otsu_mask = em[args.train_slices:] < t if dark else em[args.train_slices:] > t
    ours, otsu = scores(ours_mask, truth), scores(otsu_mask, truth)
    per_slice = [2.0 * float((ours_mask[z] & (truth[z] > 0)).sum()) / max(1.0, float(ours_mask[z].sum() +
                                                                                    (truth[z] > 0).sum()))
                 for z in range(truth.shape[0])]
    lines = [f"Held out: z slices {args.train_slices}..{em.shape[0] - 1} of crop1 ({truth.shape[0]} x "
             f"{truth.shape[1]} x {truth.shape[2]} voxels, {ours['true_objects']} objects); budget {args.budget} "
             f"iterations, segresnet init_filters {args.init_filters}, fold 0 of 2; {train_s / 60:.1f} min; "
             f"patch {patch} (x, y, z), network#resolution {resolution}.", "",
             "| method | Dice | instance F1 (IoU ≥ 0.5) | objects |", "|---|---|---|---|",
             f"| **ours** | **{ours['dice']:.3f}** | **{ours['f1']:.3f}** | {ours['objects']} |",
             f"| Otsu ({'dark' if dark else 'bright'}) + same post-processing | {otsu['dice']:.3f} | {otsu['f1']:.3f} | "
             f"{otsu['objects']} |", "",
             "Dice per held-out slice (ours): " + ", ".join(f"{d:.2f}" for d in per_slice)]
    print("\n".join(lines))
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{tag}.json").write_text(json.dumps({
        "when": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
        "args": vars(args), "ours": ours, "otsu": otsu, "per_slice_dice": per_slice, "train_seconds": train_s},
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
