"""Folds, ``datalist.json`` and its side file from the per-crop conversion records."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from converters.folds import FoldItem, assign_folds
from datalists.annotated import ANNOTATED_KEY, encode_annotated

__all__ = ["DATALIST_FORMAT", "build_datalist"]

DATALIST_FORMAT = "cellmap-auto3dseg-datalist/1"


def build_datalist(records: Sequence[dict], class_table: Sequence[dict], target_spacing: Sequence[float],
                   num_folds: int) -> tuple[dict, dict, dict]:
    """Build ``(datalist, items_meta, fold_info)`` from conversion records.

    Training items carry ``image``, ``label``, ``fold`` and ``annotated_mask``; strings
    MONAI must not see (dataset, crop, test labels) go to ``items_meta``, keyed by image.
    """
    train = [r for r in records if r["kind"] == "train" and r["verdict"] == "converted"]
    names = {r["id"]: r["name"] for r in class_table}
    name_to_id = {v: k for k, v in names.items()}
    fold_items = [
        FoldItem(r["name"], r["dataset"],
                 frozenset(name_to_id[n] for n, c in r.get("class_voxels", {}).items() if n in name_to_id and c),
                 int(np.prod(r["output_grid"]["shape"])))
        for r in train
    ]
    folds, k, grouping = assign_folds(fold_items, num_folds)
    training, testing, meta = [], [], {}
    for r in records:
        if r["verdict"] != "converted":
            continue
        for item in r["items"]:
            common = {"dataset": r["dataset"], "crop": f"crop{r['crop_id']}", "crop_id": r["crop_id"],
                      "origin_nm": item["origin"], "spacing_nm": r["output_grid"]["spacing"], "shape_zyx": item["shape"],
                      "em_level": r.get("em_level"), "usage": r.get("usage")}
            if r["kind"] == "train":
                training.append({"image": item["image"], "label": item["label"], "fold": folds[r["name"]],
                                 ANNOTATED_KEY: encode_annotated(r["annotated_ids"])})
                meta[item["image"]] = dict(common, annotated=r["annotated_ids"],
                                           annotated_names=[names[i] for i in r["annotated_ids"]],
                                           tile_start=item.get("tile_start"), tile_stop=item.get("tile_stop"))
            else:
                testing.append({"image": item["image"]})
                meta[item["image"]] = dict(common, test_labels=r["test_labels"])
    datalist = {
        "format": DATALIST_FORMAT,
        "name": "cellmap",
        "modality": "em",
        "spacing": list(target_spacing),
        "axis_order": "NIfTI arrays are x,y,z with world units nm; 'spacing' is z,y,x nm",
        "num_folds": k,
        "labels": {"0": "background", **{str(r["id"]): r["name"] for r in class_table}},
        "class_table": class_table,
        "items_file": "datalist_items.json",
        "training": training,
        "testing": testing,
    }
    fold_info = {"requested": num_folds, "used": k, "grouping": grouping,
                 "crops_per_fold": {f: sorted(n for n, ff in folds.items() if ff == f) for f in range(k)}}
    return datalist, meta, fold_info
