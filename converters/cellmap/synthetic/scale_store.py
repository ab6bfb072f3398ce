"""Zarr layout of a procedural tree: creating every group and array (metadata only) before the
blocks are written, the block grids, and the attributes that need the blocks' counts.

Arrays are created up front, so the workers only ever write whole chunks of arrays that
exist; a listed class that is not annotated gets an array with no chunk at all (fill 255,
``complement_counts`` unknown = every voxel), exactly like the demo's.

Examples
--------
>>> [tuple(b) for b in block_grid((100, 64, 64), 64)][:2]
[((0, 0, 0), (64, 64, 64)), ((64, 0, 0), (36, 64, 64))]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import zarr

from datalists.cellmap_classes import CELLMAP_CLASSES

from .crops import CropSpec, TestCropSpec
from .layout import COMPRESSOR, EM_PATH, GT_PATH, UNKNOWN_FILL, Shape3
from .scale_plan import SCALE_CHUNKS, DatasetPlan, TreePlan
from .stores import _annotation_attrs, _crop_group_attrs, multiscale_attrs


def block_grid(shape: Shape3, block: int) -> Iterator[tuple[Shape3, Shape3]]:
    """``(start, shape)`` of the blocks (``block`` voxels a side, clipped at the end) tiling ``shape``."""
    for z in range(0, shape[0], block):
        for y in range(0, shape[1], block):
            for x in range(0, shape[2], block):
                yield (z, y, x), (min(block, shape[0] - z), min(block, shape[1] - y), min(block, shape[2] - x))


def em_levels(ds: DatasetPlan) -> list[tuple[str, tuple, tuple, Shape3]]:
    """``(path, scale, translation, shape)`` of each EM level; coarser levels are shifted by half
    the scale difference (``translation_k = (scale_k - scale_0) / 2``), as in the demo."""
    out = []
    for k in range(ds.levels):
        f = 2**k
        scale = (ds.voxel_nm * f,) * 3
        trans = ((ds.voxel_nm * f - ds.voxel_nm) / 2.0,) * 3
        out.append((f"s{k}", scale, trans, (ds.shape[0] // f, ds.shape[1] // f, ds.shape[2] // f)))
    return out


def zarr_path(root: Path, dataset: str) -> Path:
    return root / dataset / f"{dataset}.zarr"


def gt_dtype(name: str, max_ids: Mapping[str, int]) -> type:
    """uint16 instance ids unless a dataset has more objects of that class than fit; uint8 masks."""
    if not CELLMAP_CLASSES[name].instance:
        return np.uint8
    return np.uint16 if max_ids.get(name, 0) <= np.iinfo(np.uint16).max else np.uint32


def _create(group: zarr.Group, name: str, shape: Shape3, dtype: Any, fill: int) -> zarr.Array:
    return group.create_dataset(name, shape=shape, chunks=SCALE_CHUNKS, dtype=dtype, compressor=COMPRESSOR,
                                fill_value=fill, write_empty_chunks=True, overwrite=False)


def create_dataset_store(root: Path, ds: DatasetPlan) -> None:
    """The dataset's store with its EM levels (empty) and the groundtruth group."""
    z = zarr.open_group(str(zarr_path(root, ds.name)), mode="w")
    em = z.require_group(EM_PATH)
    for path, _, _, shape in em_levels(ds):
        _create(em, path, shape, np.uint8, 0)
    em.attrs.put(multiscale_attrs("fibsem-uint8", [(p, s, t) for p, s, t, _ in em_levels(ds)]))
    z.require_group(GT_PATH)


def create_crop(root: Path, spec: CropSpec, max_ids: Mapping[str, int]) -> None:
    """A training crop's groups and arrays; unannotated arrays get their final attributes now."""
    crop = zarr.open_group(str(zarr_path(root, spec.dataset)), mode="a").require_group(f"{GT_PATH}/{spec.name}")
    crop.attrs.put(_crop_group_attrs(spec))
    level = [("s0", spec.voxel_size, spec.translation)]
    n = int(np.prod(spec.shape))
    for name in spec.class_names:
        g = crop.require_group(name)
        annotated = name in spec.annotated
        arr = _create(g, "s0", spec.shape, gt_dtype(name, max_ids), 0 if annotated else UNKNOWN_FILL)
        g.attrs.put({**_annotation_attrs(name, annotated, None), **multiscale_attrs(name, level)})
        if not annotated:
            arr.attrs.put(_annotation_attrs(name, False, {"unknown": n}))
    g_all = crop.require_group("all")
    _create(g_all, "s0", spec.shape, np.uint8, 0)
    g_all.attrs.put(multiscale_attrs("all", level))


def finish_crop(root: Path, spec: CropSpec, absent: Mapping[str, int]) -> None:
    """Attributes of the annotated arrays, from the absent counts of all their blocks."""
    crop = zarr.open_group(str(zarr_path(root, spec.dataset)), mode="a")[f"{GT_PATH}/{spec.name}"]
    for name in spec.annotated:
        crop[f"{name}/s0"].attrs.put(_annotation_attrs(name, True, {"absent": int(absent.get(name, 0))}))


def truth_grids(spec: TestCropSpec) -> list[tuple[tuple, tuple, Shape3, list[str]]]:
    """The distinct grids ``(voxel_size, translation, shape, labels)`` of a test crop."""
    grids: dict[tuple, list[str]] = {}
    for lab in spec.labels:
        grids.setdefault((lab.voxel_size, lab.translation, lab.shape), []).append(lab.label)
    return [(v, t, s, labels) for (v, t, s), labels in grids.items()]


def create_truth(store: Path, spec: TestCropSpec) -> None:
    """``crop<N>/<label>`` plain arrays with ``voxel_size``/``translation``/``shape`` attributes."""
    crop = zarr.open_group(str(store), mode="a").require_group(spec.name)
    for lab in spec.labels:
        dtype = np.uint32 if CELLMAP_CLASSES[lab.label].instance else np.uint8
        arr = _create(crop, lab.label, lab.shape, dtype, 0)
        arr.attrs.put({"voxel_size": [float(v) for v in lab.voxel_size],
                       "translation": [float(v) for v in lab.translation],
                       "shape": [int(v) for v in lab.shape]})


def open_array(path: Path) -> zarr.Array:
    return zarr.open_array(str(path), mode="r+", write_empty_chunks=True)


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def plan_records(plan: TreePlan) -> tuple[dict, dict, dict]:
    """The ``datasets``, ``crops`` and ``test_crops`` records of ``scale.json`` (no counts yet)."""
    datasets = {d.name: {"em_voxel_nm": d.voxel_nm, "shape": list(d.shape), "levels": d.levels,
                         "em_s0_voxels": int(np.prod(d.shape)),
                         "em_voxels_all_levels": int(sum(np.prod(s) for *_, s in em_levels(d))),
                         "crops": [c.name for c in plan.crops if c.dataset == d.name],
                         "test_crops": [t.name for t in plan.tests if t.dataset == d.name]}
                for d in plan.datasets}
    crops = {c.name: {"dataset": c.dataset, "mode": c.case, "usage": c.usage,
                      "voxel_size": list(c.voxel_size), "translation": list(c.translation),
                      "shape": list(c.shape), "annotated": list(c.annotated),
                      "listed_unannotated": list(c.not_annotated), "off_grid": c.name in plan.off_grid}
             for c in plan.crops}
    tests = {t.name: {"dataset": t.dataset, "off_grid": t.name in plan.off_grid,
                      "labels": [{"label": lab.label, "voxel_size": list(lab.voxel_size),
                                  "translation": list(lab.translation), "shape": list(lab.shape)}
                                 for lab in t.labels]}
             for t in plan.tests}
    return datasets, crops, tests
