"""``--mode predict --postprocess``: labels beside the probability maps, as ``submit`` makes them.

* 2-D cells: ``<output_dir>/labels/<stem>_label.tiff`` (:mod:`auto3dseg.postprocess.cells`);
* volumes: ``<output_dir>/labels/<case>/<class>.nii.gz`` for every class of the class table,
  on the image's own grid and affine: instance ids (uint16/uint32) for instance classes, 0/1
  for semantic ones (:func:`auto3dseg.submission.cellmap.map_labels`, the same thresholds,
  groups, splitting and size filter as the CellMap submission).

The labels are written into a temporary folder renamed ``labels/`` when done; labels made
earlier from other maps or parameters are moved to ``<output_dir>/replaced/labels-<time>/``,
and labels of the same maps and parameters are kept (``labels_signature.txt``, written last,
says which; ``labels_params.json`` holds the parameters). One map that fails is reported and
the others go on. Classes are made and written one at a time (a large map never holds more).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from auto3dseg.ensembling.probability_maps import maps_signature, read_map_manifest

__all__ = ["foreign_labels", "postprocess_predictions", "retire_stale_labels"]

LABELS = "labels"
SIGNATURE = "labels_signature.txt"
REPORT = "labels_report.json"
PARAMS = "labels_params.json"


def foreign_labels(folder: str | os.PathLike) -> Path | None:
    """``<folder>/labels`` when it exists but predict did not write it (none of predict's records
    beside it: a converter's training labels, say), else None. Such a folder is never moved."""
    folder = Path(folder)
    if (folder / LABELS).exists() and not any((folder / f).is_file() for f in (REPORT, SIGNATURE, PARAMS)):
        return folder / LABELS
    return None


def _refuse_foreign(folder: Path) -> None:
    foreign = foreign_labels(folder)
    if foreign is not None:
        raise ValueError(f"{foreign} was not written by --mode predict (no {REPORT} beside it): it is left alone; "
                         "predict into another --output_dir")


def _write_nifti(data_zyx: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.ascontiguousarray(data_zyx.T), affine)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def postprocess_predictions(ensemble_manifest: str | os.PathLike, class_table: list[dict], *, cells: bool,
                            params: Any = None, log=print) -> tuple[Path, list[dict]]:
    """Post-process every map of ``ensemble.json`` into ``<its folder>/labels`` with ``params``
    (loaded parameters, as :func:`~auto3dseg.postprocess.tune.postprocess_params_for` gives them;
    default: the packaged defaults); returns the folder and one row per map (``status``
    written/failed, ``error``)."""
    from auto3dseg.submission.previous import keep_previous, params_text

    manifest = Path(ensemble_manifest)
    ens = read_map_manifest(manifest)
    folder = manifest.parent
    if params is None:
        if cells:
            from auto3dseg.postprocess.cells import load_cell_params as load
        else:
            from auto3dseg.postprocess import load_postprocess_params as load
        params = load()
    sig = maps_signature(ens, params)
    out, sig_file = folder / LABELS, folder / SIGNATURE
    if out.is_dir() and sig_file.is_file() and sig_file.read_text().strip() == sig and (folder / REPORT).is_file():
        log(f"labels in {out} are up to date (same maps and parameters); kept")
        return out, json.loads((folder / REPORT).read_text())
    _refuse_foreign(folder)
    keep_previous(folder, [LABELS, REPORT, PARAMS, SIGNATURE], log, what="labels", first=SIGNATURE,
                  why="made from other images or maps, or with other parameters")
    tmp = folder / f".tmp-{os.getpid()}-{LABELS}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        rows = _cell_labels(ens, tmp, class_table, params, log) if cells else _volume_labels(ens, tmp, class_table,
                                                                                             params, log)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for row in rows:  # the files' names once the folder is renamed
        if row.get("output"):
            row["output"] = str(out / Path(row["output"]).relative_to(tmp))
        if "outputs" in row:
            row["outputs"] = [str(out / Path(o).relative_to(tmp)) for o in row["outputs"]]
    os.replace(tmp, out)
    from converters.outputs import atomic_write_text

    atomic_write_text(folder / REPORT, json.dumps(rows, indent=1))
    atomic_write_text(folder / PARAMS, params_text(params))
    if all(r["status"] == "written" for r in rows):  # a run with failures is never "up to date"
        atomic_write_text(sig_file, sig + "\n")
    return out, rows


def retire_stale_labels(ensemble_manifest: str | os.PathLike, log=print) -> Path | None:
    """After ``predict`` without ``--postprocess`` rewrote the maps of a folder that holds labels
    made from its earlier maps: move those labels to ``replaced/labels-<time>/`` (said), so that
    no label sits beside maps it was not made from. Returns where they went."""
    from auto3dseg.submission.previous import keep_previous

    folder = Path(ensemble_manifest).parent
    if not (folder / LABELS).exists():
        return None
    _refuse_foreign(folder)
    try:
        params = json.loads((folder / PARAMS).read_text())
        made_from = maps_signature(read_map_manifest(ensemble_manifest), params)
        current = (folder / SIGNATURE).read_text().strip() == made_from
    except (OSError, ValueError):
        current = False
    if current:
        return None
    return keep_previous(folder, [LABELS, REPORT, PARAMS, SIGNATURE], log, what="labels", first=SIGNATURE,
                  why="made from other images or maps, or with other parameters")


def _cell_labels(ens: dict, out: Path, class_table: list[dict], params: Any, log) -> list[dict]:
    from auto3dseg.postprocess.cells import postprocess_cells

    report = postprocess_cells([it["probabilities"] for it in ens["items"]], out, params=params,
                               channels=ens.get("channels"), class_table=class_table)
    (out / "postprocess_report.json").unlink(missing_ok=True)
    for r in report.failed:
        log(f"error: {r['input']}: {r['error']}")
    return report.rows


def _volume_labels(ens: dict, out: Path, class_table: list[dict], params: Any, log) -> list[dict]:
    from auto3dseg.ensembling.ensemble import _case_name
    from auto3dseg.submission.cellmap import map_labels
    from converters.geometry import nifti_affine

    rows = []
    for it in ens["items"]:
        row = {"input": it["probabilities"], "status": "failed", "error": "", "outputs": []}
        case = out / _case_name(it["image"])
        try:
            make, grid = map_labels(it["probabilities"], ens["channels"], class_table, params)
            affine = nifti_affine(grid)
            case.mkdir(parents=True, exist_ok=True)
            for name in (r["name"] for r in class_table):  # one class in memory at a time
                data = make(name)
                if data is None:
                    continue
                _write_nifti(data, affine, case / f"{name}.nii.gz")
                row["outputs"].append(str(case / f"{name}.nii.gz"))
                del data
            row["status"] = "written"
        except Exception as exc:  # one bad map must not stop the others
            shutil.rmtree(case, ignore_errors=True)  # no half-made folder beside the complete ones
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["outputs"] = []
            log(f"error: {it['probabilities']}: {row['error']}; no labels written for it. If the map is damaged (a "
                "chunk cut short or deleted), predict it again: --mode predict --force with the same --images")
        rows.append(row)
    return rows
