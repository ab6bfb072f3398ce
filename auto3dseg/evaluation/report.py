"""The Markdown report and the JSON/Markdown files of a scored submission.

>>> s = {"overall": {"score": 0.5, "instance_mean": None, "semantic_mean": 0.5,
...                  "rule": "mean semantic IoU (no instance label scored)"},
...      "labels": {}, "crops": [], "missing": [], "notes": []}
>>> format_scores_markdown(s).splitlines()[2]
'**Overall score: 0.5000** — mean semantic IoU (no instance label scored)'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from auto3dseg.evaluation.traps import format_warning
from converters.outputs import atomic_write_text

__all__ = ["format_scores_markdown", "write_scores"]


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_scores_markdown(scores: dict[str, Any]) -> str:
    """A readable Markdown report of :func:`auto3dseg.evaluation.score.score_submission`'s result.

    Sections: overall, per label, per crop and label, missing labels, warnings (the traps
    of :mod:`auto3dseg.evaluation.traps`) and notes. Results written before warnings and
    rules existed are accepted too.
    """
    ov = scores["overall"]
    lines = ["# Submission scores", "",
             f"**Overall score: {_fmt(ov['score'])}** — {ov['rule']}", "",
             f"- mean instance score: {_fmt(ov['instance_mean'])}",
             f"- mean semantic IoU: {_fmt(ov['semantic_mean'])}"]
    if "rules" in scores:
        lines.append(f"- rules: {scores['rules']}")
    if "submission" in scores:
        read = scores.get("submission_read")
        if read and Path(read) != Path(scores["submission"]):
            lines.append(f"- submission: `{read}` (the zip in `{scores['submission']}`; a folder holding a zip and "
                         "a submission.zarr is read from its zip, as the official scorer does)")
        else:
            lines.append(f"- submission: `{scores['submission']}`")
        lines.append(f"- truth: `{scores['truth']}`")
    if scores.get("test_manifest"):
        lines.append(f"- test manifest: `{scores['test_manifest']}`")
    warnings = scores.get("warnings") or []
    if warnings:
        lines.append(f"- **{len(warnings)} warning(s)**, listed at the end")
    lines += ["", "## Per label", "",
              "| label | kind | score | IoU | Dice | F1 | Hausdorff (norm.) | TP | FP | FN | crops | missing |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in scores["labels"].items():
        lines.append("| " + " | ".join(_fmt(x) for x in (
            name, v["kind"], v["score"], v.get("iou"), v.get("dice"), v.get("f1"), v.get("hausdorff_norm"),
            v["tp"], v["fp"], v["fn"], v["n_crops"], v["missing"])) + " |")
    lines += ["", "## Per crop and label", "",
              "| crop | label | kind | status | score | IoU | F1 | Hausdorff (nm) | Hausdorff (norm.) | TP | FP | FN |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in scores["crops"]:
        lines.append("| " + " | ".join(_fmt(x) for x in (
            r["crop"], r["label"], r["kind"], r["status"], r.get("score"), r.get("iou"), r.get("f1"),
            r.get("hausdorff_nm"), r.get("hausdorff_norm"), r["tp"], r["fp"], r["fn"])) + " |")
    if scores["missing"]:
        lines += ["", "## Missing from the submission (scored as all false negatives)", ""]
        lines += [f"- {k}" for k in scores["missing"]]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {format_warning(w)}" for w in warnings]
    if scores["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in scores["notes"]]
    return "\n".join(lines) + "\n"


def write_scores(scores: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``scores`` as JSON to ``path`` and the Markdown report beside it (``.md``),
    each via a temporary name; returns the JSON path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(scores, indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), format_scores_markdown(scores))
    return out
