"""The conversion report: a JSON record of every crop and a short Markdown summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

__all__ = ["build_report", "render_report_markdown", "dry_run_report"]


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
        f"testing items {s['testing_items']}  ",
        f"Folds: {report['folds']['used']} (requested {report['folds']['requested']}, grouped by "
        f"{report['folds']['grouping']})", "",
    ]
    if report["classes_never_annotated"]:
        lines += [f"Named in crops but never annotated: {', '.join(report['classes_never_annotated'])}", ""]
    val = report["datalist_validation"]
    lines += ["Datalist validation: " + ("passed" if val.get("ok") else "FAILED: " + "; ".join(val.get("problems", []))), ""]
    lines += [f"Note: {w}  " for w in val.get("summary", {}).get("warnings", [])]
    lines += ["| crop | kind | verdict | reason | EM level | padded | not annotated | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["crops"]:
        na = ", ".join(r.get("not_annotated", {}))
        notes = "; ".join(r.get("warnings", []) + ([r["detail"]] if r.get("detail") else []))
        pad = f"{r['padded_fraction']:.1%}" if "padded_fraction" in r else ""
        lines.append(f"| {r['name']} | {r['kind']} | {r['verdict']} | {r.get('reason', '')} | {r.get('em_level', '')} "
                     f"| {pad} | {na} | {notes.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def dry_run_report(crops, test_crops, statuses, inspect_errors, settings) -> dict:
    rows = []
    for src in crops:
        st = statuses.get(src.name, {})
        rows.append({"name": src.name, "kind": "train", "error": inspect_errors.get(src.name),
                     "annotated": sorted(n for n, s in st.items() if s.annotated),
                     "not_annotated": {n: s.reason for n, s in st.items() if not s.annotated}})
    rows += [{"name": t.name, "kind": "test", "labels": [lbl["label"] for lbl in t.labels]} for t in test_crops]
    return {"dry_run": True, "settings": asdict(settings), "classes": [r["name"] for r in settings.class_table],
            "crops": rows}
