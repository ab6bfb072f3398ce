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
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FIGURES",
    "REVIEW_DIR",
    "REVIEW_JSON",
    "REVIEW_MD",
    "case_label_fractions",
    "class_info",
    "find_flags",
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

REVIEW_MD = "datastats_review.md"
REVIEW_JSON = "datastats_review.json"
REVIEW_DIR = "review"
FIGURES = {
    "intensity": "intensity_histogram.png",
    "shapes": "shapes_spacing.png",
    "fraction": "class_fraction.png",
    "coverage": "class_coverage.png",
}

_DATASTATS = "datastats.yaml"
_DATASTATS_BY_CASE = "datastats_by_case.yaml"
_ANNOTATED_KEY = "annotated_mask"  # datalists.annotated.ANNOTATED_KEY


# --------------------------------------------------------------------------- small helpers
def _first_path(value: Any) -> str:
    """The first path of an image entry (a string, or a list for multi-channel images)."""
    if isinstance(value, (list, tuple)):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def _norm(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def _display(path: str, dataroot: str | os.PathLike[str] | None) -> str:
    """``path`` relative to ``dataroot`` when it lies under it, else as given."""
    if dataroot is not None and path:
        root = _norm(dataroot)
        p = _norm(path)
        if p == root or p.startswith(root + os.sep):
            return os.path.relpath(p, root)
    return path


def _find_image(path: str, item: Mapping[str, Any] | None, roots: Sequence[str | os.PathLike[str]]) -> str:
    """Where an analysed image is now: MONAI recorded it joined with the analysis' data root
    (relative to that run's working directory if the root was); tried as recorded, as the
    datalist item under each root, then as recorded under each root. Else as recorded."""
    rel = _first_path(item.get("image")) if item else ""
    tries = [path] + [os.path.join(r, rel) for r in roots if rel] + [os.path.join(r, path) for r in roots]
    return next((t for t in tries if os.path.isfile(t)), path)


def _short_list(names: Sequence[str], limit: int = 6) -> str:
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", … ({len(names) - limit} more)"


def _pct(x: float | None) -> str:
    """A fraction as a percentage with 3 significant digits (``'—'`` for None)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{100.0 * x:.3g} %"


def _case_shape(case: Mapping[str, Any]) -> list[int] | None:
    """Spatial shape of a case's first channel from MONAI's ``image_stats.shape``."""
    shape = (case.get("image_stats") or {}).get("shape")
    if not shape:
        return None
    if isinstance(shape[0], (list, tuple)):  # one shape per channel
        shape = shape[0]
    return [int(s) for s in shape]


def _case_intensity(case: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """MONAI's per-channel intensity dicts of a case (a list even for one channel)."""
    it = (case.get("image_stats") or {}).get("intensity") or []
    return list(it) if isinstance(it, list) else [it]


def _load_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


# --------------------------------------------------------------------------- per-case facts
def case_label_fractions(case: Mapping[str, Any]) -> dict[int, float]:
    """Voxel fraction of every label value present in one by-case entry, keyed by value.

    Parameters
    ----------
    case : mapping
        One element of ``stats_by_cases`` in ``datastats_by_case.yaml``.

    Returns
    -------
    dict of int to float
        ``{value: foreground_percentage}``, built by zipping ``label_stats.labels`` (the
        values present) with ``label_stats.label`` (same order). MONAI's
        ``foreground_percentage`` is the value's share of *all* voxels (background
        included). Empty when the case has no label statistics.

    Raises
    ------
    ValueError
        If the two lists differ in length.
    """
    ls = case.get("label_stats") or {}
    values = ls.get("labels") or []
    per_label = ls.get("label") or []
    if len(values) != len(per_label):
        raise ValueError(
            f"{_first_path(case.get('image_filepath'))}: label_stats has {len(values)} label values "
            f"but {len(per_label)} per-label entries"
        )
    out: dict[int, float] = {}
    for v, d in zip(values, per_label):
        pct = d.get("foreground_percentage", 0.0)
        if isinstance(pct, (list, tuple)):  # defensive: one value per channel
            pct = float(np.mean(pct))
        out[int(v)] = float(pct)
    return out


def resolve_annotated(mask: int | None, class_ids: Iterable[int]) -> frozenset[int]:
    """The class ids an item annotates.

    Parameters
    ----------
    mask : int or None
        The item's ``annotated_mask`` (bit ``id - 1`` set per annotated class); None
        when the item has none, which means every class is annotated.
    class_ids : iterable of int
        All class ids of the datalist.

    Returns
    -------
    frozenset of int
        The annotated ids (bits beyond the class table are kept as they are).

    >>> sorted(resolve_annotated(None, [1, 2, 3]))
    [1, 2, 3]
    >>> sorted(resolve_annotated(5, [1, 2, 3]))
    [1, 3]
    """
    if mask is None:
        return frozenset(int(i) for i in class_ids)
    from datalists.annotated import decode_annotated

    return frozenset(decode_annotated(int(mask)))


def class_info(datalist: Mapping[str, Any], cases: Sequence[Mapping[str, Any]] = ()) -> dict[int, dict[str, Any]]:
    """Class id → ``{name, instance, cellmap_id, parts}`` for a datalist.

    The datalist's ``class_table`` is used when present; otherwise its ``labels`` mapping
    (``{"1": "ecs", ...}``, background 0 left out); otherwise every non-zero label value
    seen in ``cases``, named by its value.

    Parameters
    ----------
    datalist : mapping
        The parsed datalist JSON.
    cases : sequence of mapping
        ``stats_by_cases`` entries, used only for the last fallback.
    """
    info: dict[int, dict[str, Any]] = {}
    table = datalist.get("class_table")
    if isinstance(table, list) and table:
        for row in table:
            cid = int(row["id"])
            info[cid] = {
                "name": str(row.get("name", cid)),
                "instance": row.get("instance"),
                "cellmap_id": row.get("cellmap_id"),
                "parts": [int(p) for p in row.get("parts") or []],
            }
        return dict(sorted(info.items()))
    labels = datalist.get("labels")
    if isinstance(labels, Mapping) and labels:
        for k, name in labels.items():
            try:
                cid = int(k)
            except (TypeError, ValueError):
                continue
            if cid != 0:
                info[cid] = {"name": str(name), "instance": None, "cellmap_id": None, "parts": []}
        if info:
            return dict(sorted(info.items()))
    if isinstance(labels, list) and labels:  # ["background", "ecs", ...]
        for cid, name in enumerate(labels):
            if cid != 0:
                info[cid] = {"name": str(name), "instance": None, "cellmap_id": None, "parts": []}
        if info:
            return info
    values = sorted({v for c in cases for v in case_label_fractions(c) if v != 0})
    return {v: {"name": str(v), "instance": None, "cellmap_id": None, "parts": []} for v in values}


def match_cases_to_items(
    cases: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
    dataroot: str | os.PathLike[str],
) -> tuple[list[Mapping[str, Any] | None], list[Mapping[str, Any]]]:
    """Pair each analysed case with its datalist training item.

    MONAI records ``image_filepath`` as the data root joined with the item's path. A case
    is matched by that normalised path, else by the unique item whose relative path ends
    the case's path (the analysis may have used another data root).

    Parameters
    ----------
    cases : sequence of mapping
        ``stats_by_cases`` entries.
    items : sequence of mapping
        The datalist's ``training`` items.
    dataroot : path
        Folder the items' paths are relative to.

    Returns
    -------
    (list, list)
        The item of each case (None when none matches), and the items no case matched
        (the analyser skipped them, or the datalist changed since).
    """
    by_path: dict[str, int] = {}
    for i, item in enumerate(items):
        rel = _first_path(item.get("image"))
        if rel:
            by_path.setdefault(_norm(os.path.join(os.fspath(dataroot), rel)), i)
    used: set[int] = set()
    out: list[Mapping[str, Any] | None] = []
    for case in cases:
        path = _first_path(case.get("image_filepath"))
        idx = by_path.get(_norm(path)) if path else None
        if idx is None and path:
            p = _norm(path)
            hits = [
                i for i, item in enumerate(items)
                if _first_path(item.get("image"))
                and p.endswith(os.sep + os.path.normpath(_first_path(item.get("image"))))
            ]
            idx = hits[0] if len(hits) == 1 else None
        if idx is not None:
            used.add(idx)
        out.append(items[idx] if idx is not None else None)
    unmatched = [item for i, item in enumerate(items) if i not in used]
    return out, unmatched


# --------------------------------------------------------------------------- per-class figures
def per_class_stats(
    cases: Sequence[Mapping[str, Any]],
    class_ids: Iterable[int],
    annotated_by_case: Sequence[Collection[int] | None],
    folds: Sequence[int | None] | None = None,
    parts: Mapping[int, Sequence[int]] | None = None,
) -> dict[int, dict[str, Any]]:
    """Per-class coverage and voxel fractions, computed by label *value*.

    Parameters
    ----------
    cases : sequence of mapping
        ``stats_by_cases`` entries (MONAI's structure).
    class_ids : iterable of int
        The classes to report.
    annotated_by_case : sequence
        Per case (same order), the class ids it annotates; None means all classes.
    folds : sequence of int or None, optional
        Per case, its fold (None: no fold); enables ``annotated_by_fold``.
    parts : mapping, optional
        Class id → ids of its atomic parts. A group's fraction in a case is then the sum
        of its own value's and its parts' fractions (a group's voxels carry the part
        values where the parts are annotated). Default: own value only.

    Returns
    -------
    dict of int to dict
        For each class id:

        ``annotated``: cases annotating it; ``present``: cases where its fraction > 0;
        ``present_annotated``: both; ``present_not_annotated``: present but not
        annotated; ``mean_fraction_annotated``: mean fraction over annotating cases (0
        where absent; None if none annotate it); ``mean_fraction_present``: mean over
        cases where present (what MONAI's summary means to report; None if never
        present); ``max_fraction``; ``annotated_by_fold`` / ``present_by_fold``:
        ``{fold: count}``; ``annotated_cases`` / ``present_cases``: case indices.

    Raises
    ------
    ValueError
        If ``annotated_by_case`` (or ``folds``) is not aligned with ``cases``.
    """
    ids = sorted(int(i) for i in class_ids)
    if len(annotated_by_case) != len(cases):
        raise ValueError(f"annotated_by_case has {len(annotated_by_case)} entries for {len(cases)} cases")
    if folds is not None and len(folds) != len(cases):
        raise ValueError(f"folds has {len(folds)} entries for {len(cases)} cases")
    parts = parts or {}
    fractions = [case_label_fractions(c) for c in cases]
    all_ids = frozenset(ids)
    annotated = [all_ids if a is None else frozenset(int(x) for x in a) for a in annotated_by_case]
    fold_values = sorted({f for f in (folds or []) if f is not None})

    out: dict[int, dict[str, Any]] = {}
    for cid in ids:
        members = [cid, *[int(p) for p in parts.get(cid, ())]]
        frac = [sum(fr.get(m, 0.0) for m in members) for fr in fractions]
        ann_idx = [i for i, a in enumerate(annotated) if cid in a]
        pres_idx = [i for i, f in enumerate(frac) if f > 0]
        ann_set = set(ann_idx)
        by_fold_a = {f: 0 for f in fold_values}
        by_fold_p = {f: 0 for f in fold_values}
        if folds is not None:
            for i in ann_idx:
                if folds[i] is not None:
                    by_fold_a[folds[i]] += 1
            for i in pres_idx:
                if folds[i] is not None:
                    by_fold_p[folds[i]] += 1
        out[cid] = {
            "annotated": len(ann_idx),
            "present": len(pres_idx),
            "present_annotated": sum(1 for i in pres_idx if i in ann_set),
            "present_not_annotated": sum(1 for i in pres_idx if i not in ann_set),
            "mean_fraction_annotated": float(np.mean([frac[i] for i in ann_idx])) if ann_idx else None,
            "mean_fraction_present": float(np.mean([frac[i] for i in pres_idx])) if pres_idx else None,
            "max_fraction": float(max(frac)) if frac else 0.0,
            "annotated_by_fold": by_fold_a,
            "present_by_fold": by_fold_p,
            "annotated_cases": ann_idx,
            "present_cases": pres_idx,
        }
    return out


def monai_positional_fraction(cases: Sequence[Mapping[str, Any]], value: int) -> tuple[float, list[int]]:
    """What MONAI's ``LabelStatsSumm`` reports as the mean fraction of label ``value``.

    It indexes each case's ``label_stats.label`` list with the *value*, drops cases whose
    list is too short, and averages the rest (0 when none remain).

    Returns
    -------
    (float, list of int)
        The mean, and for each case (same order) the label value actually found at that
        position, or -1 when the case's list is too short.
    """
    vals: list[float] = []
    source: list[int] = []
    for c in cases:
        ls = c.get("label_stats") or {}
        labels = ls.get("labels") or []
        per_label = ls.get("label") or []
        if 0 <= value < len(per_label):
            vals.append(float(per_label[value].get("foreground_percentage", 0.0)))
            source.append(int(labels[value]) if value < len(labels) else -1)
        else:
            source.append(-1)
    return (float(np.mean(vals)) if vals else 0.0), source


def _summary_mean(entry: Mapping[str, Any] | None) -> float | None:
    if not entry:
        return None
    fp = entry.get("foreground_percentage")
    if isinstance(fp, Mapping):
        m = fp.get("mean")
    else:
        m = fp
    if isinstance(m, (list, tuple)):
        m = float(np.mean(m)) if m else None
    return None if m is None else float(m)


def positional_summary_mismatches(
    summary_label_stats: Mapping[str, Any],
    cases: Sequence[Mapping[str, Any]],
    names: Mapping[int, str] | None = None,
    *,
    rtol: float = 1e-3,
    atol: float = 1e-6,
) -> list[dict[str, Any]]:
    """Where MONAI's summary fraction for a label differs from the by-value figure.

    Parameters
    ----------
    summary_label_stats : mapping
        ``stats_summary.label_stats`` of ``datastats.yaml``: ``labels`` (values) and
        ``label`` (entry ``i`` claimed to describe ``labels[i]``).
    cases : sequence of mapping
        ``stats_by_cases`` entries.
    names : mapping, optional
        Class names by value (0 is called ``background``).
    rtol, atol : float
        Tolerance of the comparison (MONAI writes float32-ish numbers).

    Returns
    -------
    list of dict
        One per disagreeing label: ``value``, ``name``, ``position`` (``i``),
        ``monai_mean`` (what datastats.yaml says), ``by_value_mean`` (mean fraction over
        the cases where the value is present), ``by_value_cases`` (how many),
        ``monai_cases`` (how many cases MONAI averaged), ``monai_source_values`` (the
        label values MONAI actually averaged), ``wrong_source_cases`` (indices of cases
        whose entry at that position is another value), ``missed_cases`` (cases holding
        the value that MONAI left out).
    """
    names = dict(names or {})
    names.setdefault(0, "background")
    values = [int(v) for v in summary_label_stats.get("labels") or []]
    entries = list(summary_label_stats.get("label") or [])
    fractions = [case_label_fractions(c) for c in cases]
    out: list[dict[str, Any]] = []
    for i, v in enumerate(values):
        monai = _summary_mean(entries[i] if i < len(entries) else None)
        present = [fr[v] for fr in fractions if v in fr]
        by_value = float(np.mean(present)) if present else 0.0
        _, source = monai_positional_fraction(cases, v)
        if monai is not None and math.isclose(monai, by_value, rel_tol=rtol, abs_tol=atol):
            continue
        out.append({
            "value": v,
            "name": names.get(v, str(v)),
            "position": i,
            "monai_mean": monai,
            "by_value_mean": by_value,
            "by_value_cases": len(present),
            "monai_cases": sum(1 for s in source if s >= 0),
            "monai_source_values": sorted({s for s in source if s >= 0}),
            "wrong_source_cases": [k for k, s in enumerate(source) if s >= 0 and s != v],
            "missed_cases": [k for k, fr in enumerate(fractions) if v in fr and source[k] != v],
        })
    return out


# --------------------------------------------------------------------------- flags
def size_outliers(shapes: Sequence[Sequence[int] | None], *, factor: float = 4.0,
                  min_voxels: int = 16) -> dict[int, str]:
    """Cases whose shape is extreme: an axis < median/factor, > factor·median, or < min_voxels.

    Returns
    -------
    dict of int to str
        Case index → reason.
    """
    valid = [np.asarray(s, dtype=float) for s in shapes if s]
    if not valid:
        return {}
    ndim = min(len(s) for s in valid)
    med = np.median(np.stack([s[:ndim] for s in valid]), axis=0)
    # an axis one voxel thick in every image is the slice axis of 2-D data (x, y, 1), not an outlier
    flat_axes = {ax for ax in range(ndim) if all(int(s[ax]) == 1 for s in valid)}
    out: dict[int, str] = {}
    for k, s in enumerate(shapes):
        if not s:
            continue
        reasons = []
        for ax in range(min(ndim, len(s))):
            if ax in flat_axes:
                continue
            n = int(s[ax])
            if n < min_voxels:
                reasons.append(f"axis {ax} has {n} voxels (< {min_voxels})")
            elif n < med[ax] / factor:
                reasons.append(f"axis {ax} = {n} < median {med[ax]:g} / {factor:g}")
            elif n > med[ax] * factor:
                reasons.append(f"axis {ax} = {n} > {factor:g} × median {med[ax]:g}")
        if reasons:
            out[k] = f"shape {list(s)}: " + "; ".join(reasons)
    return out


def find_flags(
    cases: Sequence[Mapping[str, Any]],
    annotated_by_case: Sequence[Collection[int] | None],
    class_stats: Mapping[int, Mapping[str, Any]],
    *,
    names: Mapping[int, str] | None = None,
    num_folds: int = 1,
    mismatches: Sequence[Mapping[str, Any]] = (),
    unmatched_items: Sequence[Mapping[str, Any]] = (),
    dataroot: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Things in the data a person should look at before training.

    Parameters
    ----------
    cases : sequence of mapping
        ``stats_by_cases`` entries.
    annotated_by_case : sequence
        Per case, the class ids it annotates (None: all).
    class_stats : mapping
        :func:`per_class_stats` output (its keys are the class ids).
    names : mapping, optional
        Class id → name.
    num_folds : int
        Folds of the cross-validation; a class annotated in fewer than
        ``max(3, num_folds)`` crops is flagged.
    mismatches : sequence of mapping
        :func:`positional_summary_mismatches` output.
    unmatched_items : sequence of mapping
        Datalist training items with no by-case statistics.
    dataroot : path, optional
        Image paths are shown relative to it.

    Returns
    -------
    list of str
        One line per finding, starting with a tag in brackets (``[blank-image]``,
        ``[empty-label]``, ``[extreme-size]``, ``[few-annotated]``,
        ``[never-annotated]``, ``[annotated-absent]``, ``[present-unannotated]``,
        ``[unknown-label]``, ``[not-analysed]``, ``[no-datalist-item]``,
        ``[monai-positional-summary]``) and naming the image files concerned
        (:func:`write_review` adds ``[unreadable-image]``).
    """
    names = dict(names or {})
    class_ids = sorted(int(i) for i in class_stats)
    all_ids = frozenset(class_ids)
    annotated = [all_ids if a is None else frozenset(int(x) for x in a) for a in annotated_by_case]
    img = [_display(_first_path(c.get("image_filepath")), dataroot) or f"case {k}" for k, c in enumerate(cases)]

    def cname(cid: int) -> str:
        return f"class {cid} '{names.get(cid, cid)}'"

    flags: list[str] = []
    # images
    for k, c in enumerate(cases):
        for ch, it in enumerate(_case_intensity(c)):
            mx, mn, sd = it.get("max"), it.get("min"), it.get("stdev")
            if (mx is not None and mn is not None and float(mx) == float(mn)) or (sd is not None and float(sd) == 0):
                chan = f" channel {ch}" if len(_case_intensity(c)) > 1 else ""
                flags.append(f"[blank-image] {img[k]}{chan}: constant intensity (min {mn}, max {mx}, stdev {sd})")
    # labels
    for k, c in enumerate(cases):
        fr = case_label_fractions(c)
        if annotated[k] and set(fr) <= {0}:
            flags.append(f"[empty-label] {img[k]}: label holds only background (0) although the item annotates "
                         f"{len(annotated[k])} class(es): {sorted(annotated[k])}")
        unknown = sorted(v for v in fr if v != 0 and v not in all_ids)
        if unknown and class_ids:
            flags.append(f"[unknown-label] {img[k]}: label values {unknown} are not in the class table")
        stray = sorted(v for v in fr if v != 0 and v in all_ids and v not in annotated[k] and fr[v] > 0)
        if stray:
            flags.append(f"[present-unannotated] {img[k]}: label values {stray} present but not in the item's "
                         f"annotated classes {sorted(annotated[k])}")
    # sizes
    for k, why in size_outliers([_case_shape(c) for c in cases]).items():
        flags.append(f"[extreme-size] {img[k]}: {why}")
    # classes
    need = max(3, int(num_folds))
    for cid in class_ids:
        st = class_stats[cid]
        n_ann = int(st["annotated"])
        ann_imgs = [img[i] for i in st.get("annotated_cases", [])]
        if n_ann == 0:
            flags.append(f"[never-annotated] {cname(cid)}: no crop annotates it")
            continue
        if n_ann < need:
            flags.append(f"[few-annotated] {cname(cid)}: annotated in {n_ann} crop(s), fewer than "
                         f"max(3, num_folds) = {need}: {_short_list(ann_imgs)}")
        if int(st.get("present_annotated", 0)) == 0:
            flags.append(f"[annotated-absent] {cname(cid)}: annotated in {n_ann} crop(s) but present in none: "
                         f"{_short_list(ann_imgs)}")
    # datalist vs analysis
    for item in unmatched_items:
        flags.append(f"[not-analysed] {_first_path(item.get('image'))}: datalist item has no entry in "
                     f"datastats_by_case.yaml (MONAI skipped it, or the datalist changed since the analysis)")
    # MONAI's positional summary
    for m in mismatches:
        wrong = [img[i] for i in m.get("wrong_source_cases", []) if i < len(img)]
        missed = [img[i] for i in m.get("missed_cases", []) if i < len(img)]
        monai = m.get("monai_mean")
        line = (f"[monai-positional-summary] label {m['value']} '{m['name']}': datastats.yaml "
                f"stats_summary.label_stats.label[{m['position']}] gives mean fraction {_pct(monai)} "
                f"over {m['monai_cases']} case(s), by value it is {_pct(m['by_value_mean'])} over "
                f"{m['by_value_cases']} case(s) where present")
        if monai is not None:
            line += f" (difference {100.0 * (monai - m['by_value_mean']):+.3g} points)"
        srcs = m.get("monai_source_values") or []
        line += f"; MONAI averaged the entries of label values {srcs} (each case's list indexed by the value)"
        if wrong:
            line += f"; entries of other values taken from {_short_list(wrong, 4)}"
        if missed:
            line += f"; cases left out: {_short_list(missed, 4)}"
        flags.append(line)
    return flags


# --------------------------------------------------------------------------- intensity histogram
def pooled_intensity_histogram(
    paths: Sequence[str | os.PathLike[str]],
    *,
    bins: int = 256,
    value_range: tuple[float, float] | None = None,
    chunk_voxels: int = 1 << 24,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Histogram of all voxels of the given images (read with nibabel), pooled.

    Parameters
    ----------
    paths : sequence of path
        NIfTI images.
    bins : int
        Number of equal-width bins.
    value_range : (float, float), optional
        Histogram range; default the images' min and max (one extra pass).
    chunk_voxels : int
        Voxels histogrammed at a time (bounds the float copy).

    Returns
    -------
    (counts, edges, unreadable)
        ``counts`` has ``bins`` entries, ``edges`` ``bins + 1``; ``unreadable`` lists the
        paths that could not be read.
    """
    import nibabel as nib

    def arrays() -> Iterable[tuple[str, np.ndarray | None]]:
        for p in paths:
            try:
                yield os.fspath(p), np.asanyarray(nib.load(os.fspath(p)).dataobj).reshape(-1)
            except Exception:  # noqa: BLE001 - report, do not abort the review
                yield os.fspath(p), None

    unreadable: list[str] = []
    if value_range is None:
        lo, hi = math.inf, -math.inf
        for p, a in arrays():
            if a is None or a.size == 0:
                continue
            lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        if not math.isfinite(lo):
            lo, hi = 0.0, 1.0
        value_range = (lo, hi)
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for p, a in arrays():
        if a is None:
            unreadable.append(p)
            continue
        for s in range(0, a.size, chunk_voxels):
            c, _ = np.histogram(a[s:s + chunk_voxels], bins=edges)
            counts += c
    return counts, edges, unreadable


def histogram_percentiles(counts: np.ndarray, edges: np.ndarray, qs: Sequence[float]) -> list[float | None]:
    """Percentiles of the data behind a histogram (linear within the crossing bin).

    Accurate to one bin width. None for each q when the histogram is empty.

    >>> histogram_percentiles(np.array([1, 1, 2]), np.array([0., 1., 2., 3.]), [50])
    [2.0]
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    if total <= 0:
        return [None for _ in qs]
    cum = np.cumsum(counts)
    out: list[float | None] = []
    for q in qs:
        target = min(max(q, 0.0), 100.0) / 100.0 * total
        k = int(np.searchsorted(cum, target, side="left"))
        k = min(k, len(counts) - 1)
        while counts[k] == 0 and k < len(counts) - 1:
            k += 1
        before = cum[k - 1] if k > 0 else 0.0
        frac = (target - before) / counts[k] if counts[k] > 0 else 0.0
        out.append(float(edges[k] + min(max(frac, 0.0), 1.0) * (edges[k + 1] - edges[k])))
    return out


# --------------------------------------------------------------------------- figures
def _save_figure(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _atomic_write_bytes(path, buf.getvalue())


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)  # Agg, whatever pyplot's backend is
    return fig


def _plot_intensity(path: Path, counts: np.ndarray, edges: np.ndarray, p_lo: float | None, p_hi: float | None,
                    n_images: int, n_total: int) -> None:
    fig = _figure(7.5, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    if counts.sum() > 0:
        ax.stairs(np.maximum(counts, 0), edges, fill=True, alpha=0.7, color="tab:blue")
        ax.set_yscale("log")
    for v, lab, col in ((p_lo, "0.5th percentile", "tab:red"), (p_hi, "99.5th percentile", "tab:orange")):
        if v is not None:
            ax.axvline(v, color=col, linestyle="--", label=f"{lab}: {v:.4g}")
    ax.set_xlabel("intensity")
    ax.set_ylabel("voxels (log)")
    ax.set_title(f"Intensity histogram, {len(counts)} bins, pooled over {n_images} of {n_total} images")
    if n_images == 0:
        ax.text(0.5, 0.5, "no image could be read: see [unreadable-image] in the review's flags",
                ha="center", va="center", transform=ax.transAxes)
    if p_lo is not None or p_hi is not None:
        ax.legend(loc="upper right", fontsize=8)
    _save_figure(fig, path)


def _plot_shapes(path: Path, sizes: np.ndarray, spacings: np.ndarray) -> None:
    fig = _figure(10.0, 4.0)
    ax1 = fig.add_subplot(1, 2, 1)
    ax2 = fig.add_subplot(1, 2, 2)
    rng = np.random.default_rng(0)
    axes_names = ["x (i)", "y (j)", "z (k)"]
    for ax, data, title, ylabel in (
        (ax1, sizes, "Physical size per axis", "size (affine units; nm for CellMap)"),
        (ax2, spacings, "Spacing per axis", "spacing (affine units; nm for CellMap)"),
    ):
        if data.size:
            nd = data.shape[1]
            ax.boxplot([data[:, a] for a in range(nd)], showfliers=False)
            for a in range(nd):
                ax.scatter(a + 1 + rng.uniform(-0.15, 0.15, len(data)), data[:, a], s=10, alpha=0.6,
                           color="tab:blue")
            ax.set_xticks(range(1, nd + 1), (axes_names + [f"axis {a}" for a in range(3, nd)])[:nd])
        ax.set_title(title)
        ax.set_ylabel(ylabel)
    _save_figure(fig, path)


def _class_labels(ids: Sequence[int], names: Mapping[int, str]) -> list[str]:
    return [f"{i} {names.get(i, i)}" for i in ids]


def _plot_fraction(path: Path, ids: Sequence[int], names: Mapping[int, str],
                   stats: Mapping[int, Mapping[str, Any]]) -> None:
    fig = _figure(7.5, max(2.5, 0.32 * len(ids) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    vals = [100.0 * (stats[i]["mean_fraction_annotated"] or 0.0) for i in ids]
    y = np.arange(len(ids))
    ax.barh(y, vals, color="tab:green")
    for yy, v, i in zip(y, vals, ids):
        txt = "not annotated" if stats[i]["annotated"] == 0 else f"{v:.3g} %"
        ax.text(v, yy, " " + txt, va="center", fontsize=7)
    ax.set_yticks(y, _class_labels(ids, names))
    ax.invert_yaxis()
    ax.set_xlabel("mean voxel fraction over crops that annotate the class (%)")
    ax.set_title("Class voxel fraction, by label value")
    if vals and max(vals) > 0:
        ax.set_xlim(0, max(vals) * 1.25)
    _save_figure(fig, path)


def _plot_coverage(path: Path, ids: Sequence[int], names: Mapping[int, str],
                   stats: Mapping[int, Mapping[str, Any]], n_cases: int) -> None:
    fig = _figure(7.5, max(2.5, 0.38 * len(ids) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(ids))
    h = 0.4
    ann = [stats[i]["annotated"] for i in ids]
    pres = [stats[i]["present"] for i in ids]
    ax.barh(y - h / 2, ann, height=h, label="annotated (annotated_mask)", color="tab:blue")
    ax.barh(y + h / 2, pres, height=h, label="present (fraction > 0)", color="tab:orange")
    ax.set_yticks(y, _class_labels(ids, names))
    ax.invert_yaxis()
    ax.set_xlabel(f"crops (of {n_cases})")
    ax.set_title("Class coverage: annotated vs present")
    ax.legend(loc="lower right", fontsize=8)
    _save_figure(fig, path)


# --------------------------------------------------------------------------- markdown
def _fmt_list(v: Sequence[float] | None, fmt: str = "{:g}") -> str:
    if not v:
        return "—"
    return " × ".join(fmt.format(x) for x in v)


def render_markdown(review: Mapping[str, Any]) -> str:
    """The Markdown text of a review (the dict written to ``datastats_review.json``)."""
    h = review["header"]
    lines = ["# Data statistics review", ""]
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
    flags = find_flags(cases, annotated, stats, names=names, num_folds=num_folds, mismatches=mismatches,
                       unmatched_items=unmatched, dataroot=root)
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
        "figures": figures,
    }
    review = _jsonable(review)
    _atomic_write_text(work / REVIEW_JSON, json.dumps(review, indent=2) + "\n")
    md_path = work / REVIEW_MD
    _atomic_write_text(md_path, render_markdown(review))
    return md_path
