"""A readable review of MONAI's DataAnalyzer output, with per-class figures by label value.

``DataAnalyzer`` writes ``datastats.yaml`` (a summary) and ``datastats_by_case.yaml``
(one entry per case). The per-case label statistics are right, but MONAI's summary
(``LabelStatsSumm``) looks each label's statistics up *by list position*: the entry it
reports for label value ``v`` averages, over the cases, the ``v``-th element of each
case's ``label`` list (index = the value), which belongs to label value ``v`` only when
that case holds every value ``0..v``. With partially annotated crops it mixes classes,
and a value no case lists at position ``v`` comes out as 0 %.

This module recomputes the per-class figures from the by-case file by zipping each
case's ``labels`` (the values present) with its ``label`` list, joins them with the
datalist (class table, folds, ``annotated_mask``), and writes into the work folder:

- ``datastats_review.md``: header, per-class table, figures, and a *Flags* section;
- ``datastats_review.json``: the same numbers, machine-readable;
- ``review/*.png``: intensity histogram, shapes and spacing, class fractions, coverage.

All files are written under temporary names and renamed into place.

Examples
--------
>>> case = {"label_stats": {"labels": [0, 3], "label": [{"foreground_percentage": 0.75},
...                                                      {"foreground_percentage": 0.25}]}}
>>> case_label_fractions(case)
{0: 0.75, 3: 0.25}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters.outputs import atomic_write_text

from .constant_images import constant_training_images
from .review_cases import (
    _ANNOTATED_KEY,
    _DATASTATS,
    _DATASTATS_BY_CASE,
    FIGURES,
    REVIEW_DIR,
    REVIEW_JSON,
    REVIEW_MD,
    _case_intensity,
    _case_shape,
    _display,
    _find_image,
    _first_path,
    _load_yaml,
    _pct,
    _short_list,
    case_label_fractions,
    class_info,
    match_cases_to_items,
    resolve_annotated,
)
from .review_plots import (
    _plot_coverage,
    _plot_fraction,
    _plot_intensity,
    _plot_shapes,
    histogram_percentiles,
    pooled_intensity_histogram,
)
from .review_stats import (
    find_flags,
    monai_positional_fraction,
    per_class_stats,
    positional_summary_mismatches,
    size_outliers,
)

__all__ = [
    "FIGURES",
    "REVIEW_DIR",
    "REVIEW_JSON",
    "REVIEW_MD",
    "case_label_fractions",
    "class_info",
    "find_flags",
    "flag_summary",
    "histogram_percentiles",
    "match_cases_to_items",
    "monai_positional_fraction",
    "per_class_stats",
    "pooled_intensity_histogram",
    "positional_summary_mismatches",
    "render_markdown",
    "resolve_annotated",
    "size_outliers",
    "write_review",
]


# --------------------------------------------------------------------------- markdown
def _fmt_list(v: Sequence[float] | None, fmt: str = "{:g}") -> str:
    if not v:
        return "—"
    return " × ".join(fmt.format(x) for x in v)


def render_markdown(review: Mapping[str, Any]) -> str:
    """The Markdown text of a review (the dict written to ``datastats_review.json``)."""
    h = review["header"]
    lines = ["# Data statistics review", ""]
    constant = review.get("constant_images") or []
    if constant:
        lines += [f"**WARNING: {len(constant)} training item(s) have a constant image and are trained on although "
                  "they teach the network nothing** (remove them from the datalist, or re-convert them):", ""]
        lines += [f"- {c}" for c in constant] + [""]
    lines.append(f"Source: `{review['sources']['datastats']}`, `{review['sources']['datastats_by_case']}`, "
                 f"datalist `{review['sources']['datalist']}`.")
    lines.append("")
    folds = h.get("items_per_fold") or {}
    fold_txt = ", ".join(f"{k}: {v}" for k, v in folds.items()) if folds else "none"
    it = h.get("intensity") or {}
    lines += [
        (f"- **Cases analysed**: {h['n_cases']} of {h['n_training_items']} training items "
        f"({h['n_testing_items']} testing items)"),
        f"- **Folds**: {h['num_folds']} (items per fold: {fold_txt})",
        f"- **Spacing median** (x, y, z; affine units, nm for CellMap): {_fmt_list(h.get('spacing_median'))}",
        (f"- **Image shape** (x, y, z voxels): min {_fmt_list(h.get('shape_min'), '{:d}')}, "
        f"median {_fmt_list(h.get('shape_median'))}, max {_fmt_list(h.get('shape_max'), '{:d}')}"),
        (f"- **Intensity percentiles**, pooled histogram of {it.get('hist_images', 0)} image(s): "
        f"0.5 % = {_num(it.get('pooled_p00_5'))}, 99.5 % = {_num(it.get('pooled_p99_5'))}; "
        f"MONAI summary (mean of per-case percentiles): 0.5 % = {_num(it.get('monai_p00_5'))}, "
        f"10 % = {_num(it.get('monai_p10_0'))}, 90 % = {_num(it.get('monai_p90_0'))}, "
        f"99.5 % = {_num(it.get('monai_p99_5'))}; range {_num(it.get('min'))} to {_num(it.get('max'))}"),
        f"- **Flags**: {len(review['flags'])}",
        "",
        "## Classes",
        "",
        ("Computed from `datastats_by_case.yaml` by label value (each case's `labels` zipped with its "
        "`label` list). *Annotated*: items whose `annotated_mask` includes the class (no mask: all "
        "classes). *Present*: crops where its voxel fraction is > 0. Fractions are shares of all voxels "
        "of a crop; a group's fraction includes its parts' values."),
        "",
        ("| id | name | kind | annotated crops | present crops | mean fraction where annotated "
        "| mean fraction where present | annotated per fold |"),
        "|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for c in review["classes"]:
        kind = {True: "instance", False: "semantic"}.get(c.get("instance"), "—")
        if c.get("parts"):
            kind += f" (group of {', '.join(str(p) for p in c['parts'])})"
        per_fold = ", ".join(f"{k}: {v}" for k, v in (c.get("annotated_by_fold") or {}).items()) or "—"
        lines.append(f"| {c['id']} | {c['name']} | {kind} | {c['annotated']} | {c['present']} | "
                     f"{_pct(c['mean_fraction_annotated'])} | {_pct(c['mean_fraction_present'])} | {per_fold} |")
    lines += ["", "## Figures", ""]
    titles = {
        "intensity": "Intensity histogram (pooled, log scale, 0.5/99.5 percentiles marked)",
        "shapes": "Shapes and spacing",
        "fraction": "Mean class voxel fraction where annotated",
        "coverage": "Class coverage: annotated vs present",
    }
    for key, rel in review["figures"].items():
        lines += [f"### {titles.get(key, key)}", "", f"![{titles.get(key, key)}]({rel})", ""]
    mism = review.get("positional_mismatches") or []
    lines += ["## MONAI's position-based label summary", ""]
    if mism:
        lines += [
            ("`datastats.yaml` (`stats_summary.label_stats.label[i]`) takes, for label value *v*, each "
            "case's *v*-th per-label entry, which is another class whenever the case lacks a lower value. "
            "These entries disagree with the by-value figures; do not use them:"),
            "",
            ("| value | name | entry | MONAI mean fraction | cases MONAI averaged | by-value mean where present "
            "| cases present | values MONAI mixed |"),
            "|---:|---|---:|---:|---:|---:|---:|---|",
        ]
        for m in mism:
            lines.append(f"| {m['value']} | {m['name']} | label[{m['position']}] | {_pct(m['monai_mean'])} | "
                         f"{m['monai_cases']} | {_pct(m['by_value_mean'])} | {m['by_value_cases']} | "
                         f"{', '.join(str(s) for s in m['monai_source_values']) or 'none'} |")
    else:
        lines.append("MONAI's summary agrees with the by-value figures for every label.")
    lines += ["", "## Flags", ""]
    if review["flags"]:
        lines += [f"- {f}" for f in review["flags"]]
    else:
        lines.append("None.")
    lines.append("")
    return "\n".join(lines)


def _num(x: Any) -> str:
    if x is None:
        return "—"
    try:
        return f"{float(x):.4g}"
    except (TypeError, ValueError):
        return str(x)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --------------------------------------------------------------------------- entry point
def file_sha1(path: str | os.PathLike[str]) -> str | None:
    """SHA-1 of a file's bytes, None when it cannot be read."""
    import hashlib

    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def write_review(
    work_dir: str | os.PathLike[str],
    datalist_path: str | os.PathLike[str],
    dataroot: str | os.PathLike[str] | None = None,
    *,
    max_hist_cases: int = 64,
) -> Path:
    """Review ``<work_dir>/datastats*.yaml`` against the datalist; return the Markdown path.

    Parameters
    ----------
    work_dir : path
        Folder holding ``datastats.yaml`` and ``datastats_by_case.yaml``; the review
        (``datastats_review.md``, ``datastats_review.json``, ``review/*.png``) goes there.
    datalist_path : path
        The datalist JSON the analysis ran on.
    dataroot : path, optional
        Folder the datalist's paths are relative to; default the datalist's folder.
    max_hist_cases : int
        At most this many images (evenly spread over the cases) are read for the pooled
        intensity histogram.

    Returns
    -------
    Path
        ``<work_dir>/datastats_review.md``.

    Raises
    ------
    FileNotFoundError
        If ``datastats_by_case.yaml`` is missing (run the analysis first).
    """
    from datalists.validate import load_datalist

    work = Path(work_dir)
    by_case_path = work / _DATASTATS_BY_CASE
    summary_path = work / _DATASTATS
    if not by_case_path.is_file():
        raise FileNotFoundError(
            f"{by_case_path}: not found; run the analysis first (run_auto3dseg.py --mode analyze)")
    by_case_doc = _load_yaml(by_case_path) or {}
    cases: list[Mapping[str, Any]] = list(by_case_doc.get("stats_by_cases") or [])
    if summary_path.is_file():
        summary = (_load_yaml(summary_path) or {}).get("stats_summary") or {}
    else:
        summary = by_case_doc.get("stats_summary") or {}

    datalist_path = Path(datalist_path)
    datalist = load_datalist(datalist_path)
    root = Path(dataroot) if dataroot is not None else datalist_path.parent
    training = [it for it in datalist.get("training") or [] if isinstance(it, Mapping)]
    testing = datalist.get("testing") or []

    info = class_info(datalist, cases)
    class_ids = list(info)
    names = {cid: d["name"] for cid, d in info.items()}
    parts = {cid: d["parts"] for cid, d in info.items() if d.get("parts")}

    items, unmatched = match_cases_to_items(cases, training, root)
    annotated = [
        resolve_annotated(item.get(_ANNOTATED_KEY) if item is not None else None, class_ids) for item in items
    ]
    folds = [int(item["fold"]) if item is not None and item.get("fold") is not None else None for item in items]
    all_folds = sorted({int(it["fold"]) for it in training if it.get("fold") is not None})
    num_folds = int(datalist.get("num_folds") or len(all_folds) or 1)

    stats = per_class_stats(cases, class_ids, annotated, folds, parts)
    mismatches = positional_summary_mismatches(summary.get("label_stats") or {}, cases, names)
    members = None
    if isinstance(datalist.get("class_table"), list):
        from auto3dseg.engine.transforms import channel_members

        try:
            table = datalist["class_table"]
            members = {int(r["id"]): set(m) for r, m in zip(table, channel_members(table))}
        except (KeyError, TypeError, ValueError):
            members = None  # the table's own problems are named by validation
    flags = find_flags(cases, annotated, stats, names=names, num_folds=num_folds, mismatches=mismatches,
                       unmatched_items=unmatched, dataroot=root, members=members)
    constant = constant_training_images(cases, datalist, root)
    skipped = {c.image for c in constant if not c.analysed}
    flags = [f for f in flags if not (f.startswith("[not-analysed] ") and f.split()[1].rstrip(":") in skipped)]
    flags += [f"[constant-image] {c.describe()}: trained on although it teaches nothing; remove it from the datalist"
              for c in constant if not c.analysed]
    for k, item in enumerate(items):
        if item is None:
            flags.append(f"[no-datalist-item] {_display(_first_path(cases[k].get('image_filepath')), root)}: "
                         "analysed case not in the datalist; reviewed as annotating every class")

    # geometry
    shapes = [s for s in (_case_shape(c) for c in cases) if s]
    spacings = [list(map(float, (c.get("image_stats") or {}).get("spacing") or [])) for c in cases]
    spacings = [s for s in spacings if s]
    sizes = [list(map(float, (c.get("image_stats") or {}).get("sizemm") or [])) for c in cases]
    sizes = [s for s in sizes if s]
    sh = np.array(shapes, dtype=float) if shapes and len({len(s) for s in shapes}) == 1 else np.zeros((0, 3))
    sp = np.array(spacings, dtype=float) if spacings and len({len(s) for s in spacings}) == 1 else np.zeros((0, 3))
    sz = np.array(sizes, dtype=float) if sizes and len({len(s) for s in sizes}) == 1 else np.zeros((0, 3))

    # intensity
    img_stats = summary.get("image_stats") or {}
    mint = img_stats.get("intensity") or {}
    if isinstance(mint, list):
        mint = mint[0] if mint else {}
    lo = [float(it["min"]) for c in cases for it in _case_intensity(c) if it.get("min") is not None]
    hi = [float(it["max"]) for c in cases for it in _case_intensity(c) if it.get("max") is not None]
    value_range = (min(lo), max(hi)) if lo and hi else None
    roots = list(dict.fromkeys([str(root), str(datalist_path.parent)]))
    img_paths = [_find_image(_first_path(c.get("image_filepath")), item, roots) for c, item in zip(cases, items)
                 if _first_path(c.get("image_filepath"))]
    if max_hist_cases > 0 and len(img_paths) > max_hist_cases:
        pick = np.unique(np.linspace(0, len(img_paths) - 1, max_hist_cases).round().astype(int))
        hist_paths = [img_paths[i] for i in pick]
    else:
        hist_paths = img_paths if max_hist_cases > 0 else []
    counts, edges, unreadable = pooled_intensity_histogram(hist_paths, bins=256, value_range=value_range)
    p_lo, p_hi = histogram_percentiles(counts, edges, [0.5, 99.5])
    if unreadable:
        flags.append(f"[unreadable-image] {len(unreadable)} of {len(hist_paths)} image(s) could not be read for the "
                     f"intensity histogram (looked for as recorded in datastats_by_case.yaml and under "
                     f"{', '.join(roots)}): {_short_list([_display(u, root) for u in unreadable])}")

    # figures
    fig_dir = work / REVIEW_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    _plot_intensity(fig_dir / FIGURES["intensity"], counts, edges, p_lo, p_hi,
                    len(hist_paths) - len(unreadable), len(img_paths))
    _plot_shapes(fig_dir / FIGURES["shapes"], sz, sp)
    _plot_fraction(fig_dir / FIGURES["fraction"], class_ids, names, stats)
    _plot_coverage(fig_dir / FIGURES["coverage"], class_ids, names, stats, len(cases))
    figures = {k: f"{REVIEW_DIR}/{v}" for k, v in FIGURES.items()}

    def img_name(i: int) -> str:
        return _display(_first_path(cases[i].get("image_filepath")), root)

    classes = []
    for cid in class_ids:
        st = stats[cid]
        classes.append({
            "id": cid,
            "name": names[cid],
            "instance": info[cid].get("instance"),
            "cellmap_id": info[cid].get("cellmap_id"),
            "parts": info[cid].get("parts") or [],
            **{k: v for k, v in st.items() if k not in ("annotated_cases", "present_cases")},
            "annotated_images": [img_name(i) for i in st["annotated_cases"]],
            "present_images": [img_name(i) for i in st["present_cases"]],
        })
    items_per_fold = {f: sum(1 for it in training if it.get("fold") is not None and int(it["fold"]) == f)
                      for f in all_folds}
    review: dict[str, Any] = {
        "sources": {
            "datastats": str(summary_path if summary_path.is_file() else by_case_path),
            "datastats_by_case": str(by_case_path),
            "datalist": str(datalist_path),
            "datalist_sha1": file_sha1(datalist_path),  # a class renamed since: the review is written again
            "dataroot": str(root),
        },
        "header": {
            "n_cases": len(cases),
            "n_training_items": len(training),
            "n_testing_items": len(testing) if isinstance(testing, list) else 0,
            "num_folds": num_folds,
            "items_per_fold": items_per_fold,
            "spacing_median": np.median(sp, axis=0).tolist() if sp.size else None,
            "shape_min": sh.min(axis=0).astype(int).tolist() if sh.size else None,
            "shape_median": np.median(sh, axis=0).tolist() if sh.size else None,
            "shape_max": sh.max(axis=0).astype(int).tolist() if sh.size else None,
            "size_median": np.median(sz, axis=0).tolist() if sz.size else None,
            "intensity": {
                "hist_images": len(hist_paths) - len(unreadable),
                "hist_unreadable": unreadable,
                "hist_bins": len(counts),
                "pooled_p00_5": p_lo,
                "pooled_p99_5": p_hi,
                "min": value_range[0] if value_range else None,
                "max": value_range[1] if value_range else None,
                "monai_p00_5": mint.get("percentile_00_5"),
                "monai_p10_0": mint.get("percentile_10_0"),
                "monai_p90_0": mint.get("percentile_90_0"),
                "monai_p99_5": mint.get("percentile_99_5"),
            },
        },
        "classes": classes,
        "positional_mismatches": [
            {**m,
             "wrong_source_images": [img_name(i) for i in m["wrong_source_cases"]],
             "missed_images": [img_name(i) for i in m["missed_cases"]]}
            for m in mismatches
        ],
        "flags": flags,
        "constant_images": [c.describe() for c in constant],
        "figures": figures,
    }
    review = _jsonable(review)
    atomic_write_text(work / REVIEW_JSON, json.dumps(review, indent=2) + "\n")
    md_path = work / REVIEW_MD
    atomic_write_text(md_path, render_markdown(review))
    return md_path


def flag_summary(flags: Sequence[str]) -> list[str]:
    """What the console says of the review's flags: their counts by kind, then each class no crop
    annotates (its channel learns nothing), which the review alone would hide in a long list.

    >>> flag_summary(["[never-annotated] class 3 'er': no crop annotates it", "[few-annotated] x", "[few-annotated] y"])
    ['review flags: 2 few-annotated, 1 never-annotated', "  [never-annotated] class 3 'er': no crop annotates it"]
    """
    import re
    from collections import Counter

    kinds = Counter(m.group(1) for f in flags if (m := re.match(r"\[([a-z-]+)\]", f)))
    if not kinds:
        return []
    head = "review flags: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])))
    return [head, *(f"  {f}" for f in flags if f.startswith("[never-annotated]"))]
