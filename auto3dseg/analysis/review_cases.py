"""Per-case facts for the data review: file names and constants, the label fractions of one case
by label value, which classes an item annotates, the class table, and cases matched to datalist items.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


