"""Converting one CellMap crop: the converter's worker (:mod:`converters.cellmap.convert`).

A training crop becomes ``images/<name>.nii.gz`` (EM resampled linearly) and
``labels/<name>.nii.gz`` (the most specific selected class per voxel, nearest neighbour;
voxels nobody annotated are :data:`~converters.cellmap.class_mapping.UNANNOTATED`), a test crop
only its image. Each function returns the crop's record and never raises for a bad crop
(verdict ``failed`` with the reason naming the array and chunk); only a failing *output*
write (:class:`~converters.outputs.OutputError`: full disk, read-only folder) is raised,
since it stops every crop alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fastremap
import nibabel as nib
import numpy as np

from converters.cellmap import zarr_tree as cz
from converters.cellmap.class_mapping import UNANNOTATED, annotated_ids, cellmap_lookup, overlap_warnings, restrict_to_listed
from converters.datalist_writer import tile_name
from converters.cellmap.em_level import (UNREADABLE, EMChoice, choose_em_level, em_stamp, partial_level_stamps,
                                        refuse_annotation_as_em)
from converters.folds import SpatialSplit
from converters.geometry import (
    Grid,
    grid_from_extent,
    nifti_affine,
    output_grid,
    source_coordinates,
    split_into_fold_tiles,
)
from converters.cellmap.labels import LabelMapper, label_source
from converters.cellmap.multiscale_checks import check_level_extents
from converters.outputs import OutputError, atomic_write, atomic_write_json, source_stamp
from datalists.cellmap_classes import CELLMAP_CLASSES, LABEL_RULES
from converters.resample import resample_into

__all__ = ["ConvertSettings", "convert_crop", "convert_test_crop", "em_plan", "inspect_crop", "listed_classes",
           "worker"]


@dataclass
class ConvertSettings:
    """What determines the content of every output file (kept with the outputs)."""

    target_spacing: tuple[float, float, float] = (8.0, 8.0, 8.0)
    scale: str = "auto"
    max_voxels: int | None = None
    max_em_upsample: float = 2.0
    class_table: list[dict] = field(default_factory=list)

    def fingerprint(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]




def _write_nifti(path: Path, array_zyx: np.ndarray, grid: Grid, description: str) -> None:
    """Write a z, y, x array as an x, y, z NIfTI (no copy) under a temporary name, then rename."""
    img = nib.Nifti1Image(array_zyx.T, nifti_affine(grid))
    img.header["descrip"] = description[:79].encode()
    img.header.set_xyzt_units(xyz="unknown")
    img.set_qform(nifti_affine(grid), code=1)
    img.set_sform(nifti_affine(grid), code=1)
    atomic_write(path, lambda tmp: nib.save(img, str(tmp)))


def inspect_crop(src: cz.CropSource) -> tuple[Grid | None, dict[str, cz.ClassStatus], list[str]]:
    """A crop's :func:`~converters.cellmap.zarr_tree.crop_annotation`, restricted to the classes
    its ``datasplit.csv`` row lists (:func:`~converters.cellmap.class_mapping.restrict_to_listed`)."""
    grid, statuses, notes = cz.crop_annotation(cz.open_readonly(src.gt_zarr), src.gt_group)
    statuses, listed_notes = restrict_to_listed(statuses, src.requested_classes, src.listed_at or "datasplit.csv")
    return grid, statuses, notes + listed_notes


def listed_classes(src: cz.CropSource | cz.TestCrop) -> list[str] | None:
    """The classes a crop's datasplit row lists, as its record keeps them (None: no list)."""
    listed = getattr(src, "requested_classes", None)
    return None if listed is None else list(listed)


def source_fields(src: cz.CropSource | cz.TestCrop) -> dict:
    """Where a training crop's ground truth lives (``gt_zarr``, ``gt_group``): the truth of the
    cross-validated score. Empty for a test crop."""
    gt = getattr(src, "gt_zarr", None)
    return {"gt_zarr": str(Path(gt).resolve()), "gt_group": src.gt_group} if gt else {}


def gt_stamp(src: cz.CropSource | cz.TestCrop) -> list[int] | None:
    """:func:`~converters.outputs.source_stamp` of a training crop's ground-truth group (every
    class array's chunks): an annotation corrected in the store after the conversion is then
    converted again. None for a test crop (its EM is not stamped: too large to list)."""
    gt = getattr(src, "gt_zarr", None)
    return source_stamp([Path(gt) / src.gt_group]) if gt else None


def record_base(src: cz.CropSource | cz.TestCrop, kind: str) -> dict:
    """The record every crop starts with (verdict None until decided)."""
    return {"name": src.name, "dataset": src.dataset, "crop_id": src.crop_id, "kind": kind,
            "usage": getattr(src, "usage", "test"), "verdict": None, "reason": "", "detail": "",
            "warnings": [], "items": [], "listed_classes": listed_classes(src), **source_fields(src)}


def _convert_image_tile(em_arr: cz.CheckedArray, level: cz.Level, tile: Grid, crop: str) -> tuple[np.ndarray, int]:
    image = np.empty(tile.shape, dtype=em_arr.dtype)
    coords = source_coordinates(tile, level.translation, level.scale)
    padded = resample_into(em_arr, coords, image, "linear", pad_value=0)
    if image.dtype.kind == "f":
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise ValueError(f"{crop}: the EM array {em_arr.where} has non-finite (NaN/inf) values in this crop's "
                             f"region ({bad} output voxels); they cannot be normalised. Fix or re-export the EM, "
                             "or leave this crop out of the datasplit")
    return image, padded


def _constant_em(where: str, value) -> str:
    value = value.item() if hasattr(value, "item") else value
    return f"its EM ({where}) is constant in this crop's region: value {value} everywhere"


def _fail(rec: dict, exc: Exception, out_dir: Path) -> None:
    rec.update(verdict="failed", reason="error", detail=f"{type(exc).__name__}: {exc}",
               traceback=traceback.format_exc(limit=4))
    cleanup_items(out_dir, rec)


def convert_crop(src: cz.CropSource, settings: ConvertSettings, output_dir: str | os.PathLike,
                 inspected: tuple | None = None, split: SpatialSplit | None = None) -> dict:
    """Convert one training crop; return its record (verdict, items, statistics).

    ``inspected`` is the crop's :func:`~converters.cellmap.zarr_tree.crop_annotation` result
    when the caller already has it (it lists every class array's chunks: not worth twice).
    ``split`` cuts the crop into spatial folds (slabs ``split.gap`` voxels apart); each
    item then records its ``part``. Never raises for a bad crop: the record's verdict is
    ``"failed"`` with the reason. Raises :class:`~converters.outputs.OutputError` when
    an output file cannot be written.
    """
    rec = record_base(src, "train")
    rec["split"] = split.to_dict() if split else None
    rec["source_stamp"] = gt_stamp(src)  # before reading: an edit during the conversion is seen next time
    t0 = time.perf_counter()
    try:
        _convert_crop(src, settings, Path(output_dir), rec, inspected, split)
    except OutputError:
        cleanup_items(Path(output_dir), rec)
        raise
    except Exception as exc:  # one bad crop must not abort the batch
        _fail(rec, exc, Path(output_dir))
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def cleanup_items(out_dir: Path, rec: dict) -> None:
    """Remove a record's written images and labels, and forget them."""
    for item in rec.get("items", []):
        for key in ("image", "label"):
            if key in item:
                (out_dir / item[key]).unlink(missing_ok=True)
    rec["items"] = []


def _skip(rec: dict, reason: str, detail: str) -> dict:
    rec.update(verdict="failed" if reason == UNREADABLE else "skipped", reason=reason, detail=detail)
    return rec


def _use_em(rec: dict, choice: EMChoice) -> bool:
    """Record the EM choice; False (and the crop skipped or failed) when there is none."""
    rec["em_coverage"] = dict(choice.coverage)
    if choice.unreadable:
        rec["em_levels_unreadable"] = dict(choice.unreadable)
    if choice.level is None:
        _skip(rec, choice.reason, choice.detail)
        return False
    rec["warnings"].extend(choice.warnings)
    rec.update(em_level=choice.level.path, em_voxel_size=list(choice.level.scale), em_upsample=choice.upsample)
    return True


def _open_em(src: cz.CropSource | cz.TestCrop, out: Grid, settings: ConvertSettings, rec: dict):
    em = cz.open_readonly(src.em_zarr)
    if src.em_group not in em:
        raise cz.CellMapFormatError(f"{src.em_zarr}/{src.em_group}: EM group not found (no EM under recon-*/em/); "
                                    "download the dataset's EM (or fix the raw dataset column of the datasplit)")
    refuse_annotation_as_em(src.name, em, src.em_zarr, src.em_group)
    where = f"{src.em_zarr}/{src.em_group}"
    group = em[src.em_group]
    levels = cz.read_levels(group, where)
    check_level_extents(group, levels, where, cz.CellMapFormatError)
    choice = choose_em_level(group, levels, out, settings.target_spacing, settings.scale,
                             settings.max_em_upsample, where=where)
    if not _use_em(rec, choice):
        return None, None
    return cz.CheckedArray(group[choice.level.path], f"{where}/{choice.level.path}"), choice.level


def em_plan(src: cz.CropSource | cz.TestCrop, out: Grid, settings: ConvertSettings) -> dict:
    """What the conversion would do with a crop's EM, from metadata and chunk listings only (what
    ``--dry_run`` shows): ``{"em_level", "em_upsample"}``, or ``{"verdict", "reason", "detail"}``
    of the skip or failure the conversion would record."""
    rec: dict = {"warnings": []}
    try:
        arr, _ = _open_em(src, out, settings, rec)
    except cz.CellMapFormatError as exc:
        return {"verdict": "failed", "reason": "em_format", "detail": str(exc)}
    keys = ("em_level", "em_upsample", "warnings") if arr is not None else ("verdict", "reason", "detail")
    return {k: rec[k] for k in keys if k in rec}


def labels_plan(src: cz.CropSource, statuses: dict, grid: Grid | None) -> dict:
    """What the conversion would say of a crop's labels, from metadata and chunk listings only
    (``--dry_run``): ``{}`` when they can be read, else the failure it would record (a float
    label array, class arrays off the crop's grid, ...)."""
    try:
        label_source(cz.open_readonly(src.gt_zarr), src.gt_group, statuses, grid)
    except cz.CellMapFormatError as exc:
        return {"verdict": "failed", "reason": "error", "detail": f"{type(exc).__name__}: {exc}"}
    return {}


def _record_unknown(rec: dict, mapper: LabelMapper, how: str) -> None:
    rec["unannotated_voxels"] = int(sum(mapper.counts.values()))
    rec["unknown_label_values"] = {str(v): n for v, n in sorted(mapper.counts.items())}
    if mapper.counts:
        values = ", ".join(f"{v} ({n} voxels)" for v, n in sorted(mapper.counts.items()))
        rec["warnings"].append(
            f"label values that are no CellMap class (255: unknown) in the {how}: {values}; written as "
            f"{UNANNOTATED} (not annotated: left out of training), not as background")


def _convert_crop(src: cz.CropSource, settings: ConvertSettings, out_dir: Path, rec: dict,
                  inspected: tuple | None, split: SpatialSplit | None) -> None:
    gt = cz.open_readonly(src.gt_zarr)
    if src.gt_group not in gt:
        raise cz.CellMapFormatError(f"{src.gt_zarr}/{src.gt_group}: crop group not found")
    gt_grid, statuses, notes = inspected if inspected is not None else inspect_crop(src)
    rec["warnings"].extend(notes)
    rec["annotated"] = sorted(n for n, s in statuses.items() if s.annotated)
    rec["not_annotated"] = {n: s.reason for n, s in sorted(statuses.items()) if not s.annotated}
    rec["foreign_arrays"] = sorted(n for n in statuses if n not in CELLMAP_CLASSES)  # said, never converted
    if gt_grid is None:
        if any(s.reason == "no multiscales" for s in statuses.values()):  # arrays there, none readable: damaged
            rec.update(verdict="failed", reason="no_ground_truth", detail="no class array of the crop can be read: "
                       + "; ".join(notes[:3]))
            return rec
        return _skip(rec, "no_ground_truth", "the crop has no readable class array (no multiscales with an s0 level)")
    rec["gt_voxel_size"], rec["gt_translation"] = list(gt_grid.spacing), list(gt_grid.origin)
    rec["gt_shape"] = list(gt_grid.shape)
    if not rec["annotated"]:
        return _skip(rec, "nothing_annotated",
                     "no class is annotated in this crop (every class is all unknown or has no data)")
    ids = annotated_ids(statuses, settings.class_table)
    rec["annotated_ids"] = ids
    if not ids:
        return _skip(rec, "no_selected_class",
                     f"the crop annotates {rec['annotated']}, none of which is among the selected classes")

    out = output_grid(gt_grid, settings.target_spacing)
    rec["output_grid"] = {"origin": list(out.origin), "spacing": list(out.spacing), "shape": list(out.shape)}
    em_arr, level = _open_em(src, out, settings, rec)
    if em_arr is None:
        return None
    rec["em_stamp"] = em_stamp(src.em_zarr, src.em_group, level.path, out)
    if partial := partial_level_stamps(src.em_zarr, src.em_group, rec["em_coverage"], out):
        rec["em_partial_stamps"] = partial
    label_src, how = label_source(gt, src.gt_group, statuses, gt_grid)
    if label_src is None:
        return _skip(rec, "nothing_annotated", "annotated classes have no readable array")
    overlaps = overlap_warnings([n for n in rec["annotated"] if n in {r["name"] for r in settings.class_table}])
    if how.startswith("all"):  # composed labels hold what overlapping classes share; `all` cannot
        rec["warnings"].extend(overlaps)
        if "not on disk" in how:
            rec["warnings"].append(f"labels read from the {how}: no class array to check it against; if the download "
                                   "was cut short, fetch the crop again")
    elif overlaps or (overlaps := overlap_warnings(rec["annotated"])):  # unselected classes too: `all` was not read
        rec["warnings"].append(f"labels composed from {how}: the crop annotates classes that overlap (e.g. "
                               f"{overlaps[0].split(' are both')[0]}), which one value per voxel of 'all' cannot hold; "
                               "the voxels in both take the class of what they share")
    else:
        rec["warnings"].append(f"labels composed from {how}" + ("" if " lacks " in how else " (no 'all' array with data)"))
    mapper = LabelMapper(cellmap_lookup(settings.class_table))
    tiles = (split_into_fold_tiles(out.shape, settings.max_voxels, split.parts, split.gap, split.axis) if split
             else split_into_fold_tiles(out.shape, settings.max_voxels))
    n_pad = n_written = 0
    counts = np.zeros(len(settings.class_table) + 1, dtype=np.int64)
    lo_hi = [np.inf, -np.inf]
    for i, (start, stop, part) in enumerate(tiles):
        tile = out.sub_grid(start, stop)
        image, padded = _convert_image_tile(em_arr, level, tile, src.name)
        n_pad += padded
        n_written += tile.n_voxels
        lo, hi = fastremap.minmax(image)
        lo_hi = [min(lo_hi[0], lo), max(lo_hi[1], hi)]
        label = np.empty(tile.shape, dtype=mapper.lut.dtype)
        lcoords = source_coordinates(tile, gt_grid.origin, gt_grid.spacing)
        resample_into(label_src, lcoords, label, "nearest", pad_value=0, post=mapper)
        values, n = fastremap.unique(label, return_counts=True)
        keep = values < counts.size
        np.add.at(counts, values[keep].astype(np.int64), n[keep])
        name = tile_name(src.name, i, len(tiles))
        item = {"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz",
                "tile_start": list(start), "tile_stop": list(stop), "part": part,
                "origin": list(tile.origin), "shape": list(tile.shape)}
        desc = f"{src.name} nm x,y,z"
        rec["items"].append(item)
        _write_nifti(out_dir / item["image"], image, tile, desc)
        _write_nifti(out_dir / item["label"], label, tile, desc)
        del image, label
    if lo_hi[0] == lo_hi[1]:
        cleanup_items(out_dir, rec)
        rec.update(verdict="failed", reason="constant_image", detail=_constant_em(em_arr.where, lo_hi[0])
                   + "; nothing to learn. Check that EM level (a region never written reads as its fill value) "
                   "or leave this crop out of the datasplit")
        return rec
    rec["padded_fraction"] = round(n_pad / max(1, n_written), 4)
    if rec["padded_fraction"] > 0:
        rec["warnings"].append(f"{rec['padded_fraction']:.1%} of the crop lies outside the EM volume (padded with 0)")
    _record_unknown(rec, mapper, how)
    names = ["background"] + [r["name"] for r in settings.class_table]
    rec["class_voxels"] = {n: int(c) for n, c in zip(names, counts) if c}
    rec["tiled"] = len(tiles) > 1
    rec["verdict"] = "converted"


def convert_test_crop(src: cz.TestCrop, settings: ConvertSettings, output_dir: str | os.PathLike) -> dict:
    """Convert a test crop's EM (no labels) on the union of its labels' boxes."""
    rec = record_base(src, "test")
    rec["test_labels"] = [dict(lbl, voxel_size=list(lbl["voxel_size"]), translation=list(lbl["translation"]),
                               shape=list(lbl["shape"])) for lbl in src.labels]
    t0 = time.perf_counter()
    out_dir = Path(output_dir)
    try:
        _convert_test_crop(src, settings, out_dir, rec)
    except OutputError:
        cleanup_items(out_dir, rec)
        raise
    except Exception as exc:  # one bad crop must not abort the batch
        _fail(rec, exc, out_dir)
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def _convert_test_crop(src: cz.TestCrop, settings: ConvertSettings, out_dir: Path, rec: dict) -> None:
    lows, highs = [], []
    for lbl in src.labels:
        g = Grid(lbl["translation"], lbl["voxel_size"], lbl["shape"])
        lows.append(g.lower_edge)
        highs.append(g.upper_edge)
    out = grid_from_extent(np.min(lows, axis=0), np.max(highs, axis=0), settings.target_spacing)
    rec["output_grid"] = {"origin": list(out.origin), "spacing": list(out.spacing), "shape": list(out.shape)}
    em_arr, level = _open_em(src, out, settings, rec)
    if em_arr is None:
        return
    rec["em_stamp"] = em_stamp(src.em_zarr, src.em_group, level.path, out)
    if partial := partial_level_stamps(src.em_zarr, src.em_group, rec["em_coverage"], out):
        rec["em_partial_stamps"] = partial
    image, padded = _convert_image_tile(em_arr, level, out, src.name)
    lo, hi = fastremap.minmax(image)
    if lo == hi:  # still converted: the submission needs a prediction for every test crop
        rec["constant_em"] = lo.item() if hasattr(lo, "item") else lo
        rec["warnings"].append(_constant_em(em_arr.where, lo) + "; converted anyway (a prediction is "
                               "still needed), but it will find nothing: check that EM level")
    item = {"image": f"images/{src.name}.nii.gz", "origin": list(out.origin), "shape": list(out.shape)}
    rec["items"].append(item)
    _write_nifti(out_dir / item["image"], image, out, f"{src.name} nm x,y,z")
    rec["padded_fraction"] = round(padded / out.n_voxels, 4)
    rec["verdict"] = "converted"


def worker(job: tuple) -> dict:
    """Convert one job ``(kind, src, settings, output_dir, inspected, split)``; keep its record."""
    kind, src, settings, output_dir, inspected, split = job
    if kind == "train":
        rec = convert_crop(src, settings, output_dir, inspected, split)
    else:
        rec = convert_test_crop(src, settings, output_dir)
    rec["settings_fingerprint"] = settings.fingerprint()
    rec["label_rules"] = LABEL_RULES
    # a failed crop's record too: a re-run tries it again, but plans folds as this run ended up doing
    atomic_write_json(Path(output_dir) / "records" / f"{rec['name']}.json", rec)
    return rec
