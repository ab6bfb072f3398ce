"""Reading CellMap Zarr v2 stores: crop discovery, multiscales, annotations (the datasplit and
test manifest readers are in :mod:`converters.cellmap.listings`, and are also found here).

Everything here opens stores read-only and reads metadata (and the chunk listing where
needed), never voxel data: the converter decides what to read.
"""

from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr

from converters.cellmap.chunks import CheckedArray, chunk_coverage, complement_mismatch, missing_chunks  # noqa: F401
from converters.cellmap.multiscale_checks import all_array_grid_problem
from converters.geometry import Grid

__all__ = [
    "CropSource",
    "TestCrop",
    "Level",
    "ClassStatus",
    "CellMapFormatError",
    "CheckedArray",
    "level_array",
    "ChunkReadError",
    "open_readonly",
    "read_levels",
    "discover_crops",
    "crop_annotation",
    "chunk_coverage",
    "find_em_group",
    "em_group_of",
    "NOT_LISTED",
]

DEFAULT_EM_GROUP = "recon-1/em/fibsem-uint8"
GT_GLOBS = ("*/*.zarr/recon-*/labels/groundtruth/crop*", "*.zarr/recon-*/labels/groundtruth/crop*")
GT_GLOB = GT_GLOBS[0]


class CellMapFormatError(ValueError):
    """A store does not follow the CellMap layout; the message names the path."""


class ChunkReadError(CellMapFormatError):
    """A chunk of an input array cannot be read or decoded; the message names it."""


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
    #: the classes its ``datasplit.csv`` row lists (None: no list, every class the crop annotates)
    requested_classes: tuple[str, ...] | None = None
    usage: str = "train"
    listed_at: str = ""  # ``file:line`` of its datasplit row, for messages

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
    listed_at: str = ""  # ``file:line`` of its first manifest row, for messages

    @property
    def name(self) -> str:
        return f"{self.dataset}_crop{self.crop_id}"


@dataclass(frozen=True)
class ClassStatus:
    """Whether a class is annotated in a crop, and how we know."""

    name: str
    annotated: bool
    reason: str  # "annotated", "all unknown", "no chunk on disk", "not in class_names", "no array", NOT_LISTED
    instance: bool = False


#: reason of a class the crop annotates but its ``datasplit.csv`` row does not list
NOT_LISTED = "not listed in datasplit.csv"


def open_readonly(path: str | os.PathLike) -> zarr.hierarchy.Group:
    """Open a zarr v2 group read-only, with a clear error when it is not one."""
    if not Path(path).exists():
        where = "" if Path(path).is_absolute() else f" (relative to the current folder {Path.cwd()})"
        raise CellMapFormatError(f"{path}: no such folder{where}; check the path (the datasplit or --data_root names "
                                 "it) or download that dataset")
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
    attrs_file = zattrs_path(group, where)
    if not _has_zattrs(group):
        raise CellMapFormatError(f"{attrs_file} is missing: the group has no OME-NGFF 'multiscales' attributes; "
                                 "download it again (or the whole crop/dataset)")
    ms = group.attrs.get("multiscales")
    if not ms:
        raise CellMapFormatError(f"{attrs_file}: no 'multiscales' attribute (expected OME-NGFF 0.4)")
    try:
        to_nm = axes_to_nm(ms[0].get("axes"))
        levels = [_level(ds, group, to_nm) for ds in ms[0]["datasets"]]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CellMapFormatError(f"{attrs_file}: unreadable 'multiscales' ({type(exc).__name__}: {exc}); expected "
                                 "OME-NGFF 0.4 with 3 axes (z, y, x) and a scale and translation of 3 values "
                                 "per dataset: fix or download that file again") from exc
    return sorted(levels, key=lambda lv: float(np.prod(lv.scale)))


def level_array(group: zarr.hierarchy.Group, level: Level, where: str = "") -> zarr.Array:
    """The array of one multiscale ``level`` of ``group``; CellMapFormatError naming it when the
    ``multiscales`` attribute lists it but the store has no such array (an incomplete download)."""
    try:
        arr = group[level.path]
    except KeyError:
        arr = None
    if not isinstance(arr, zarr.Array):
        raise CellMapFormatError(
            f"{where or group.name}/{level.path}: the multiscales attribute lists this level but there is no such "
            "array (an incomplete download or copy?); download it again, or remove the array's folder to convert "
            "without it")
    return arr


def zattrs_path(group: zarr.hierarchy.Group, where: str = "") -> str:
    """The ``.zattrs`` file of a group, for messages (the store path when it has one)."""
    root = getattr(group.store, "path", None)
    if root:
        return str(Path(root) / group.path / ".zattrs") if group.path else str(Path(root) / ".zattrs")
    return f"{where or group.name}/.zattrs"


def _has_zattrs(group: zarr.hierarchy.Group) -> bool:
    key = f"{group.path}/.zattrs" if group.path else ".zattrs"
    return key in group.store


#: nanometres per unit of the OME-NGFF ``axes`` units a store may use
_NM_PER_UNIT = {"nanometer": 1.0, "nm": 1.0, "micrometer": 1000.0, "um": 1000.0, "µm": 1000.0,
                "angstrom": 0.1, "millimeter": 1e6, "mm": 1e6, "picometer": 1e-3}


def axes_to_nm(axes: Any) -> tuple[float, float, float]:
    """Nanometres per unit of each axis of an OME-NGFF ``axes`` list, which must be (z, y, x).

    No ``axes`` (older stores) means (z, y, x) in nanometres. Another axis order, or a unit that
    is not a length, raises ValueError: reading them as z, y, x in nm would place every voxel wrong.

    >>> axes_to_nm([{"name": n, "unit": "micrometer"} for n in "zyx"])
    (1000.0, 1000.0, 1000.0)
    >>> axes_to_nm([{"name": n, "unit": "nanometer"} for n in "xyz"])
    Traceback (most recent call last):
    ...
    ValueError: axes are x, y, z; this reader needs them in the order z, y, x (CellMap's)
    """
    if not axes:
        return (1.0, 1.0, 1.0)
    names = [str(a.get("name", "?") if isinstance(a, dict) else a).lower() for a in axes]
    if names != ["z", "y", "x"]:
        raise ValueError(f"axes are {', '.join(names)}; this reader needs them in the order z, y, x (CellMap's)")
    factors = []
    for a in axes:
        unit = str(a.get("unit", "nanometer") if isinstance(a, dict) else "nanometer").lower()
        if unit not in _NM_PER_UNIT:
            raise ValueError(f"axis {a.get('name')!r} has unit {unit!r}; expected a length such as nanometer "
                             f"({', '.join(sorted(_NM_PER_UNIT))})")
        factors.append(_NM_PER_UNIT[unit])
    return tuple(factors)


def _level(ds: dict, group: zarr.hierarchy.Group, to_nm: Sequence[float] = (1.0, 1.0, 1.0)) -> Level:
    """One ``datasets`` entry as a :class:`Level`; a wrong number of axes raises ValueError."""
    scale = translation = None
    for tr in ds.get("coordinateTransformations", []):
        if tr.get("type") == "scale":
            scale = tuple(float(v) for v in tr["scale"])
        elif tr.get("type") == "translation":
            translation = tuple(float(v) for v in tr["translation"])
    if scale is None:
        raise ValueError(f"dataset {ds['path']!r} has no scale transformation")
    translation = translation or (0.0,) * len(scale)
    ndim = group[ds["path"]].ndim if ds["path"] in group else 3
    if len(scale) != 3 or len(translation) != 3 or ndim != 3:
        raise ValueError(f"dataset {ds['path']!r}: scale has {len(scale)} values, translation {len(translation)}, "
                         f"the array {ndim} dimensions; all must be 3 (z, y, x)")
    if not all(math.isfinite(v) and v > 0 for v in scale) or not all(math.isfinite(v) for v in translation):
        raise ValueError(f"dataset {ds['path']!r}: scale {list(scale)} and translation {list(translation)}: every "
                         "scale must be a finite number greater than 0 and every translation a finite number")
    return Level(ds["path"], tuple(v * f for v, f in zip(scale, to_nm)),
                 tuple(v * f for v, f in zip(translation, to_nm)))


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
    if candidates:
        return candidates[0]
    groups = sorted(p.parent for p in root.glob("recon-*/em/*/.zgroup"))
    if groups:
        raise CellMapFormatError(f"{groups[0] / '.zattrs'} is missing: the EM group has no OME-NGFF 'multiscales' "
                                 "attributes, so its levels cannot be located; download that file again (or the "
                                 "dataset's EM)")
    raise CellMapFormatError(f"{zarr_path}: no EM group found under recon-*/em/ (expected {DEFAULT_EM_GROUP})")


def em_group_of(zarr_path: str) -> str:
    """:func:`find_em_group`, else the first ``recon-*/em/*`` group with a ``.zgroup``, else the default:
    a damaged EM group then fails its crops, each named when read, not the whole batch."""
    try:
        return find_em_group(zarr_path)
    except CellMapFormatError:
        root = Path(zarr_path)
        groups = sorted(p.parent.relative_to(root).as_posix() for p in root.glob("recon-*/em/*/.zgroup"))
        return groups[0] if groups else DEFAULT_EM_GROUP


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
        em_group = em_group_of(zarr_path)
        rel = gt_path.relative_to(zarr_path).as_posix()
        crops.append(CropSource(_dataset_name(zarr_path), _crop_id(rel), zarr_path, em_group, zarr_path, rel))
    return sorted(crops, key=lambda c: (c.dataset, c.crop_id))


def _annotation(attrs: Any) -> dict:
    return dict(attrs.get("cellmap", {}).get("annotation", {}))


def _array_status(arr: zarr.Array, group: zarr.hierarchy.Group | None = None, where: str = "") -> tuple[bool, str]:
    """Annotated or not, from an array's ``complement_counts`` or its chunks on disk.

    An array with chunks missing (they read as the fill value) whose voxels disagree with its
    ``complement_counts`` is damaged, as an interrupted download leaves it: raises
    :class:`CellMapFormatError` naming the array and the missing chunks."""
    ann = _annotation(arr.attrs)
    counts = ann.get("complement_counts")
    if counts is not None:
        if int(counts.get("unknown", 0)) >= arr.size:
            return False, "all unknown"
        if arr.nchunks_initialized < arr.nchunks and (bad := complement_mismatch(arr, counts, _counted_values(
                ann, _annotation(group.attrs) if group is not None else {}))):
            missing = missing_chunks(arr)
            shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            raise CellMapFormatError(
                f"{where}: {len(missing)} of {arr.nchunks} chunk(s) are not on disk ({shown}) and the voxels read "
                f"disagree with the array's complement_counts ({'; '.join(bad)}): the download was cut short? Fetch "
                "this crop again (missing chunks read as the fill value, which would train as background)")
        return True, "annotated"
    if arr.nchunks_initialized == 0:
        return False, "no chunk on disk"
    return True, "annotated"


def _counted_values(ann: dict, group_ann: dict) -> dict[str, int]:
    """The values ``complement_counts`` counts (``absent``, ``unknown``), from the array's or its
    group's encoding; CellMap's defaults (absent 0; unknown 255 for semantic arrays) otherwise."""
    kind = (ann.get("annotation_type") or group_ann.get("annotation_type") or {})
    enc = kind.get("encoding") or {}
    out = {"absent": 0} if kind.get("type") == "instance_segmentation" else {"absent": 0, "unknown": 255}
    out.update({str(k): int(v) for k, v in enc.items() if k in ("absent", "unknown")})
    return out


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
    all_grid, class_grids = None, {}
    for name in ["all", *names]:
        if name not in crop:
            if name != "all":
                statuses[name] = ClassStatus(name, False, "no array")
            continue
        group = crop[name]
        try:
            levels = read_levels(group, f"{gt_group}/{name}")
        except CellMapFormatError as exc:
            notes.append(f"{name}: {exc}")
            if name != "all":
                statuses[name] = ClassStatus(name, False, "no multiscales")
            continue
        arr = level_array(group, levels[0], f"{getattr(gt_root.store, 'path', '') or ''}/{gt_group}/{name}")
        if grid is None:
            _refuse_empty(arr, f"{getattr(gt_root.store, 'path', '') or ''}/{gt_group}/{name}/{levels[0].path}")
            grid = Grid(levels[0].translation, levels[0].scale, arr.shape)
        if name == "all":
            all_grid = grid
            continue
        class_grids[name] = Grid(levels[0].translation, levels[0].scale, arr.shape)
        kind = _annotation(group.attrs).get("annotation_type", {}).get("type", "")
        where = f"{getattr(gt_root.store, 'path', '') or ''}/{gt_group}/{name}/{levels[0].path}"
        annotated, why = _array_status(arr, group, where)
        if annotated and "complement_counts" not in _annotation(arr.attrs) and (gone := missing_chunks(arr)):
            notes.append(f"{name}/{levels[0].path}: {len(gone)} of {arr.nchunks} chunk(s) are not on disk; they read "
                         f"as the fill value {arr.fill_value} and there are no complement_counts to check them "
                         "against: if the download was cut short, fetch the crop again")
        statuses[name] = ClassStatus(name, annotated, why, kind == "instance_segmentation")
    if all_grid is not None and class_grids and (
            note := all_array_grid_problem(f"{getattr(gt_root.store, 'path', '') or ''}/{gt_group}", all_grid,
                                           class_grids, CellMapFormatError)):
        notes.append(note)
    return grid, statuses, notes


def _refuse_empty(arr: zarr.Array, where: str) -> None:
    """A crop's grid array with no voxels (a zero in its shape): the crop's labels are damaged."""
    if 0 in arr.shape:
        raise CellMapFormatError(
            f"{where}: the label array has shape {tuple(int(n) for n in arr.shape)}, i.e. no voxels; its .zarray "
            "is damaged or the crop was written empty: download the crop again, or leave it out of the datasplit")


_LISTINGS = ("read_datasplit", "read_test_manifest", "read_test_manifest_rows")


def __getattr__(name: str) -> Any:  # the readers of listing files moved to listings.py
    if name in _LISTINGS:
        from converters.cellmap import listings

        return getattr(listings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
