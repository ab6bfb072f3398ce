"""Folds, ``datalist.json`` and its side file from the per-crop conversion records."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from converters.folds import FoldItem, SpatialSplit, assign_part_folds, describe_split
from datalists.annotated import ANNOTATED_KEY, encode_annotated
from datalists.cellmap_classes import LABEL_RULES

__all__ = ["DATALIST_FORMAT", "build_datalist", "layout_folds", "split_from_dict", "tile_name", "validate_new_datalist"]

DATALIST_FORMAT = "cellmap-auto3dseg-datalist/1"


def tile_name(name: str, i: int, n: int) -> str:
    """The file stem of tile ``i`` of ``n`` of a crop: the crop's name when it is not tiled.

    >>> tile_name("crop1", 0, 1), tile_name("crop1", 3, 4)
    ('crop1', 'crop1_t003')
    """
    return name if n == 1 else f"{name}_t{i:03d}"


def split_from_dict(d: Mapping | None) -> SpatialSplit | None:
    """The :class:`~converters.folds.SpatialSplit` a record stores as a dict (None: not cut).

    >>> split_from_dict({"parts": 2, "axis": 1, "axis_name": "y", "gap": 16})
    SpatialSplit(parts=2, axis=1, gap=16)
    """
    return None if not d else SpatialSplit(int(d["parts"]), int(d["axis"]), int(d["gap"]))


def layout_folds(crops: Sequence[tuple[FoldItem, Sequence[int], SpatialSplit | None]], num_folds: int,
                 notes: Sequence[str] = ()) -> tuple[dict[tuple[str, int], int], dict]:
    """Folds of every crop part, and the ``fold_info`` that says how they were made.

    Parameters
    ----------
    crops : sequence of (FoldItem, shape, split)
        Each training crop (``FoldItem.key`` is its name), its output shape (z, y, x)
        and how it is cut into spatial folds (None: whole).
    num_folds : int
        Folds asked for.
    notes : sequence of str
        Why there are fewer folds than asked (:func:`~converters.folds.plan_spatial_folds`).

    Returns
    -------
    folds : dict
        ``(crop name, part) -> fold`` (part 0 for a crop that is not cut).
    fold_info : dict
        ``requested``, ``used``, ``grouping`` (``dataset``, ``crop`` or ``spatial``),
        ``gap_voxels``, ``how`` (readable lines) and ``notes``.

    Examples
    --------
    >>> folds, info = layout_folds([(FoldItem("crop1", "sbem", frozenset({1})), (16, 768, 704),
    ...                              SpatialSplit(2, 1, 16))], 2)
    >>> folds, info["used"], info["how"][0][:44]
    ({('crop1', 0): 0, ('crop1', 1): 1}, 2, 'crop1: cut into 2 spatial folds along y (y 0')
    """
    parts = {it.key: (split.parts if split else 1) for it, _, split in crops}
    folds, k, grouping = assign_part_folds([it for it, _, _ in crops], parts, num_folds)
    datasets = sorted({it.dataset for it, _, _ in crops})
    how = []
    if grouping == "dataset":
        how.append(f"grouped by dataset: {len(datasets)} dataset(s) in {k} fold(s) (a dataset's crops and tiles "
                   "stay in one fold)")
    elif grouping == "crop":
        how.append(f"grouped by crop: {len(crops)} crop(s) of {len(datasets)} dataset(s) in {k} fold(s) (fewer "
                   "datasets than folds; a crop's tiles stay in one fold)")
    else:
        for it, shape, split in crops:
            if split:
                how.append(describe_split(str(it.key), shape, split, [folds[(it.key, p)] for p in range(split.parts)]))
            else:
                how.append(f"{it.key}: whole, in fold {folds[(it.key, 0)]}")
    gaps = sorted({split.gap for _, _, split in crops if split})
    info = {"requested": num_folds, "used": k, "grouping": grouping, "gap_voxels": gaps[0] if gaps else None,
            "how": how, "notes": list(notes)}
    return folds, info


def build_datalist(records: Sequence[dict], class_table: Sequence[dict], target_spacing: Sequence[float],
                   num_folds: int, notes: Sequence[str] = ()) -> tuple[dict, dict, dict]:
    """Build ``(datalist, items_meta, fold_info)`` from conversion records.

    Training items carry ``image``, ``label``, ``fold`` and ``annotated_mask``; strings
    MONAI must not see (dataset, crop, test labels) go to ``items_meta``, keyed by image,
    with each item's fold and box (``tile_start``/``tile_stop``, output voxels of its
    crop, z, y, x) and, for a crop cut into spatial folds, ``spatial_fold``.
    ``fold_info`` is :func:`layout_folds`'s, plus ``crops_per_fold`` and ``tiles``.
    """
    train = [r for r in records if r["kind"] == "train" and r["verdict"] == "converted"]
    names = {r["id"]: r["name"] for r in class_table}
    name_to_id = {v: k for k, v in names.items()}
    crops = [
        (FoldItem(r["name"], r["dataset"],
                  frozenset(name_to_id[n] for n, c in r.get("class_voxels", {}).items() if n in name_to_id and c),
                  int(np.prod(r["output_grid"]["shape"]))),
         r["output_grid"]["shape"], split_from_dict(r.get("split")))
        for r in train
    ]
    folds, fold_info = layout_folds(crops, num_folds, notes)
    training, testing, meta, tiles = [], [], {}, []
    for r in records:
        if r["verdict"] != "converted":
            continue
        for item in r["items"]:
            common = {"dataset": r["dataset"], "crop": f"crop{r['crop_id']}", "crop_id": r["crop_id"],
                      "origin_nm": item["origin"], "spacing_nm": r["output_grid"]["spacing"],
                      "shape_zyx": item["shape"],
                      "em_level": r.get("em_level"), "usage": r.get("usage")}
            if r["kind"] == "train":
                part = int(item.get("part", 0))
                fold = folds[(r["name"], part)]
                training.append({"image": item["image"], "label": item["label"], "fold": fold,
                                 ANNOTATED_KEY: encode_annotated(r["annotated_ids"])})
                split = r.get("split")
                meta[item["image"]] = dict(common, annotated=r["annotated_ids"],
                                           annotated_names=[names[i] for i in r["annotated_ids"]],
                                           tile_start=item.get("tile_start"), tile_stop=item.get("tile_stop"),
                                           fold=fold, spatial_fold=dict(split, part=part) if split else None)
                tiles.append({"image": item["image"], "crop": r["name"], "start": item.get("tile_start"),
                              "stop": item.get("tile_stop"), "fold": fold})
            else:
                testing.append({"image": item["image"]})
                meta[item["image"]] = dict(common, test_labels=r["test_labels"])
    datalist = {
        "format": DATALIST_FORMAT,
        "name": "cellmap",
        "modality": "em",
        "spacing": list(target_spacing),
        "axis_order": "NIfTI arrays are x,y,z with world units nm; 'spacing' is z,y,x nm",
        "num_folds": fold_info["used"],
        "labels": {"0": "background", **{str(r["id"]): r["name"] for r in class_table}},
        "class_table": class_table,
        "label_rules": LABEL_RULES,
        "items_file": "datalist_items.json",
        "training": training,
        "testing": testing,
    }
    fold_info["crops_per_fold"] = {f: sorted({n for (n, _), ff in folds.items() if ff == f})
                                   for f in range(fold_info["used"])}
    fold_info["tiles"] = tiles
    return datalist, meta, fold_info


def validate_new_datalist(datalist: dict, root: Path, allow_single_fold: bool = False) -> dict:
    """``{"ok": True, "summary": ...}`` for a converter's new datalist that validates (it becomes
    ``root/datalist.json``), else ``{"ok": False, "problems": [...]}`` naming
    ``root/datalist.invalid.json``, where :func:`converters.outputs.write_datalist_marker` puts it."""
    from converters.outputs import INVALID_DATALIST
    from datalists.validate import DatalistError, validate_datalist

    source = str(Path(root) / "datalist.json")
    try:
        return {"ok": True, "summary": validate_datalist(datalist, root, check_files=True, check_shapes=True,
                                                         allow_single_fold=allow_single_fold, source=source)}
    except DatalistError as exc:
        invalid = str(Path(root) / INVALID_DATALIST)
        return {"ok": False, "problems": [p.replace(source, invalid) for p in exc.problems]}
