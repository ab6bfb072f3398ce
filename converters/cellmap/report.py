"""The conversion report: a JSON record of every crop and a short Markdown summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from converters.cellmap.class_mapping import annotated_ids
from datalists.cellmap_classes import close_class_names
from converters.datalist_writer import layout_folds, tile_name
from converters.folds import CropExtent, FoldItem, SplitPlan
from converters.geometry import split_into_fold_tiles

__all__ = ["PADDED_WARN_FRACTION", "build_report", "padded_warning", "unknown_and_level_warnings",
           "render_report_markdown", "dry_run_report", "render_dry_run_text", "render_folds"]

#: the share of a converted crop lying outside the EM (zero-padded) above which the console warns: a sliver
#: at an edge is normal for crops drawn near the volume's border; a tenth is a misplaced crop
PADDED_WARN_FRACTION = 0.10


def build_report(records: Sequence[dict], settings: Any, statuses: dict, fold_info: dict,
            validation: dict, out_dir: Path) -> dict:
    """The report dict written as ``conversion_report.json``."""
    counts = Counter(r["verdict"] for r in records)
    annotated_anywhere = {n for r in records for n in r.get("annotated", [])}
    named_anywhere = {n for st in statuses.values() for n in st}
    return {
        "output_dir": str(out_dir.resolve()),
        "settings": asdict(settings),
        "summary": {
            "crops": len(records),
            "converted": counts.get("converted", 0),
            "skipped": counts.get("skipped", 0),
            "failed": counts.get("failed", 0),
            "resumed": sum(1 for r in records if r.get("resumed")),
            "tiled": sum(1 for r in records if r.get("tiled")),
            "training_items": sum(len(r["items"]) for r in records if r["kind"] == "train"),
            "testing_items": sum(len(r["items"]) for r in records if r["kind"] == "test"),
            "crops_with_unknown_labels": sum(1 for r in records if r.get("unknown_label_values")),
            "unannotated_voxels": sum(int(r.get("unannotated_voxels", 0)) for r in records),
            "crops_with_unreadable_em_levels": sum(1 for r in records if r.get("em_levels_unreadable")),
        },
        "classes": [r["name"] for r in settings.class_table],
        "classes_never_annotated": sorted(named_anywhere - annotated_anywhere),
        "folds": fold_info,
        "datalist_validation": validation,
        "crops": list(records),
    }


def render_report_markdown(report: dict) -> str:
    """A short readable summary of a conversion report."""
    s = report["summary"]
    lines = [
        "# CellMap → NIfTI conversion report", "",
        f"Output: `{report['output_dir']}`  ",
        f"Target spacing (z, y, x nm): {report['settings']['target_spacing']}  ",
        f"Classes ({len(report['classes'])}): {', '.join(report['classes'])}  ",
        f"Crops: {s['crops']} — converted {s['converted']}, skipped {s['skipped']}, failed {s['failed']}"
        f" (resumed {s['resumed']}, tiled {s['tiled']}); training items {s['training_items']}, "
        f"testing items {s['testing_items']}  ", "",
    ]
    if s.get("crops_with_unknown_labels"):
        lines += [f"Unknown label values (written as not annotated, 255): {s['unannotated_voxels']} voxels in "
                  f"{s['crops_with_unknown_labels']} crop(s); see the notes below", ""]
    if s.get("crops_with_unreadable_em_levels"):
        lines += [f"EM levels listed but unreadable: {s['crops_with_unreadable_em_levels']} crop(s); see the notes "
                  "below", ""]
    if report["classes_never_annotated"]:
        lines += [f"Named in crops but never annotated: {', '.join(report['classes_never_annotated'])}", ""]
    val = report["datalist_validation"]
    verdict = "passed" if val.get("ok") else "FAILED: " + "; ".join(val.get("problems", []))
    lines += [f"Datalist validation: {verdict}", ""]
    lines += [f"Note: {w}  " for w in val.get("summary", {}).get("warnings", [])]
    lines += render_folds(report["folds"]) + [""]
    lines += ["| crop | kind | verdict | reason | EM level | padded | not annotated | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["crops"]:
        na = ", ".join(r.get("not_annotated", {}))
        notes = "; ".join(r.get("warnings", []) + ([r["detail"]] if r.get("detail") else []))
        pad = f"{r['padded_fraction']:.1%}" if "padded_fraction" in r else ""
        lines.append(f"| {r['name']} | {r['kind']} | {r['verdict']} | {r.get('reason', '')} | {r.get('em_level', '')} "
                     f"| {pad} | {na} | {notes.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def unknown_and_level_warnings(report: dict) -> list[tuple[str, str]]:
    """``(crop, message)`` for each crop's unknown label values, unreadable EM levels, constant test EM,
    overlapping annotated classes and class arrays off the grid of ``all``.

    >>> unknown_and_level_warnings({"crops": [{"name": "c1", "unknown_label_values": {"255": 8},
    ...                                         "em_levels_unreadable": {"s0": "/d/s0/.zarray is missing"}}]})
    [('c1', '8 voxels with label values that are no CellMap class (255: 8) written as not annotated (255)'), \
('c1', 'EM level s0 not used: /d/s0/.zarray is missing')]
    """
    out = []
    for r in report["crops"]:
        unknown = r.get("unknown_label_values") or {}
        if unknown:
            values = ", ".join(f"{v}: {n}" for v, n in unknown.items())
            out.append((r["name"], f"{sum(unknown.values())} voxels with label values that are no CellMap class "
                                   f"({values}) written as not annotated (255)"))
        for level, why in (r.get("em_levels_unreadable") or {}).items():
            out.append((r["name"], f"EM level {level} not used: {why}"))
        for name in r.get("foreign_arrays") or []:
            close = close_class_names(name)
            out.append((r["name"], f"label array {name!r} is no CellMap class: not converted"
                                   + (f" (did you mean {' or '.join(close)}? rename the array)" if close else "")))
        for w in r.get("warnings") or []:  # labels that train less than the crop annotates: said on the console
            if " are both annotated and share " in w or "is not on the grid of" in w or "incomplete download" in w:
                out.append((r["name"], w))
        if padded := padded_warning(r):
            out.append((r["name"], padded))
        if "constant_em" in r and r.get("verdict") == "converted":
            out.append((r["name"], f"test crop converted although its EM is constant (value {r['constant_em']} "
                                   "everywhere): its prediction will be empty; check that EM level"))
    return out


def padded_warning(record: dict) -> str:
    """The console warning of a converted test crop more than :data:`PADDED_WARN_FRACTION` outside the
    EM ('' when it is not). A training crop's share stays in its report row and warnings: a crop
    reaching past the EM still has labels to learn from inside it.

    >>> padded_warning({"kind": "test", "verdict": "converted", "padded_fraction": 0.589})[:61]
    '59% of the crop lies outside the EM volume (zero-padded there'
    >>> padded_warning({"kind": "test", "verdict": "converted", "padded_fraction": 0.05})
    ''
    """
    share = record.get("padded_fraction") or 0.0
    if record.get("kind") != "test" or record.get("verdict") != "converted" or share <= PADDED_WARN_FRACTION:
        return ""
    return (f"{share:.0%} of the crop lies outside the EM volume (zero-padded there): predictions there are "
            "meaningless; check the test manifest's translation")


def _box(start: Sequence[int] | None, stop: Sequence[int] | None) -> str:
    if start is None or stop is None:
        return ""
    return " ".join(f"{ax} {a}:{b}" for ax, a, b in zip("zyx", start, stop))


def _grouping(folds: dict) -> str:
    return "crops cut into spatial folds" if folds["grouping"] == "spatial" else f"grouped by {folds['grouping']}"


def render_folds(folds: dict) -> list[str]:
    """Markdown lines saying how folds were made and where every tile went.

    >>> render_folds({"used": 1, "requested": 1, "grouping": "crop", "how": ["grouped by crop"], "notes": []})
    ['## Folds', '', 'Folds: 1 (requested 1, grouped by crop)  ', '- grouped by crop']
    """
    lines = ["## Folds", "", f"Folds: {folds['used']} (requested {folds['requested']}, {_grouping(folds)})  "]
    lines += [f"- {h}" for h in folds.get("how", [])] + [f"- note: {n}" for n in folds.get("notes", [])]
    tiles = folds.get("tiles", [])
    tiled = {crop for crop, n in Counter(t["crop"] for t in tiles).items() if n > 1}
    if tiled:
        lines += ["", "| tile | crop | box (output voxels, z y x) | fold |", "|---|---|---|---|"]
        lines += [f"| {Path(t['image']).name.removesuffix('.nii.gz')} | {t['crop']} | {_box(t['start'], t['stop'])} "
                  f"| {t['fold']} |" for t in tiles if t["crop"] in tiled]
    return lines


def dry_run_report(crops, test_crops, statuses, inspect_errors, settings, extents: Sequence[CropExtent] = (),
                   plan: SplitPlan | None = None, num_folds: int = 5, em: dict | None = None) -> dict:
    """The plan ``--dry_run`` prints: every crop, and for those that would convert, its tiles and folds.

    ``extents`` are the crops inspection says will convert, ``plan`` their spatial folds
    (:func:`converters.folds.plan_spatial_folds`); ``em`` each crop's EM plan
    (:func:`converters.cellmap.crop.em_plan`): a skip there is shown as the run would record it.
    Nothing is written.
    """
    em = em or {}
    plan = plan or SplitPlan()
    by_name = {e.name: e for e in extents}
    layout = [(FoldItem(e.name, e.dataset, frozenset(annotated_ids(statuses.get(e.name, {}), settings.class_table)),
                        int(np.prod(e.shape))), e.shape, plan.split_of(e.name)) for e in extents]
    folds, fold_info = layout_folds(layout, num_folds, plan.notes) if layout else ({}, {
        "requested": num_folds, "used": 0, "grouping": "crop", "how": [], "notes": ["no crop would convert"]})
    rows = []
    for src in crops:
        st = statuses.get(src.name, {})
        row = {"name": src.name, "kind": "train", "error": inspect_errors.get(src.name),
               "annotated": sorted(n for n, s in st.items() if s.annotated),
               "not_annotated": {n: s.reason for n, s in st.items() if not s.annotated}, "tiles": []}
        if "verdict" in em.get(src.name, {}):
            row["error"] = f"{em[src.name]['verdict']} ({em[src.name]['reason']}): {em[src.name]['detail']}"
        elif src.name in em:
            row["em_level"], row["em_upsample"] = em[src.name].get("em_level"), em[src.name].get("em_upsample")
        # a crop the run could not read is a failure (its exit status 1); one it skips is not
        row["would_fail"] = src.name in inspect_errors or em.get(src.name, {}).get("verdict") == "failed"
        if src.name in by_name:
            e, split = by_name[src.name], plan.split_of(src.name)
            boxes = split_into_fold_tiles(e.shape, settings.max_voxels, split.parts, split.gap, split.axis) if split \
                else split_into_fold_tiles(e.shape, settings.max_voxels)
            row["output_shape"] = list(e.shape)
            row["spatial_folds"] = split.to_dict() if split else None
            for i, (start, stop, part) in enumerate(boxes):
                tile = {"image": f"images/{tile_name(src.name, i, len(boxes))}.nii.gz", "crop": src.name,
                        "start": list(start), "stop": list(stop), "fold": folds[(src.name, part)]}
                row["tiles"].append(tile)
        rows.append(row)
    rows += [{"name": t.name, "kind": "test", "labels": [lbl["label"] for lbl in t.labels]} for t in test_crops]
    return {"dry_run": True, "settings": asdict(settings), "classes": [r["name"] for r in settings.class_table],
            "folds": fold_info, "crops": rows}


def render_dry_run_text(plan: dict) -> str:
    """A readable summary of a :func:`dry_run_report` (``--dry_run`` prints it on stderr)."""
    f = plan["folds"]
    lines = [f"Plan (nothing written): {len(plan['classes'])} classes; {f['used']} fold(s) "
             f"(requested {f['requested']}, {_grouping(f)})"]
    lines += [f"  {h}" for h in f.get("how", [])] + [f"  note: {n}" for n in f.get("notes", [])]
    for row in plan["crops"]:
        if row["kind"] == "test":
            lines.append(f"  {row['name']}: test crop ({', '.join(row['labels'])})")
        elif not row.get("tiles"):
            why = row.get("error") or "nothing selected is annotated"
            lines.append(f"  {row['name']}: would not convert ({why})")
        else:
            em = f" from EM {row['em_level']}" if row.get("em_level") else ""
            if em and float(row.get("em_upsample") or 1) > 1:
                em += f" (upsampled {float(row['em_upsample']):g}x)"
            lines.append(f"  {row['name']}: {len(row['tiles'])} tile(s) of {' x '.join(map(str, row['output_shape']))}"
                         + em)
            lines += [f"    {Path(t['image']).name.removesuffix('.nii.gz')}: {_box(t['start'], t['stop'])} -> "
                      f"fold {t['fold']}" for t in row["tiles"]]
    return "\n".join(lines) + "\n"
