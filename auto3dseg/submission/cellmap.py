"""``--mode submit``: ensemble probabilities → labels → the CellMap submission.

For every test crop: read the ensemble's per-class probability map, turn it into labels
(:mod:`auto3dseg.postprocess`: thresholds, groups, instances), move each label from the
image's grid to the grid the test manifest asks for (voxel size, translation, shape;
nearest for instance ids, linear then > 0.5 for semantic masks) and write
``submission.zarr/crop<N>/<label>`` with ``voxel_size``/``translation``/``shape`` attrs in
z, y, x order. Every (crop, label) of the manifest is written: labels the model does not
predict, or crops without an image, are written empty and listed in the report. The store
is built under a temporary name, renamed, then zipped (temporary name, renamed).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
import zipfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from auto3dseg.ensembling.probability_maps import maps_signature, read_map_manifest
from auto3dseg.orchestration.workdir import moved_key
from auto3dseg.ensembling.progress import bar_safe
from auto3dseg.submission.placement import grid_of, outside_share, place_on_grid
from auto3dseg.submission.previous import PARAMS_FILE, REPORT_FILES, keep_previous, params_text
from converters.geometry import Grid, grid_from_nifti_affine
from datalists.annotated import never_annotated
from converters.outputs import atomic_write, atomic_write_text

__all__ = ["SubmissionReport", "map_labels", "predictable_labels", "prediction_labels", "test_labels_by_crop",
           "place_tiles", "write_crops", "write_submission", "zip_store"]

SUBMISSION_STORE = "submission.zarr"


@dataclass
class SubmissionReport:
    rows: list[dict] = field(default_factory=list)  # one per (crop, label)

    @property
    def empty(self) -> list[dict]:
        return [r for r in self.rows if r["status"] != "predicted"]

    def markdown(self) -> str:
        crops = len({r["crop"] for r in self.rows})
        lines = ["# CellMap submission", "",
                 f"{len(self.rows)} labels in {crops} crops; {len(self.empty)} written empty.", "",
                 "| crop | label | status | kind | voxel size (nm) | shape | foreground % | objects | notes |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r['crop']} | {r['label']} | {r['status']} | {r['kind']} | {r['voxel_size']} | "
                         f"{r['shape']} | {r['foreground_pct']:.2f} | {r.get('objects', '')} | "
                         f"{'; '.join(r.get('notes') or [])} |")
        return "\n".join(lines) + "\n"


def test_labels_by_crop(items: dict[str, dict], manifest: str | os.PathLike | None = None) -> dict[int, list[dict]]:
    """What to write per crop id: the manifest's rows when given (every crop, converted or
    not), else the ``test_labels`` the converter stored for each test image.

    The submission names crops by id only, so a manifest that puts a converted test crop in
    another dataset (another challenge release, or a crop id listed under two datasets) would
    place one dataset's prediction in another's crop: ValueError naming both."""
    out: dict[int, list[dict]] = {}
    if manifest:
        from converters.cellmap.listings import read_test_manifest_rows

        dataset_of: dict[int, str] = {}
        for (dataset, crop_id), labels in read_test_manifest_rows(manifest).items():
            if dataset_of.setdefault(int(crop_id), dataset) != dataset:
                raise ValueError(f"{manifest}: test crop {crop_id} is listed under two datasets "
                                 f"({dataset_of[int(crop_id)]}, {dataset}); the submission names crops by id only: "
                                 "keep the rows of the right one")
            out.setdefault(int(crop_id), []).extend(labels)
        for name, meta in sorted(items.items()):
            crop_id, dataset = meta.get("crop_id"), meta.get("dataset")
            if meta.get("usage") == "test" and dataset and crop_id is not None \
                    and dataset_of.get(int(crop_id), dataset) != dataset:
                raise ValueError(f"{manifest} puts test crop {crop_id} in dataset {dataset_of[int(crop_id)]}, but "
                                 f"{name} was converted from crop {crop_id} of {dataset}: its prediction would be "
                                 "submitted for another dataset's crop. Use the manifest of the data you converted "
                                 "(or re-convert with this one)")
        converted = sorted({int(m["crop_id"]) for m in items.values()
                            if m.get("usage") == "test" and m.get("crop_id") is not None})
        if converted and out and not set(out) & set(converted):  # every crop would be written empty
            raise ValueError(f"none of the {len(out)} crop(s) of {manifest} is a converted test crop of this dataset "
                             f"(those are crop {', '.join(map(str, converted[:6]))}"
                             f"{' and more' if len(converted) > 6 else ''}): the manifest of another dataset? Use the "
                             "manifest of the data you converted (or convert its crops)")
        return out
    for meta in items.values():
        if meta.get("usage") == "test" and meta.get("test_labels"):
            seen = {lab["label"] for lab in out.get(int(meta["crop_id"]), [])}
            out.setdefault(int(meta["crop_id"]), []).extend(
                lab for lab in meta["test_labels"] if lab["label"] not in seen)
    return out


def predictable_labels(channels: Sequence[str] | None, class_table: Sequence[dict]) -> set[str]:
    """Classes post-processing can make from channels named ``channels``: a class with its own
    channel, or a group with a predictable part (:func:`auto3dseg.postprocess.class_masks`).

    Examples
    --------
    >>> table = [{"id": 1, "name": "mito_mem", "parts": []}, {"id": 2, "name": "mito", "parts": [1]},
    ...          {"id": 3, "name": "er", "parts": []}]
    >>> sorted(predictable_labels(["mito_mem"], table)), sorted(predictable_labels(["channel_0"], table))
    (['mito', 'mito_mem'], [])
    """
    by_id = {int(r["id"]): r for r in class_table}
    have = set(channels or [])

    def ok(i: int, seen: frozenset[int] = frozenset()) -> bool:
        row = by_id[i]
        return row["name"] in have or any(int(p) in by_id and int(p) not in seen and ok(int(p), seen | {i})
                                          for p in row.get("parts") or [])

    return {r["name"] for r in class_table if ok(int(r["id"]))}


def map_labels(prob_path: str | os.PathLike, channels: Sequence[str], class_table: list[dict], params: dict[str, Any],
               cache_bytes: int = 2**31) -> tuple[Any, Grid]:
    """A :class:`~auto3dseg.postprocess.pipeline.ClassLabels` of one probability map (``labels(name)``
    gives one class's z, y, x array at a time) and the map's grid."""
    from auto3dseg.ensembling.probability_maps import open_probability_map
    from auto3dseg.postprocess.pipeline import ClassLabels

    pmap = open_probability_map(prob_path)
    grid = grid_from_nifti_affine(pmap.affine, pmap.shape[::-1])
    return ClassLabels(pmap, list(channels), class_table, grid.spacing, params, cache_bytes), grid


def prediction_labels(prob_path: str | os.PathLike, channels: Sequence[str], class_table: list[dict],
                      params: dict[str, Any], labels: Sequence[str] | None = None
                      ) -> tuple[dict[str, np.ndarray], Grid]:
    """Labels (z, y, x arrays, one per class, or only ``labels``) from one probability map,
    and their grid (all at once: :func:`map_labels` gives them one at a time)."""
    make, grid = map_labels(prob_path, channels, class_table, params)
    out = {}
    for row in class_table:
        if labels is None or row["name"] in labels:
            array = make(row["name"])
            if array is not None:
                out[row["name"]] = array
    return out, grid


def zip_store(store: Path, zip_path: Path) -> Path:
    """Zip ``store`` (a folder) as ``<zip>/<store name>/...``, via a temporary name."""
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for f in sorted(store.rglob("*")):
                if f.is_file():
                    zf.write(f, Path(store.name) / f.relative_to(store))

    atomic_write(zip_path, write)  # a failed write names zip_path and leaves no temporary
    return zip_path


def _write_label(group: Any, name: str, data: np.ndarray, target: dict) -> None:
    from numcodecs import Blosc

    chunks = tuple(min(64, s) for s in data.shape)
    arr = group.create_dataset(name, data=data, chunks=chunks, compressor=Blosc("zstd", 3, Blosc.BITSHUFFLE),
                               overwrite=True)
    arr.attrs.update({"voxel_size": [float(v) for v in target["voxel_size"]],
                      "translation": [float(v) for v in target["translation"]],
                      "shape": [int(v) for v in target["shape"]]})


def place_tiles(arrays: list[tuple[np.ndarray, Grid]], target: dict, kind: str) -> np.ndarray | None:
    """One label of every tile of a crop on the target grid (None when no tile has it): semantic
    masks united, instance ids of later tiles offset past those already placed."""
    from auto3dseg.postprocess import smallest_id_dtype

    dst = grid_of(target["voxel_size"], target["translation"], target["shape"])
    data: np.ndarray | None = None
    for array, src in arrays:
        here = place_on_grid(array, src, dst, kind)
        if data is None:
            data = here
        elif kind == "semantic":
            np.maximum(data, here, out=data)
        else:  # tiles number their objects independently
            offset = int(data.max(initial=0))
            dtype = np.promote_types(np.promote_types(data.dtype, here.dtype),
                                     smallest_id_dtype(offset + int(here.max(initial=0))))
            data, here = data.astype(dtype, copy=False), here.astype(dtype, copy=False)
            here[here > 0] += dtype.type(offset)
            np.copyto(data, here, where=(data == 0) & (here > 0))
        del here
    return data


def _report_row(crop_id: int, target: dict, kind: str, status: str, data: np.ndarray) -> dict:
    row = {"crop": f"crop{crop_id}", "label": target["label"], "kind": kind, "status": status,
           "voxel_size": list(target["voxel_size"]), "shape": list(target["shape"]),
           "foreground_pct": 100.0 * float(np.count_nonzero(data)) / max(1, data.size)}
    if kind == "instance":
        import fastremap

        row["objects"] = int(np.count_nonzero(fastremap.unique(data)))
    return row


def _empty_reason(has_maps: bool, converted: bool, in_table: bool) -> str:
    """Why a requested label is written empty (the submission report's status)."""
    if not has_maps:
        return ("no map (its image is not in the datalist's testing list)" if converted
                else "no image (crop not converted)")
    return "not predicted by the model" if in_table else "not in the model's class table"


def write_crops(store: Path, wanted: dict[int, list[dict]], prob_by_crop: dict[int, list[str]],
                channels: Sequence[str], class_table: list[dict], params: dict[str, Any], log=print,
                desc: str = "Writing submission", converted: Collection[int] = (),
                untrained: Collection[str] = ()) -> SubmissionReport:
    """Write ``store/crop<N>/<label>`` for every target of ``wanted`` (crop id → target grids
    ``{label, voxel_size, translation, shape}``) from the crop's probability maps (its tiles);
    labels without a map or channel, and ``untrained`` ones (no training item annotates them: their
    channel was never trained), are written empty. Returns the report rows.

    One label of one crop at a time over every map of the crop: a 1000³ crop of 48 labels
    holds one label in memory.
    """
    import zarr
    from tqdm import tqdm

    from datalists.cellmap_classes import INSTANCE_CLASSES

    root_group = zarr.open_group(str(store), mode="w")
    report = SubmissionReport()
    known = {str(row["name"]) for row in class_table}
    unknown = sorted({t["label"] for targets in wanted.values() for t in targets} - known)
    if unknown:
        from datalists.cellmap_classes import CELLMAP_CLASSES, close_class_names

        log(f"note: {len(unknown)} requested label(s) are not in the model's class table and are written empty: "
            f"{', '.join(unknown)} (train with them in --classes to predict them)")
        for name in (n for n in unknown if n not in CELLMAP_CLASSES):
            close = close_class_names(name)
            log(f"warning: {name!r} is not a CellMap class at all" + (f" (did you mean {', '.join(close)}?)"
                                                                      if close else "") + ": check the test manifest")
    say = bar_safe(log)  # notes in the loop start their own line, not the progress bar's
    if never := sorted(set(untrained) & {t["label"] for targets in wanted.values() for t in targets} & known):
        log(f"note: {len(never)} requested label(s) are in the class table, but no training crop annotates them, so "
            f"their channels were never trained: written empty: {', '.join(never)}")
    for crop_id in tqdm(sorted(wanted), desc=desc, unit="crop"):
        crop_group = root_group.require_group(f"crop{crop_id}")
        maps = prob_by_crop.get(crop_id, [])
        makers = [map_labels(p, channels, class_table, params, 2**31 // max(1, len(maps))) for p in maps]
        labels = list(dict.fromkeys(t["label"] for t in wanted[crop_id]))
        outside: dict[str, float] = {}  # label -> share of its region outside the image
        for label in tqdm(labels, desc=f"  crop{crop_id}", unit="label", leave=False, disable=len(labels) < 8):
            kind = "instance" if label in INSTANCE_CLASSES else "semantic"
            with warnings.catch_warnings(record=True) as caught:  # e.g. an object too large to split
                warnings.simplefilter("always")
                arrays = [(make(label), grid) for make, grid in makers] if label in known and label not in never \
                    else []
            arrays = [(a, g) for a, g in arrays if a is not None]
            notes = sorted({str(w.message) for w in caught})
            for note in notes:
                say(f"note: crop{crop_id}/{label}: {note}")
            for target in (t for t in wanted[crop_id] if t["label"] == label):
                data = place_tiles(arrays, target, kind)
                status = "predicted" if data is not None else "never trained (no training crop annotates it)" \
                    if label in never else _empty_reason(bool(maps), crop_id in converted, label in known)
                row_notes = list(notes)
                if makers and (share := outside_share(grid_of(target["voxel_size"], target["translation"],
                                                              target["shape"]), [g for _, g in makers])) > 1e-3:
                    outside[label] = max(share, outside.get(label, 0.0))
                    row_notes.append(f"{share:.0%} outside the converted image: empty there")
                    if share > 1 - 1e-3:
                        status = "outside the converted image"
                if data is None:
                    data = np.zeros(tuple(int(s) for s in target["shape"]),
                                    dtype=np.uint16 if kind == "instance" else np.uint8)
                try:
                    _write_label(crop_group, label, data, target)
                except OSError as exc:  # zarr's chunk writes name no file
                    exc.filename = exc.filename or str(store / f"crop{crop_id}" / label)
                    raise
                report.rows.append({**_report_row(crop_id, target, kind, status, data), "notes": row_notes})
                del data
            del arrays
        if outside:
            say(f"warning: crop{crop_id}: up to {max(outside.values()):.0%} of the test manifest's region of "
                f"{', '.join(sorted(outside))} lies outside the crop's converted image, and is written empty there: "
                "the manifest places the crop elsewhere than the conversion did; convert the crop with this test "
                "manifest (--test_manifest), then ensemble and submit again")
    return report


def write_submission(ensemble_manifest: str | os.PathLike, datalist: str | os.PathLike, out_dir: str | os.PathLike,
                     *, params: dict[str, Any] | None = None, test_manifest: str | os.PathLike | None = None,
                     force: bool = False, log=print) -> tuple[Path, SubmissionReport]:
    """Build ``<out_dir>/submission.zarr`` and ``submission.zip``; returns (zip path, report).

    One run at a time per ``out_dir`` (:mod:`auto3dseg.orchestration.locks`); temporaries of a killed run are
    removed first. The new store is written aside first: a run that fails or is killed there leaves
    the earlier submission whole. ``submission_signature.txt`` (what says "up to date") is then
    moved aside first and written last, so a kill never leaves a stale zip that looks current.

    Parameters
    ----------
    ensemble_manifest : path
        ``ensemble.json`` from the ensemble (channels and per-image probability maps).
    datalist : path
        The converter's datalist (class table; its ``datalist_items.json`` maps images to
        crops and test labels).
    params : dict, optional
        Post-processing parameters (:func:`auto3dseg.postprocess.load_postprocess_params`).
    test_manifest : path, optional
        ``test_crop_manifest.csv``: write every label it lists, also for crops that were
        not converted (empty, reported).
    """
    from auto3dseg.orchestration.locks import clean_temporaries, step_lock

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with step_lock(out, "submit", log=log):
        clean_temporaries(out)
        return _write_submission(ensemble_manifest, datalist, out, params=params, test_manifest=test_manifest,
                                 force=force, log=log)


def _check_map_channels(manifest: str | os.PathLike, ens: dict[str, Any], maps: Sequence[str]) -> None:
    """The channel names ``ensemble.json`` gives are those each map records (labels are cut from
    the channels by name: names swapped by a hand edit would build each class from another)."""
    from auto3dseg.ensembling.probability_maps import open_probability_map

    for path in maps:
        try:
            recorded = open_probability_map(path).channels
        except (OSError, ValueError, KeyError):
            continue  # a map that cannot be read is named where it is read
        if recorded and list(recorded) != list(ens.get("channels") or []):
            raise RuntimeError(f"{manifest} names the channels {ens.get('channels')}, but {path} records {recorded}: "
                               "the manifest was edited or mixed up; run --mode ensemble --force to write it again")


def _write_submission(ensemble_manifest: str | os.PathLike, datalist: str | os.PathLike, out: Path, *,
                      params: dict[str, Any] | None, test_manifest: str | os.PathLike | None, force: bool,
                      log) -> tuple[Path, SubmissionReport]:
    from auto3dseg.postprocess import load_postprocess_params

    params = params if params is not None else load_postprocess_params()
    ens = read_map_manifest(ensemble_manifest)  # a copied work_dir reads its own maps
    dl_path = Path(datalist)
    dl = json.loads(dl_path.read_text())
    items = json.loads((dl_path.parent / dl.get("items_file", "datalist_items.json")).read_text())
    root = Path(dl_path.parent)
    by_image = {str((root / k).resolve()): v for k, v in items.items()}
    by_key: dict[str, list[dict]] = {}  # the dataset moved since the ensemble (--force_new_datalist)
    for k, v in items.items():
        by_key.setdefault(moved_key(k), []).append(v)
    prob_by_crop: dict[int, list[str]] = {}
    for it in ens["items"]:
        meta = by_image.get(str(Path(it["image"]).resolve()))
        if meta is None and len(by_key.get(moved_key(it["image"]), [])) == 1:
            meta = by_key[moved_key(it["image"])][0]
        if meta is not None and meta.get("usage") == "test":
            prob_by_crop.setdefault(int(meta["crop_id"]), []).append(it["probabilities"])
    testing = {moved_key(t["image"] if isinstance(t, dict) else t) for t in dl.get("testing", [])}
    unmapped = sorted({int(m["crop_id"]) for k, m in items.items()
                       if m.get("usage") == "test" and moved_key(k) in testing} - set(prob_by_crop))
    if unmapped:
        shown = ", ".join(f"crop{c}" for c in unmapped[:8]) + (f" and {len(unmapped) - 8} more" if len(unmapped) > 8
                                                                 else "")
        raise RuntimeError(f"{ensemble_manifest} has no probability map of the converted test crop(s) {shown} of "
                           f"{dl_path} (its maps were made from {ens.get('datalist')}): run --mode ensemble, then "
                           "--mode submit")
    _check_map_channels(ensemble_manifest, ens, sorted({p for ps in prob_by_crop.values() for p in ps}))
    wanted = test_labels_by_crop(items, test_manifest)
    if not wanted:
        raise RuntimeError(f"no test labels to write: {dl_path.parent / 'datalist_items.json'} has no test crops "
                           "with labels; pass --test_manifest")
    asked = sorted({t["label"] for labels in wanted.values() for t in labels})
    if not predictable_labels(ens.get("channels"), dl["class_table"]) & set(asked):
        raise RuntimeError(f"no requested label maps to a channel of {ensemble_manifest}: labels {', '.join(asked)}; "
                           f"channels {ens.get('channels')} ({ens.get('activation')}). Every label would be written "
                           "empty: the ensemble's channels must be named from the class table of "
                           f"{dl_path} (re-run --mode ensemble --force after regenerating the bundles)")

    sig = maps_signature(ens, params, {str(k): v for k, v in sorted(wanted.items())})
    sig_file = out / "submission_signature.txt"
    if (not force and sig_file.is_file() and sig_file.read_text().strip() == sig
            and (out / "submission.zip").is_file() and (out / "submission_report.json").is_file()):
        log(f"submission in {out} is up to date (same maps, parameters and labels); kept")
        if not (out / PARAMS_FILE).is_file():  # made before submissions recorded them: the signature says these
            atomic_write_text(out / PARAMS_FILE, params_text(params))
        return out / "submission.zip", SubmissionReport(json.loads((out / "submission_report.json").read_text()))
    same = sig_file.is_file() and sig_file.read_text().strip() == sig
    tmp_store = out / f".tmp-{os.getpid()}-{SUBMISSION_STORE}"
    shutil.rmtree(tmp_store, ignore_errors=True)
    converted = {int(m["crop_id"]) for m in items.values() if m.get("usage") == "test"}
    try:  # written aside first: a run that fails here leaves the earlier submission whole, where it was
        report = write_crops(tmp_store, wanted, prob_by_crop, ens["channels"], dl["class_table"], params, log,
                             converted=converted, untrained=never_annotated(dl))
    except BaseException:
        shutil.rmtree(tmp_store, ignore_errors=True)
        raise
    keep_previous(out, ["submission.zip", *REPORT_FILES], log,  # its signature too: removed first, written last
                  why="the same maps and parameters: --force made it again" if same else "other maps or parameters")
    final_store = out / SUBMISSION_STORE
    if final_store.exists():
        old = out / f".old-{os.getpid()}-{SUBMISSION_STORE}"
        os.replace(final_store, old)
        os.replace(tmp_store, final_store)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_store, final_store)
    zip_path = zip_store(final_store, out / "submission.zip")
    atomic_write_text(out / "submission_report.md", report.markdown())
    atomic_write_text(out / "submission_report.json", json.dumps(report.rows, indent=1))
    atomic_write_text(out / PARAMS_FILE, params_text(params))
    atomic_write_text(sig_file, sig + "\n")
    for r in report.empty:
        log(f"note: {r['crop']}/{r['label']} written empty: {r['status']}")
    return zip_path, report
