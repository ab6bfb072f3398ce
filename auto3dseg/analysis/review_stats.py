"""Per-class figures recomputed from MONAI's by-case statistics (and where MONAI's positional summary
differs), and the flags a person should look at: size outliers, unannotated classes, empty folds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from datalists.annotated import UNANNOTATED

from .review_cases import _case_intensity, _case_shape, _display, _first_path, _pct, _short_list, case_label_fractions


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
    members: Mapping[int, Collection[int]] | None = None,
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
    members : mapping, optional
        Class id → the label values its training channel counts
        (:func:`auto3dseg.engine.transforms.channel_members`): a value inside an annotated
        class (``ne`` where the converter wrote what ``nuc`` and ``er`` share) is no stray.

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
        unknown = sorted(v for v in fr if v not in (0, UNANNOTATED) and v not in all_ids)
        if unknown and class_ids:
            flags.append(f"[unknown-label] {img[k]}: label values {unknown} are not in the class table")
        if fr.get(UNANNOTATED, 0) > 0:
            flags.append(f"[not-annotated-voxels] {img[k]}: {_pct(fr[UNANNOTATED])} of the label is "
                         f"{UNANNOTATED} (not annotated: left out of training); the conversion report says "
                         "which source values they came from")
        inside = {v for a in annotated[k] for v in (members or {}).get(a, ())}
        stray = sorted(v for v in fr if v != 0 and v in all_ids and v not in annotated[k] and v not in inside
                       and fr[v] > 0)
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


