"""Reading the files that list crops: the toolbox's ``datasplit.csv`` (training crops, their
zarr stores and classes) and the challenge's ``test_crop_manifest.csv`` (what to predict)."""

from __future__ import annotations

import csv
import os
import re
from typing import Sequence

from converters.cellmap.zarr_tree import (
    CellMapFormatError,
    CropSource,
    TestCrop,
    _crop_id,
    _dataset_name,
    em_group_of,
)

__all__ = ["read_datasplit", "read_test_manifest", "read_test_manifest_rows"]


def read_datasplit(path: str | os.PathLike) -> list[CropSource]:
    """Read the toolbox's header-less ``datasplit.csv``.

    Each row is ``usage, raw zarr, raw dataset, gt zarr, gt dataset/[cls,cls,...]``.
    """
    crops = []
    with open(path, newline="", encoding="utf-8-sig") as fh:  # Excel writes a BOM
        reader = csv.reader(fh, strict=True)
        lineno = 0
        try:
            for row in reader:
                lineno = reader.line_num
                if row and "".join(row).strip():
                    crops.append(_datasplit_row(row, f"{path}:{lineno}"))
        except csv.Error as exc:
            raise CellMapFormatError(f"{path}:{reader.line_num}: not a CSV line ({exc}); {_DATASPLIT_COLUMNS}") from exc
    _refuse_repeated_crops(crops)
    return sorted(crops, key=lambda c: (c.dataset, c.crop_id))


def _refuse_repeated_crops(crops: Sequence[CropSource]) -> None:
    """A crop (dataset and crop number) listed on two rows: refuse, naming both ``file:line``.

    Each crop's output files are named after it: converting it twice would write the same
    files twice and list the same image twice in the datalist.
    """
    first: dict[str, CropSource] = {}
    for src in crops:
        if src.name in first:
            raise CellMapFormatError(
                f"{src.listed_at}: crop {src.crop_id} of dataset {src.dataset} ({src.name}) is listed again (first "
                f"at {first[src.name].listed_at}); each crop may be listed once: remove one of the two rows")
        first[src.name] = src


_USAGES = ("train", "validate")
_USAGE_HINTS = {
    "tes": "every datasplit row is a training item, split into folds: list held-out test crops in a "
           "--test_manifest, or leave them out of the datasplit",
    "val": "did you mean validate? (the toolbox's word; both usages are training items, split into folds)",
    "tra": "did you mean train?",
}
_DATASPLIT_COLUMNS = ("expected 5 columns, no header row: usage (train/validate), raw zarr, raw dataset, "
                      "gt zarr, gt dataset/[class,class,...] (the toolbox's datasplit.csv)")


def _datasplit_row(row: list[str], where: str) -> CropSource:
    """One ``datasplit.csv`` row; ``where`` is ``file:line`` for messages."""
    if len(row) != 5:
        raise CellMapFormatError(f"{where}: {len(row)} column(s); {_DATASPLIT_COLUMNS}")
    usage, raw_zarr, raw_ds, gt_zarr, gt_ds = (v.strip() for v in row)
    classes: tuple[str, ...] | None = None
    m = re.match(r"^(.*?)/?\[(.*)\]$", gt_ds)
    if m:
        gt_ds = m.group(1)
        from converters.cellmap.class_mapping import listed_class_names  # it imports this module

        classes = listed_class_names(m.group(2), where)
    if not re.search(r"crop(\d+)", gt_ds):
        what = "a header row" if usage.lower() == "usage" or not raw_zarr.endswith(".zarr") else "a row"
        raise CellMapFormatError(f"{where}: {what} whose gt dataset {gt_ds!r} names no crop (expected "
                                 f"'.../crop<N>'); {_DATASPLIT_COLUMNS}")
    if usage.lower() not in _USAGES:  # every row becomes a training item: a 'test' row would be trained on
        raise CellMapFormatError(f"{where}: usage {usage!r} is not train or validate (the first column); "
                                 + _USAGE_HINTS.get(usage.lower()[:3], "give train or validate"))
    return CropSource(_dataset_name(raw_zarr), _crop_id(gt_ds), raw_zarr, raw_ds.rstrip("/"), gt_zarr,
                      gt_ds.rstrip("/"), classes, usage, where)



def _parse_vector(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.strip().strip("[]").split(";"))


def read_test_manifest_rows(path: str | os.PathLike) -> dict[tuple[str, int], list[dict]]:
    """The labels to predict per ``(dataset, crop id)`` of a ``test_crop_manifest.csv``:
    dicts with ``label``, ``voxel_size``, ``translation`` (z, y, x, nm) and ``shape``.

    A crop's label listed on two rows is refused (:class:`CellMapFormatError`): a submission
    holds one array per crop and label, so one row would silently write over the other."""
    rows, lines = _manifest_rows(path)
    for key, labels in rows.items():
        _refuse_repeated_labels(path, key, labels, lines[key])
    return rows


_CropKey = tuple[str, int]


def _manifest_rows(path: str | os.PathLike) -> tuple[dict[_CropKey, list[dict]], dict[_CropKey, list[int]]]:
    """:func:`read_test_manifest_rows`, and the line number of each of those rows (same order)."""
    rows: dict[_CropKey, list[dict]] = {}
    lines: dict[_CropKey, list[int]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:  # Excel writes a BOM
        reader = csv.DictReader(fh)
        need = {"crop_name", "dataset", "class_label", "voxel_size", "translation", "shape"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise CellMapFormatError(f"{path}: expected columns {sorted(need)}, got {reader.fieldnames}")
        for row in reader:
            try:
                key = (row["dataset"], int(str(row["crop_name"]).removeprefix("crop")))
                entry = {
                    "label": row["class_label"],
                    "voxel_size": _parse_vector(row["voxel_size"]),
                    "translation": _parse_vector(row["translation"]),
                    "shape": tuple(int(v) for v in _parse_vector(row["shape"])),
                }
                if any(len(entry[k]) != 3 for k in ("voxel_size", "translation", "shape")):
                    raise ValueError("voxel_size, translation and shape need 3 values each (z;y;x)")
                if min(entry["voxel_size"]) <= 0 or min(entry["shape"]) <= 0:
                    raise ValueError("voxel_size and shape must be positive")
            except (TypeError, ValueError, AttributeError) as exc:
                raise CellMapFormatError(
                    f"{path}:{reader.line_num}: cannot read this row ({exc}); a row looks like "
                    "crop_name=101, dataset=jrc_x, class_label=mito, voxel_size/translation/shape=[z;y;x] "
                    "(the columns of the challenge's test_crop_manifest.csv)") from None
            rows.setdefault(key, []).append(entry)
            lines.setdefault(key, []).append(reader.line_num)
    return rows, lines


def _refuse_repeated_labels(path: str | os.PathLike, key: _CropKey, labels: list[dict], lines: list[int]) -> None:
    """A manifest listing one label of one test crop on two rows: refuse, naming both lines."""
    first: dict[str, int] = {}
    for entry, line in zip(labels, lines):
        if entry["label"] in first:
            raise CellMapFormatError(
                f"{path}:{line}: test crop {key[1]} of dataset {key[0]}, label {entry['label']!r}, is listed again "
                f"(first at line {first[entry['label']]}); each crop's label may be listed once: remove one of the "
                "two rows")
        first[entry["label"]] = line


def read_test_manifest(path: str | os.PathLike, em_zarr_by_dataset: dict[str, str]) -> list[TestCrop]:
    """Read a ``test_crop_manifest.csv`` into one :class:`TestCrop` per crop.

    ``em_zarr_by_dataset`` maps a dataset name to its ``.zarr`` path (from the datasplit
    or the data root). A dataset that is not there raises, naming the crop.
    """
    rows, lines = _manifest_rows(path)
    crops = []
    for (dataset, crop_id), labels in sorted(rows.items()):
        _refuse_repeated_labels(path, (dataset, crop_id), labels, lines[(dataset, crop_id)])
        em_zarr = em_zarr_by_dataset.get(dataset)
        if em_zarr is None:
            raise CellMapFormatError(
                f"{path}:{lines[(dataset, crop_id)][0]}: test crop {crop_id} is in dataset {dataset!r}, whose EM "
                "store is unknown; pass --data_root containing it or a --datasplit that lists it")
        crops.append(TestCrop(dataset, crop_id, em_zarr, em_group_of(em_zarr), tuple(labels),
                              f"{path}:{lines[(dataset, crop_id)][0]}"))
    return crops
