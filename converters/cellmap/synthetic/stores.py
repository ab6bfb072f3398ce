"""Writing the CellMap Zarr layout: multiscale EM, ground-truth crops with their attributes,
test truth, the test manifest and the datasplit.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import zarr

from datalists.cellmap_classes import CELLMAP_CLASSES

from .crops import CropSpec, TestCropSpec, _all_lut
from .layout import (
    COMPRESSOR,
    EM_CHUNKS,
    EM_LEVELS,
    EM_PATH,
    GT_CHUNKS,
    GT_PATH,
    INSTANCE_ENCODING,
    INSTANCE_UNKNOWN_ENCODING,
    SEMANTIC_ENCODING,
    UNKNOWN_FILL,
    Shape3,
)
from .scenes import downsample_mean, em_level_geometry
from .shapes import Scene, label_array, rasterize


# --------------------------------------------------------------------------------------
# Zarr writing
# --------------------------------------------------------------------------------------
def multiscale_attrs(name: str, levels: Sequence[tuple[str, Sequence[float], Sequence[float]]]
                     ) -> dict[str, Any]:
    """OME-NGFF 0.4 ``multiscales`` attrs (axes z, y, x in nanometer)."""
    return {
        "multiscales": [{
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in ("z", "y", "x")],
            "datasets": [{
                "coordinateTransformations": [
                    {"scale": [float(v) for v in scale], "type": "scale"},
                    {"translation": [float(v) for v in trans], "type": "translation"},
                ],
                "path": path,
            } for path, scale, trans in levels],
            "name": name,
            "version": "0.4",
        }]
    }


def _annotation_attrs(name: str, annotated: bool, counts: Mapping[str, int] | None) -> dict:
    cls = CELLMAP_CLASSES[name]
    if cls.instance:
        kind = "instance_segmentation"
        encoding = dict(INSTANCE_ENCODING if annotated else INSTANCE_UNKNOWN_ENCODING)
    else:
        kind = "semantic_segmentation"
        encoding = dict(SEMANTIC_ENCODING)
    ann: dict[str, Any] = {
        "annotation_type": {"encoding": encoding, "type": kind},
        "class_name": name,
    }
    if counts is not None:
        ann["complement_counts"] = dict(counts)
    return {"cellmap": {"annotation": ann}}


def _crop_group_attrs(spec: CropSpec) -> dict:
    return {"cellmap": {"annotation": {
        "class_names": sorted(("all", *spec.class_names)),
        "created_by": [],
        "created_with": ["converters.cellmap.synthetic"],
        "description": f"synthetic case {spec.case}",
        "duration_days": None,
        "end_date": None,
        "name": spec.name,
        "protocol_uri": None,
        "start_date": None,
        "version": "0.1.1",
    }}}


def _write_array(group: zarr.Group, name: str, data: np.ndarray | None, shape: Shape3,
                 dtype: np.dtype | type, fill_value: int, chunks: Shape3) -> zarr.Array:
    """Create an array; write ``data`` with every chunk on disk, or none if ``data`` is None.

    Chunks are not clipped to the shape (as in CellMap stores, a chunk may exceed it).
    """
    arr = group.create_dataset(
        name, shape=shape, chunks=chunks, dtype=dtype,
        compressor=COMPRESSOR, fill_value=fill_value, write_empty_chunks=True,
        overwrite=False,
    )
    if data is not None:
        arr[...] = data
    return arr


def write_em(zarr_path: Path, em_s0: np.ndarray) -> None:
    """Write the three EM levels with their multiscales attrs."""
    root = zarr.open_group(str(zarr_path), mode="a")
    em = root.require_group(EM_PATH)
    levels = []
    img = em_s0
    for k in range(EM_LEVELS):
        if k:
            img = downsample_mean(img, 2)
        _write_array(em, f"s{k}", img, img.shape, np.uint8, 0, EM_CHUNKS)
        scale, trans = em_level_geometry(k)
        levels.append((f"s{k}", scale, trans))
    em.attrs.put(multiscale_attrs("fibsem-uint8", levels))


def write_gt_crop(zarr_path: Path, spec: CropSpec, scene: Scene) -> dict[str, Any]:
    """Write one ground-truth crop in CellMap layout; return per-class voxel counts."""
    atomic, inst = rasterize(scene, spec.translation, spec.voxel_size, spec.shape)
    root = zarr.open_group(str(zarr_path), mode="a")
    crop = root.require_group(f"{GT_PATH}/{spec.name}")
    crop.attrs.put(_crop_group_attrs(spec))
    ms_level = [("s0", spec.voxel_size, spec.translation)]
    n = int(np.prod(spec.shape))
    present: dict[str, int] = {}
    for name in spec.class_names:
        cls = CELLMAP_CLASSES[name]
        dtype = np.uint16 if cls.instance else np.uint8
        g = crop.require_group(name)
        annotated = name in spec.annotated
        if annotated:
            data = label_array(name, atomic, inst)
            if cls.instance and data.max() > np.iinfo(np.uint16).max:
                raise ValueError(f"{spec.name}/{name}: instance id does not fit uint16")
            data = data.astype(dtype)
            counts = {"absent": int(np.count_nonzero(data == 0))}
            present[name] = n - counts["absent"]
            arr = _write_array(g, "s0", data, spec.shape, dtype, 0, GT_CHUNKS)
        else:
            counts = {"unknown": n}
            arr = _write_array(g, "s0", None, spec.shape, dtype, UNKNOWN_FILL, GT_CHUNKS)
        g.attrs.put({**_annotation_attrs(name, annotated, None),
                     **multiscale_attrs(name, ms_level)})
        arr.attrs.put(_annotation_attrs(name, annotated, counts))
    g_all = crop.require_group("all")
    all_data = _all_lut(spec.annotated)[atomic] if spec.annotated else None
    _write_array(g_all, "s0", all_data, spec.shape, np.uint8, 0, GT_CHUNKS)
    g_all.attrs.put(multiscale_attrs("all", ms_level))
    return present


def write_test_truth(store_path: Path, spec: TestCropSpec, scene: Scene) -> dict[str, int]:
    """Write the truth of one test crop as plain arrays ``crop<N>/<label>``."""
    root = zarr.open_group(str(store_path), mode="a")
    crop = root.require_group(spec.name)
    present = {}
    for lab in spec.labels:
        atomic, inst = rasterize(scene, lab.translation, lab.voxel_size, lab.shape)
        data = label_array(lab.label, atomic, inst)
        arr = _write_array(crop, lab.label, data, lab.shape, data.dtype, 0, GT_CHUNKS)
        arr.attrs.put({"voxel_size": [float(v) for v in lab.voxel_size],
                       "translation": [float(v) for v in lab.translation],
                       "shape": [int(v) for v in lab.shape]})
        present[lab.label] = int(np.count_nonzero(data))
    return present


def _vec(values: Sequence[float], fmt=float) -> str:
    return "[" + ";".join(str(fmt(v)) for v in values) + "]"


def write_test_manifest(path: Path, crops: Sequence[TestCropSpec]) -> None:
    """``test_crop_manifest.csv`` in the toolbox format."""
    lines = ["crop_name,dataset,class_label,voxel_size,translation,shape"]
    for c in crops:
        for lab in c.labels:
            lines.append(",".join([str(c.crop_id), c.dataset, lab.label, _vec(lab.voxel_size),
                                   _vec(lab.translation), _vec(lab.shape, int)]))
    path.write_text("\n".join(lines) + "\n")


def write_datasplit(path: Path, final_root: Path, crops: Sequence[CropSpec]) -> None:
    """Header-less, fully quoted ``datasplit.csv`` with absolute FINAL paths."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for c in crops:
            zpath = str(final_root / c.dataset / f"{c.dataset}.zarr")
            classes = ",".join(sorted(c.class_names))
            w.writerow([c.usage, zpath, EM_PATH, zpath, f"{GT_PATH}/{c.name}/[{classes}]"])


def _case_record(spec: CropSpec, present: Mapping[str, int]) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "dataset": spec.dataset,
        "case": spec.case,
        "expected_verdict": spec.expected_verdict,
        "description": spec.description,
        "gt_voxel_size": [float(v) for v in spec.voxel_size],
        "translation": [float(v) for v in spec.translation],
        "shape": [int(v) for v in spec.shape],
        "annotated": list(spec.annotated),
        "not_annotated": list(spec.not_annotated),
        "usage": spec.usage,
        "present_voxels": dict(present),
    }
    rec.update(spec.extra)
    return rec


