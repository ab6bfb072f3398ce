"""Folds, ``datalist.json``, its side file and the report of a 2-D cell conversion."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from converters.datalist_writer import DATALIST_FORMAT
from converters.folds import FoldItem, assign_folds
from datalists.annotated import ANNOTATED_KEY, encode_annotated
from datalists.cell_classes import CELL_CLASS_TABLE, CELL_DATA_KIND

__all__ = ["build_cell_datalist", "build_cell_report", "render_cell_report_markdown"]


def build_cell_datalist(records: Sequence[dict], num_folds: int) -> tuple[dict, dict, dict]:
    """``(datalist, items_meta, fold_info)`` from the per-image records.

    Each training image is one fold group, so the overlapping tiles of a large image
    never end up in different folds. Every training item annotates every class.
    """
    train = [r for r in records if r["kind"] == "train" and r["verdict"] == "converted"]
    present = {r["stem"]: frozenset(i + 1 for i, n in enumerate(("cell_interior", "cell_contact"))
                                    if r.get("class_pixels", {}).get(n)) | {3} for r in train}
    folds, k, _ = assign_folds([FoldItem(r["stem"], r["stem"], present[r["stem"]],
                                         int(r["shape"][0]) * int(r["shape"][1])) for r in train], num_folds)
    every = encode_annotated(r["id"] for r in CELL_CLASS_TABLE)
    training, testing, meta = [], [], {}
    for r in records:
        if r["verdict"] != "converted":
            continue
        for item in r["items"]:
            common = {"stem": r["stem"], "source": r["image"], "usage": r["kind"], "original_shape": r["shape"],
                      "tile_start": item["tile_start"], "tile_stop": item["tile_stop"],
                      "pixel_size_um": r.get("pixel_size")}
            if r["kind"] == "train":
                training.append({"image": item["image"], "label": item["label"], "fold": folds[r["stem"]],
                                 ANNOTATED_KEY: every})
                meta[item["image"]] = dict(common, instances=r.get("instances"), cells=r.get("cells"),
                                           tiled=bool(r.get("tiled")))
            else:
                testing.append({"image": item["image"]})
                meta[item["image"]] = dict(common, blank=True) if r.get("blank") else common
    datalist = {
        "format": DATALIST_FORMAT,
        "name": "cells2d",
        "kind": CELL_DATA_KIND,
        "modality": "light_microscopy",
        "spatial_dims": 2,
        "spacing": [1.0, 1.0],
        "intensity_range": [0, 255],
        "axis_order": "NIfTI arrays are x (column), y (row), 1, channel; images are uint8, 3 channels, each "
                      "normalised between its 1st and 99th percentile of non-zero pixels",
        "num_folds": k,
        "labels": {"0": "background", **{str(r["id"]): r["name"] for r in CELL_CLASS_TABLE}},
        "class_table": CELL_CLASS_TABLE,
        "items_file": "datalist_items.json",
        "training": training,
        "testing": testing,
    }
    fold_info = {"requested": num_folds, "used": k, "grouping": "image",
                 "images_per_fold": {f: sorted(s for s, ff in folds.items() if ff == f) for f in range(k)}}
    return datalist, meta, fold_info


def build_cell_report(records: Sequence[dict], settings: dict, fold_info: dict, validation: dict,
                      out_dir: str, unmatched_labels: Sequence[dict] = (),
                      unread_subfolders: Sequence[dict] = ()) -> dict:
    """The report written as ``conversion_report.json``.

    ``images`` holds every image's record, testing images that failed included (the
    submission checks against them that no testing image is left without a label file);
    ``unmatched_labels`` the label files that are no image's label; ``unread_subfolders``
    the files in subfolders of --images and --labels, which are not read
    (:func:`converters.cells.subfolders.unread_subfolders`).
    """
    counts = Counter(r["verdict"] for r in records)
    reasons = Counter(r["reason"] for r in records if r["verdict"] == "skipped")
    failures = Counter(r["reason"] for r in records if r["verdict"] == "failed")
    return {
        "output_dir": out_dir,
        "settings": settings,
        "summary": {
            "images": len(records),
            "converted": counts.get("converted", 0),
            "skipped": counts.get("skipped", 0),
            "failed": counts.get("failed", 0),
            "skipped_by_reason": dict(reasons),
            "failed_by_reason": dict(failures),
            "blank_testing_images": sum(1 for r in records if r.get("blank") and r["verdict"] == "converted"),
            "unmatched_labels": len(unmatched_labels),
            "unread_subfolder_files": sum(len(u["files"]) for u in unread_subfolders),
            "warnings": sum(len(r.get("warnings", [])) for r in records if r["verdict"] == "converted"),
            "resumed": sum(1 for r in records if r.get("resumed")),
            "tiled": sum(1 for r in records if r.get("tiled")),
            "training_items": sum(len(r["items"]) for r in records if r["kind"] == "train"),
            "testing_items": sum(len(r["items"]) for r in records if r["kind"] == "test"),
            "cells": sum(int(r.get("cells") or 0) for r in records if r["verdict"] == "converted"),
        },
        "folds": fold_info,
        "datalist_validation": validation,
        "images": list(records),
        "unmatched_labels": list(unmatched_labels),
        "unread_subfolders": list(unread_subfolders),
    }


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "/").replace("\n", " ")


def render_cell_report_markdown(report: dict) -> str:
    """A short readable summary of a cell conversion report."""
    s = report["summary"]
    val = report["datalist_validation"]
    lines = [
        "# Cell images → NIfTI conversion report", "",
        f"Output: `{report['output_dir']}`  ",
        f"Images: {s['images']} — converted {s['converted']}, skipped {s['skipped']}, failed {s['failed']} "
        f"(resumed {s['resumed']}, tiled {s['tiled']}); training items {s['training_items']}, testing items "
        f"{s['testing_items']}; {s['cells']} labelled cells  ",
        f"Folds: {report['folds']['used']} (requested {report['folds']['requested']}, one group per image)  ",
        "Target: 1 cell_interior, 2 cell_contact (pixels touching another cell), group 3 cell = 1 + 2", "",
        "Datalist validation: " + ("passed" if val.get("ok") else "FAILED: " + "; ".join(val.get("problems", []))),
        "",
    ]
    if s["skipped_by_reason"]:
        lines += ["Skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(s["skipped_by_reason"].items())), ""]
    if s.get("failed_by_reason"):
        lines += ["**Failed**: " + ", ".join(f"{k} {v}" for k, v in sorted(s["failed_by_reason"].items()))
                  + " (fix or remove them and run the same command again)", ""]
    if s.get("warnings"):
        lines += ["**Warnings** (converted, but check them):", ""]
        lines += [f"* {_cell(r['stem'])}: {_cell(w)}" for r in report["images"] if r["verdict"] == "converted"
                  for w in r.get("warnings", [])] + [""]
    if report.get("unmatched_labels"):
        lines += ["Label files that are no image's label (not used):", ""]
        lines += [f"* `{u['label']}`: {u['detail']}" for u in report["unmatched_labels"]] + [""]
    if report.get("unread_subfolders"):
        lines += ["Files in subfolders of the input folders (not read):", ""]
        lines += [f"* {_cell(u['detail'])}" for u in report["unread_subfolders"]] + [""]
    lines += ["| image | kind | verdict | reason | original size | dtype | channels | tiles | cells | what was done |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["images"]:
        size = "x".join(str(v) for v in r.get("original_shape", []) or [])
        chans = f"{r.get('channels_in', '')}→3" if r.get("channels_in") else ""
        notes = "; ".join(list(r.get("notes", [])) + [f"**warning**: {w}" for w in r.get("warnings", [])]
                          + ([r["detail"]] if r.get("detail") else []))
        lines.append(f"| {_cell(r['stem'])} | {r['kind']} | {r['verdict']} | {_cell(r.get('reason'))} | {size} | "
                     f"{_cell(r.get('dtype'))} | {chans} | {len(r.get('items', []))} | {_cell(r.get('cells'))} | "
                     f"{_cell(notes)} |")
    return "\n".join(lines) + "\n"
