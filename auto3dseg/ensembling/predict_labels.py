"""``--mode predict --postprocess``: labels beside the probability maps, as ``submit`` makes them.

* 2-D cells: ``<output_dir>/labels/<stem>_label.tiff`` (:mod:`auto3dseg.postprocess.cells`);
* volumes: ``<output_dir>/labels/<case>/<class>.nii.gz`` for every class of the class table,
  on the image's own grid and affine: instance ids (uint16/uint32) for instance classes, 0/1
  for semantic ones (:func:`auto3dseg.submission.cellmap.map_labels`, the same thresholds,
  groups, splitting and size filter as the CellMap submission).

Every file is written under a temporary name and renamed; one map that fails is reported and
the others go on. Classes are made and written one at a time (a large map never holds more).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from auto3dseg.ensembling.probability_maps import read_map_manifest

__all__ = ["postprocess_predictions"]


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
    manifest = Path(ensemble_manifest)
    ens = read_map_manifest(manifest)
    out = manifest.parent / "labels"
    if cells:
        from auto3dseg.postprocess.cells import load_cell_params, postprocess_cells

        report = postprocess_cells([it["probabilities"] for it in ens["items"]], out,
                                   params=params if params is not None else load_cell_params(),
                                   channels=ens.get("channels"),
                                   class_table=class_table)
        for r in report.failed:
            log(f"error: {r['input']}: {r['error']}")
        return out, report.rows
    from auto3dseg.ensembling.ensemble import _case_name
    from auto3dseg.postprocess import load_postprocess_params
    from auto3dseg.submission.cellmap import map_labels
    from converters.geometry import nifti_affine

    params = params if params is not None else load_postprocess_params()
    rows = []
    for it in ens["items"]:
        row = {"input": it["probabilities"], "status": "failed", "error": "", "outputs": []}
        try:
            make, grid = map_labels(it["probabilities"], ens["channels"], class_table, params)
            affine = nifti_affine(grid)
            case = out / _case_name(it["image"])
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
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(f"error: {it['probabilities']}: {row['error']}")
        rows.append(row)
    return out, rows
