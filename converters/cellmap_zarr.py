"""Reading CellMap Zarr v2 stores: crop discovery, datasplits, multiscales, annotations.

Everything here opens stores read-only and reads metadata (and the chunk listing where
needed), never voxel data: the converter decides what to read.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import zarr

from converters.geometry import Grid

__all__ = [
    "CropSource",
    "TestCrop",
    "Level",
    "ClassStatus",
    "CellMapFormatError",
    "open_readonly",
    "read_levels",
    "read_test_manifest_rows",
    "discover_crops",
    "read_datasplit",
    "read_test_manifest",
    "crop_annotation",
    "chunk_coverage",
    "find_em_group",
]

DEFAULT_EM_GROUP = "recon-1/em/fibsem-uint8"
GT_GLOBS = ("*/*.zarr/recon-*/labels/groundtruth/crop*", "*.zarr/recon-*/labels/groundtruth/crop*")
GT_GLOB = GT_GLOBS[0]


class CellMapFormatError(ValueError):
    """A store does not follow the CellMap layout; the message names the path."""


@dataclass(frozen=True)
class Level:
    """One level of an OME-NGFF multiscale group (z, y, x; nm)."""

    path: str
    scale: tuple[float, float, float]
    translation: tuple[float, float, float]


@dataclass(frozen=True)
class CropSource:
    """Where a training crop lives: the EM multiscale group and the crop's GT group."""

    dataset: str
    crop_id: int
    em_zarr: str
    em_group: str
    gt_zarr: str
    gt_group: str
    requested_classes: tuple[str, ...] = ()
    usage: str = "train"

    @property
    def name(self) -> str:
        return f"{self.dataset}_crop{self.crop_id}"


@dataclass(frozen=True)
class TestCrop:
    """A test crop from a ``test_crop_manifest.csv``: one ROI, the labels to predict."""

    dataset: str
    crop_id: int
    em_zarr: str
    em_group: str
    labels: tuple[dict, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"{self.dataset}_crop{self.crop_id}"


@dataclass(frozen=True)
class ClassStatus:
    """Whether a class is annotated in a crop, and how we know."""

    name: str
    annotated: bool
    reason: str  # "annotated", "all unknown", "no chunk on disk", "not in class_names", "no array"
    instance: bool = False


def open_readonly(path: str | os.PathLike) -> zarr.hierarchy.Group:
    """Open a zarr v2 group read-only, with a clear error when it is not one."""
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for "not a group"
        raise CellMapFormatError(f"{path}: not a readable zarr v2 group ({exc})") from exc


def read_levels(group: zarr.hierarchy.Group, where: str = "") -> list[Level]:
    """The levels of an OME-NGFF 0.4 multiscale group, finest first.

    Raises
    ------
    CellMapFormatError
        If the group has no ``multiscales`` attribute or a level lacks scale/translation.
    """
    ms = group.attrs.get("multiscales")
    if not ms:
        raise CellMapFormatError(f"{where or group.name}: no 'multiscales' attribute (expected OME-NGFF 0.4)")
    levels = []
    for ds in ms[0]["datasets"]:
        scale = translation = None
        for tr in ds.get("coordinateTransformations", []):
            if tr.get("type") == "scale":
                scale = tuple(float(v) for v in tr["scale"])
            elif tr.get("type") == "translation":
                translation = tuple(float(v) for v in tr["translation"])
        if scale is None:
            raise CellMapFormatError(f"{where or group.name}/{ds['path']}: no scale transformation")
        levels.append(Level(ds["path"], scale, translation or (0.0, 0.0, 0.0)))
    return sorted(levels, key=lambda lv: float(np.prod(lv.scale)))


def _dataset_name(zarr_path: str) -> str:
    return Path(zarr_path.rstrip("/")).name.removesuffix(".zarr")


def _crop_id(gt_group: str) -> int:
    m = re.search(r"crop(\d+)", gt_group)
    if not m:
        raise CellMapFormatError(f"{gt_group}: cannot read a crop number (expected '.../crop<N>')")
    return int(m.group(1))


def find_em_group(zarr_path: str) -> str:
    """The EM multiscale group of a dataset store (``recon-1/em/fibsem-uint8`` normally)."""
    root = Path(zarr_path)
    if (root / DEFAULT_EM_GROUP / ".zattrs").exists():
        return DEFAULT_EM_GROUP
    candidates = sorted(p.parent.relative_to(root).as_posix() for p in root.glob("recon-*/em/*/.zattrs"))
    if not candidates:
        raise CellMapFormatError(f"{zarr_path}: no EM group found under recon-*/em/ (expected {DEFAULT_EM_GROUP})")
    return candidates[0]


def discover_crops(data_root: str | os.PathLike) -> list[CropSource]:
    """Find every crop under ``<data_root>/*/*.zarr/recon-*/labels/groundtruth/crop*``.

    Stores directly in the root (``<data_root>/*.zarr``) are found too. Returned sorted
    by dataset, then crop number.
    """
    root = Path(data_root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data_root {root}: no such folder")
    crops = []
    hits = sorted({p for pattern in GT_GLOBS for p in glob.glob(str(root / pattern))})
    for gt in hits:
        gt_path = Path(gt)
        if not (gt_path / ".zgroup").exists():
            continue
        zarr_path = str(gt_path.parents[3])
        em_group = find_em_group(zarr_path)
        rel = gt_path.relative_to(zarr_path).as_posix()
        crops.append(CropSource(_dataset_name(zarr_path), _crop_id(rel), zarr_path, em_group, zarr_path, rel))
    return sorted(crops, key=lambda c: (c.dataset, c.crop_id))


def read_datasplit(path: str | os.PathLike) -> list[CropSource]:
    """Read the toolbox's header-less ``datasplit.csv``.

    Each row is ``usage, raw zarr, raw dataset, gt zarr, gt dataset/[cls,cls,...]``.
    """
    crops = []
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 5:
                raise CellMapFormatError(
                    f"{path}:{lineno}: expected 5 columns (usage, raw zarr, raw dataset, gt zarr, gt dataset), got {len(row)}"
                )
            usage, raw_zarr, raw_ds, gt_zarr, gt_ds = (v.strip() for v in row)
            classes: tuple[str, ...] = ()
            m = re.match(r"^(.*?)/?\[(.*)\]$", gt_ds)
            if m:
                gt_ds = m.group(1)
                classes = tuple(c.strip() for c in m.group(2).split(",") if c.strip())
            crops.append(
                CropSource(_dataset_name(raw_zarr), _crop_id(gt_ds), raw_zarr, raw_ds.rstrip("/"), gt_zarr,
                           gt_ds.rstrip("/"), classes, usage)
            )
    return sorted(crops, key=lambda c: (c.dataset, c.crop_id))


def _parse_vector(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.strip().strip("[]").split(";"))


def read_test_manifest_rows(path: str | os.PathLike) -> dict[tuple[str, int], list[dict]]:
    """The labels to predict per ``(dataset, crop id)`` of a ``test_crop_manifest.csv``:
    dicts with ``label``, ``voxel_size``, ``translation`` (z, y, x, nm) and ``shape``."""
    rows: dict[tuple[str, int], list[dict]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"crop_name", "dataset", "class_label", "voxel_size", "translation", "shape"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise CellMapFormatError(f"{path}: expected columns {sorted(need)}, got {reader.fieldnames}")
        for row in reader:
            key = (row["dataset"], int(str(row["crop_name"]).removeprefix("crop")))
            rows.setdefault(key, []).append(
                {
                    "label": row["class_label"],
                    "voxel_size": _parse_vector(row["voxel_size"]),
                    "translation": _parse_vector(row["translation"]),
                    "shape": tuple(int(v) for v in _parse_vector(row["shape"])),
                }
            )
    return rows


def read_test_manifest(path: str | os.PathLike, em_zarr_by_dataset: dict[str, str]) -> list[TestCrop]:
    """Read a ``test_crop_manifest.csv`` into one :class:`TestCrop` per crop.

    ``em_zarr_by_dataset`` maps a dataset name to its ``.zarr`` path (from the datasplit
    or the data root). A dataset that is not there raises, naming the crop.
    """
    rows = read_test_manifest_rows(path)
    crops = []
    for (dataset, crop_id), labels in sorted(rows.items()):
        em_zarr = em_zarr_by_dataset.get(dataset)
        if em_zarr is None:
            raise CellMapFormatError(
                f"{path}: test crop {crop_id} is in dataset {dataset!r}, whose EM store is unknown; "
                "pass --data_root containing it or a --datasplit that lists it"
            )
        crops.append(TestCrop(dataset, crop_id, em_zarr, find_em_group(em_zarr), tuple(labels)))
    return crops


def _annotation(attrs: Any) -> dict:
    return dict(attrs.get("cellmap", {}).get("annotation", {}))


def _array_status(arr: zarr.Array) -> tuple[bool, str]:
    """Annotated or not, from an array's ``complement_counts`` or its chunks on disk."""
    ann = _annotation(arr.attrs)
    counts = ann.get("complement_counts")
    if counts is not None:
        if int(counts.get("unknown", 0)) >= arr.size:
            return False, "all unknown"
        return True, "annotated"
    if arr.nchunks_initialized == 0:
        return False, "no chunk on disk"
    return True, "annotated"


def crop_annotation(gt_root: zarr.hierarchy.Group, gt_group: str) -> tuple[Grid | None, dict[str, ClassStatus], list[str]]:
    """The GT grid of a crop, the annotation status of each class it names, and notes.

    The grid comes from the ``all`` group (or the first class group) at level ``s0``.
    A class is annotated unless its array is all ``unknown`` (``complement_counts``),
    has no chunk on disk (when no counts are given), or it is missing from
    ``class_names``.
    """
    crop = gt_root[gt_group]
    notes: list[str] = []
    names = _annotation(crop.attrs).get("class_names")
    if names is None:
        names = sorted(k for k in crop.group_keys())
        notes.append("crop has no cellmap class_names attribute; using its sub-groups")
    names = [n for n in names if n != "all"]
    statuses: dict[str, ClassStatus] = {}
    for sub in crop.group_keys():
        if sub != "all" and sub not in names:
            statuses[sub] = ClassStatus(sub, False, "not in class_names")
    grid = None
    for name in ["all", *names]:
        if name not in crop:
            if name != "all":
                statuses[name] = ClassStatus(name, False, "no array")
            continue
        group = crop[name]
        try:
            levels = read_levels(group, f"{gt_group}/{name}")
        except CellMapFormatError:
            if name != "all":
                statuses[name] = ClassStatus(name, False, "no multiscales")
            continue
        arr = group[levels[0].path]
        if grid is None:
            grid = Grid(levels[0].translation, levels[0].scale, arr.shape)
        if name == "all":
            continue
        kind = _annotation(group.attrs).get("annotation_type", {}).get("type", "")
        annotated, why = _array_status(arr)
        statuses[name] = ClassStatus(name, annotated, why, kind == "instance_segmentation")
    return grid, statuses, notes


def chunk_coverage(arr: zarr.Array, start: Iterable[int], stop: Iterable[int]) -> float:
    """Fraction of the chunks overlapping ``arr[start:stop]`` that exist on disk.

    Missing chunks read as the fill value: a level with missing chunks in a crop's region
    would give a blank image there (the CellMap fetch tool downloads only some levels
    near each crop).
    """
    start_a = np.maximum(np.asarray(list(start)), 0)
    stop_a = np.minimum(np.asarray(list(stop)), arr.shape)
    if np.any(stop_a <= start_a):
        return 0.0
    chunks = np.asarray(arr.chunks)
    first, last = start_a // chunks, (stop_a - 1) // chunks
    sep = getattr(arr, "_dimension_separator", None) or "."
    prefix = arr.path + "/" if arr.path else ""
    store = arr.chunk_store if arr.chunk_store is not None else arr.store
    total = present = 0
    for i in range(first[0], last[0] + 1):
        for j in range(first[1], last[1] + 1):
            for k in range(first[2], last[2] + 1):
                total += 1
                present += f"{prefix}{i}{sep}{j}{sep}{k}" in store
    return present / total
