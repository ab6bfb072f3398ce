"""Score a CellMap submission against local ground truth, the way the challenge does.

A submission is a Zarr-2 store ``submission.zarr/crop<N>/<label>`` (a folder, or a
``.zip`` holding it), each label a plain array with ``voxel_size`` and ``translation``
attributes (z, y, x, nm). The truth is either the flat layout the built-in synthetic
data writes (``test_truth.zarr/crop<N>/<label>``, arrays with the same attributes) or
CellMap stores (``<dataset>.zarr/recon-*/labels/groundtruth/crop<N>/<label>/s0`` with
OME-NGFF ``multiscales``; only the classes a crop annotates are scored).

For every truth (crop, label) the submitted array is placed on the truth's grid
(:func:`auto3dseg.placement.place_on_grid`: instances nearest, semantic linear then
``> 0.5``) and scored with :mod:`auto3dseg.evaluation.metrics`.

Aggregation
-----------
* semantic label: IoU and Dice from TP/FP/FN pooled over its crops;
* instance label: mean over its crops of ``combined = sqrt(F1 · mean normalised
  Hausdorff)`` (mean F1 and mean normalised Hausdorff are reported too);
* overall: ``sqrt(mean instance score · mean semantic IoU)`` over labels; when only one
  kind of label is scored, the mean of that kind.

A label missing from the submission scores 0: an instance label counts every true
object as a false negative; a semantic label counts every (known) voxel of the crop as a
false negative, as the official scorer does, so that a missing label also lowers the
pooled IoU of the label's other crops (an empty array would only count the true
foreground). A label written as a group (e.g. a multiscale group with ``s0``) instead
of a plain array is missing too, as for the official scorer.

Command line::

    python -m auto3dseg.evaluation.score --submission submission.zip \\
        --truth demo_output/synthetic_cellmap/test_truth.zarr --out scores.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from auto3dseg.classes import INSTANCE_CLASSES
from auto3dseg.evaluation.metrics import dice, instance_score, iou, semantic_counts
from auto3dseg.placement import grid_of, place_on_grid
from converters import cellmap_zarr as cz
from converters.geometry import Grid

__all__ = [
    "ScoringInputError",
    "TruthLabel",
    "aggregate_scores",
    "find_truth_labels",
    "format_scores_markdown",
    "main",
    "open_submission",
    "read_submission_label",
    "score_label",
    "score_submission",
    "write_scores",
]

_CROP_RE = re.compile(r"^crop(\d+)$")
# Truth voxels with this value are "unknown" in CellMap annotations: not scored.
UNKNOWN = 255


class ScoringInputError(ValueError):
    """A submission or truth store cannot be read as expected; the message names the file."""


@dataclass(frozen=True)
class TruthLabel:
    """One (crop, label) of the ground truth.

    Attributes
    ----------
    crop : int
        Crop number.
    label : str
        Class name (``"mito"``).
    array : array-like
        The label array (z, y, x), a zarr array or an ndarray.
    grid : Grid
        Its physical grid.
    source : str
        Where it was read from (for messages).
    """

    crop: int
    label: str
    array: Any
    grid: Grid
    source: str = ""

    @property
    def key(self) -> str:
        return f"crop{self.crop}/{self.label}"


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------
def _zip_prefix(store: zarr.ZipStore, where: str) -> str:
    """The folder of the zarr root inside a zip: '' or e.g. 'submission.zarr'."""
    keys = set(store.keys())
    if ".zgroup" in keys:
        return ""
    roots = sorted(k[: -len("/.zgroup")] for k in keys
                   if k.count("/") == 1 and k.endswith(".zarr/.zgroup") and not k.startswith("__MACOSX"))
    if "submission.zarr" in roots:
        return "submission.zarr"
    if len(roots) == 1:
        return roots[0]
    found = ", ".join(roots) if roots else "none"
    raise ScoringInputError(f"{where}: no zarr group at the zip's root or in one '<name>.zarr/' folder "
                            f"inside it (found: {found})")


def _dir_root(path: Path) -> Path:
    if (path / ".zgroup").exists():
        return path
    if (path / "submission.zarr" / ".zgroup").exists():
        return path / "submission.zarr"
    inner = sorted(p.parent for p in path.glob("*.zarr/.zgroup"))
    if len(inner) == 1:
        return inner[0]
    raise ScoringInputError(f"{path}: not a zarr v2 group (no .zgroup) and no single '<name>.zarr' store inside")


@contextlib.contextmanager
def open_submission(path: str | os.PathLike[str]) -> Iterator[zarr.hierarchy.Group]:
    """Open a submission read-only: a zarr folder, a folder holding one, or a ``.zip``.

    In a zip the store may be at the root or under ``submission.zarr/`` (or any single
    ``<name>.zarr/`` folder). Use as a context manager: a zip is closed on exit.

    Raises
    ------
    ScoringInputError
        If the path does not exist or holds no readable zarr group; the message names it.
    """
    p = Path(path)
    if not p.exists():
        raise ScoringInputError(f"{p}: no such submission file or folder")
    if p.is_file():
        try:
            store = zarr.ZipStore(str(p), mode="r")
        except Exception as exc:  # zipfile raises BadZipFile, OSError, ...
            raise ScoringInputError(f"{p}: not a readable zip file ({exc})") from exc
        try:
            prefix = _zip_prefix(store, str(p))
            try:
                group = zarr.open_group(store, mode="r", path=prefix)
            except Exception as exc:
                raise ScoringInputError(f"{p}:{prefix or '/'}: not a readable zarr v2 group ({exc})") from exc
            yield group
        finally:
            store.close()
        return
    root = _dir_root(p)
    try:
        group = zarr.open_group(str(root), mode="r")
    except Exception as exc:
        raise ScoringInputError(f"{root}: not a readable zarr v2 group ({exc})") from exc
    yield group


def _vector(attrs: Any, name: str, where: str) -> tuple[float, float, float]:
    value = attrs.get(name)
    if value is None:
        raise ScoringInputError(f"{where}: .zattrs has no '{name}' (expected z, y, x in nm)")
    try:
        vec = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ScoringInputError(f"{where}: '{name}' must be 3 numbers (z, y, x, nm), got {value!r}") from None
    if len(vec) != 3:
        raise ScoringInputError(f"{where}: '{name}' must be 3 numbers (z, y, x, nm), got {value!r}")
    return vec  # type: ignore[return-value]


def _array_grid(arr: zarr.Array, where: str) -> Grid:
    """The grid of a plain CellMap label array from its ``voxel_size``/``translation`` attrs."""
    if arr.ndim != 3:
        raise ScoringInputError(f"{where}: expected a 3D (z, y, x) array, got shape {arr.shape}")
    voxel_size = _vector(arr.attrs, "voxel_size", where)
    translation = _vector(arr.attrs, "translation", where)
    shape = arr.attrs.get("shape")
    if shape is not None and tuple(int(v) for v in shape) != tuple(arr.shape):
        raise ScoringInputError(f"{where}: attribute shape {list(shape)} differs from the array's {list(arr.shape)}")
    return grid_of(voxel_size, translation, arr.shape)


def _flat_truth(root: zarr.hierarchy.Group, where: str) -> list[TruthLabel]:
    found = []
    for crop_name, crop in root.groups():
        m = _CROP_RE.match(crop_name)
        if not m:
            continue
        for label, arr in crop.arrays():
            src = f"{where}/{crop_name}/{label}"
            found.append(TruthLabel(int(m.group(1)), label, arr, _array_grid(arr, src), src))
    return found


def _cellmap_truth(path: Path) -> list[TruthLabel]:
    patterns = ["recon-*/labels/groundtruth/crop*"] if path.suffix == ".zarr" else list(cz.GT_GLOBS)
    crop_dirs = sorted({p for pat in patterns for p in path.glob(pat) if (p / ".zgroup").exists()})
    found = []
    for crop_dir in crop_dirs:
        store_path = next(p for p in crop_dir.parents if p.suffix == ".zarr")
        rel = crop_dir.relative_to(store_path).as_posix()
        m = _CROP_RE.match(crop_dir.name)
        if not m:
            continue
        root = cz.open_readonly(store_path)
        _, statuses, _ = cz.crop_annotation(root, rel)
        for name, status in sorted(statuses.items()):
            if not status.annotated:
                continue
            where = f"{store_path}/{rel}/{name}"
            level = cz.read_levels(root[rel][name], where)[0]
            arr = root[rel][name][level.path]
            found.append(TruthLabel(int(m.group(1)), name, arr, Grid(level.translation, level.scale, arr.shape),
                                    f"{where}/{level.path}"))
    return found


def find_truth_labels(path: str | os.PathLike[str]) -> list[TruthLabel]:
    """Every (crop, label) of a ground-truth store, sorted by crop then label.

    Parameters
    ----------
    path : path
        Either a flat store ``<truth>.zarr/crop<N>/<label>`` (plain arrays with
        ``voxel_size`` and ``translation`` attrs), or CellMap data: a ``<dataset>.zarr``
        store or a folder of them (``<root>/<ds>/<ds>.zarr`` or ``<root>/<ds>.zarr``),
        whose ``recon-*/labels/groundtruth/crop<N>/<label>`` groups carry OME-NGFF
        multiscales. In CellMap data, the finest level is the truth and only the classes
        the crop annotates are listed.

    Raises
    ------
    ScoringInputError
        If the path holds no truth label, or an array lacks its attributes.
    """
    p = Path(path)
    if not p.exists():
        raise ScoringInputError(f"{p}: no such truth folder")
    found: list[TruthLabel] = []
    if (p / ".zgroup").exists():
        found = _flat_truth(cz.open_readonly(p), str(p))
    if not found:
        try:
            found = _cellmap_truth(p)
        except cz.CellMapFormatError as exc:
            raise ScoringInputError(str(exc)) from exc
    if not found:
        raise ScoringInputError(
            f"{p}: no truth labels found (expected crop<N>/<label> arrays, or CellMap "
            "<dataset>.zarr/recon-*/labels/groundtruth/crop<N>/<label>/s0)")
    keys = [t.key for t in found]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ScoringInputError(f"{p}: the same crop and label found more than once: {', '.join(dupes)}")
    return sorted(found, key=lambda t: (t.crop, t.label))


def read_submission_label(root: zarr.hierarchy.Group, crop: int, label: str, where: str = ""
                          ) -> tuple[zarr.Array | None, Grid | None, str]:
    """The submitted array of one (crop, label), its grid, and why it is missing if it is.

    Returns ``(array, grid, "")`` when present, else ``(None, None, reason)``. A group in
    place of an array (e.g. a multiscale group holding ``s0``) is missing: the official
    scorer counts it so.

    Raises
    ------
    ScoringInputError
        If the array lacks ``voxel_size`` or ``translation``, or is not 3D.
    """
    key = f"crop{crop}/{label}"
    if f"crop{crop}" not in root:
        return None, None, "crop not in submission"
    node = root[f"crop{crop}"].get(label)
    if node is None:
        return None, None, "label not in submission"
    if not isinstance(node, zarr.Array):
        return None, None, "a group, not an array (e.g. multiscale with s0): the official scorer counts it missing"
    return node, _array_grid(node, f"{where}:{key}" if where else key), ""


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------
def _kind(label: str) -> str:
    return "instance" if label in INSTANCE_CLASSES else "semantic"


def score_label(truth: TruthLabel, pred: np.ndarray | None) -> dict[str, Any]:
    """Score one truth (crop, label) against a prediction already on the truth's grid.

    ``pred`` None means the label is missing from the submission. Returns a
    JSON-serialisable record with ``crop``, ``label``, ``kind``, ``status``, ``score``
    and the kind's metrics (see :func:`~auto3dseg.evaluation.metrics.instance_score`).
    """
    truth_arr = np.asarray(truth.array[...])
    kind = _kind(truth.label)
    record: dict[str, Any] = {"crop": truth.crop, "label": truth.label, "kind": kind,
                              "voxel_size": list(truth.grid.spacing), "shape": list(truth.grid.shape)}
    if kind == "semantic":
        if pred is None:
            counts = {"tp": 0, "fp": 0, "fn": int(np.count_nonzero(truth_arr != UNKNOWN))}
        else:
            counts = semantic_counts(pred, truth_arr, ignore_value=UNKNOWN)
        value = iou(counts)
        return {**record, "status": "missing" if pred is None else "scored", **counts,
                "iou": value, "dice": dice(counts), "score": value}
    if pred is None:
        n_truth = int(np.unique(truth_arr[truth_arr != 0]).size)
        return {**record, "status": "missing", "n_pred": 0, "n_truth": n_truth, "tp": 0, "fp": 0,
                "fn": n_truth, "f1": 0.0, "hausdorff_nm": None, "hausdorff_norm": 0.0, "combined": 0.0,
                "score": 0.0}
    result = instance_score(pred, truth_arr, truth.grid.spacing)
    return {**record, **result, "score": result["combined"]}


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def aggregate_scores(records: Sequence[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per-label and overall figures from per-(crop, label) records of :func:`score_label`.

    Returns
    -------
    labels : dict
        Per label. Semantic: pooled ``tp``, ``fp``, ``fn``, ``iou``, ``dice``, and
        ``score`` = IoU. Instance: summed counts, mean ``f1``, mean ``hausdorff_norm``
        and ``score`` = mean combined score over crops. Both: ``n_crops``, ``missing``,
        and for instances ``failed`` (crops with too many predicted objects).
    overall : dict
        ``score``, ``instance_mean``, ``semantic_mean`` and ``rule`` (how the score was
        made).

    Examples
    --------
    >>> recs = [{"label": "er", "kind": "semantic", "status": "scored", "tp": 1, "fp": 1, "fn": 0},
    ...         {"label": "er", "kind": "semantic", "status": "scored", "tp": 1, "fp": 0, "fn": 2},
    ...         {"label": "mito", "kind": "instance", "status": "scored", "tp": 1, "fp": 0, "fn": 0,
    ...          "f1": 1.0, "hausdorff_norm": 1.0, "combined": 1.0}]
    >>> labels, overall = aggregate_scores(recs)
    >>> labels["er"]["iou"], round(overall["score"], 4)          # sqrt(1.0 * 0.4)
    (0.4, 0.6325)
    """
    labels: dict[str, dict[str, Any]] = {}
    for name in sorted({r["label"] for r in records}):
        rows = [r for r in records if r["label"] == name]
        kind = rows[0]["kind"]
        counts = {k: int(sum(r[k] for r in rows)) for k in ("tp", "fp", "fn")}
        entry: dict[str, Any] = {"kind": kind, "n_crops": len(rows),
                                 "missing": sum(r["status"] == "missing" for r in rows), **counts}
        if kind == "semantic":
            entry.update(iou=iou(counts), dice=dice(counts), score=iou(counts))
        else:
            entry.update(f1=_mean([r["f1"] for r in rows]),
                         hausdorff_norm=_mean([r["hausdorff_norm"] for r in rows]),
                         score=_mean([r["combined"] for r in rows]),
                         failed=sum(r["status"] == "too_many_instances" for r in rows))
        labels[name] = entry
    inst = _mean([v["score"] for v in labels.values() if v["kind"] == "instance"])
    sem = _mean([v["score"] for v in labels.values() if v["kind"] == "semantic"])
    if inst is not None and sem is not None:
        score, rule = math.sqrt(inst * sem), "sqrt(mean instance score * mean semantic IoU)"
    elif inst is not None:
        score, rule = inst, "mean instance score (no semantic label scored)"
    elif sem is not None:
        score, rule = sem, "mean semantic IoU (no instance label scored)"
    else:
        score, rule = None, "nothing scored"
    return labels, {"score": score, "instance_mean": inst, "semantic_mean": sem, "rule": rule}


def score_submission(submission: str | os.PathLike[str], truth: str | os.PathLike[str],
                     labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Score a submission against a truth store.

    Parameters
    ----------
    submission : path
        ``submission.zarr`` folder, a folder holding it, or a ``.zip``.
    truth : path
        Truth store, see :func:`find_truth_labels`.
    labels : sequence of str, optional
        Score only these labels (default: every truth label).

    Returns
    -------
    dict
        JSON-serialisable: ``submission``, ``truth``, ``overall`` (see
        :func:`aggregate_scores`), ``labels`` (per label), ``crops`` (one record per
        truth crop and label, see :func:`score_label`), ``missing`` (``"crop<N>/<label>"``
        absent from the submission) and ``notes``.

    Raises
    ------
    ScoringInputError
        If a store cannot be read, an array lacks its attributes, or nothing is left to
        score.
    """
    truths = find_truth_labels(truth)
    notes: list[str] = []
    if labels is not None:
        wanted = set(labels)
        absent = sorted(wanted - {t.label for t in truths})
        if absent:
            notes.append(f"requested labels not in the truth: {', '.join(absent)}")
        truths = [t for t in truths if t.label in wanted]
        if not truths:
            raise ScoringInputError(f"{truth}: none of the labels {sorted(wanted)} is in the truth")
    records, missing = [], []
    with open_submission(submission) as root:
        for t in truths:
            arr, grid, reason = read_submission_label(root, t.crop, t.label, str(submission))
            placed = None
            if arr is None:
                missing.append(t.key)
                if reason.startswith("a group"):
                    notes.append(f"{t.key}: {reason}")
            else:
                kind = _kind(t.label)
                src = np.asarray(arr[...])
                if kind == "instance" and src.dtype.kind not in "biu":
                    notes.append(f"{t.key}: instance ids stored as {src.dtype}; read as integers")
                    src = src.astype(np.int64)
                placed = place_on_grid(src, grid, t.grid, kind)
            records.append(score_label(t, placed))
    per_label, overall = aggregate_scores(records)
    return {"submission": str(submission), "truth": str(truth), "overall": overall, "labels": per_label,
            "crops": records, "missing": missing, "notes": notes}


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_scores_markdown(scores: dict[str, Any]) -> str:
    """A readable Markdown report of :func:`score_submission`'s result.

    >>> s = {"overall": {"score": 0.5, "instance_mean": None, "semantic_mean": 0.5,
    ...                  "rule": "mean semantic IoU (no instance label scored)"},
    ...      "labels": {}, "crops": [], "missing": [], "notes": []}
    >>> format_scores_markdown(s).splitlines()[2]
    '**Overall score: 0.5000** — mean semantic IoU (no instance label scored)'
    """
    ov = scores["overall"]
    lines = ["# Submission scores", "",
             f"**Overall score: {_fmt(ov['score'])}** — {ov['rule']}", "",
             f"- mean instance score: {_fmt(ov['instance_mean'])}",
             f"- mean semantic IoU: {_fmt(ov['semantic_mean'])}"]
    if "submission" in scores:
        lines += [f"- submission: `{scores['submission']}`", f"- truth: `{scores['truth']}`"]
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
            r["crop"], r["label"], r["kind"], r["status"], r["score"], r.get("iou"), r.get("f1"),
            r.get("hausdorff_nm"), r.get("hausdorff_norm"), r["tp"], r["fp"], r["fn"])) + " |")
    if scores["missing"]:
        lines += ["", "## Missing from the submission (scored as all false negatives)", ""]
        lines += [f"- {k}" for k in scores["missing"]]
    if scores["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in scores["notes"]]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_scores(scores: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``scores`` as JSON to ``path`` and the Markdown report beside it (``.md``),
    each via a temporary name; returns the JSON path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out, json.dumps(scores, indent=2) + "\n")
    _write_atomic(out.with_suffix(".md"), format_scores_markdown(scores))
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m auto3dseg.evaluation.score",
        description="Score a CellMap submission against local ground truth (semantic IoU/Dice, "
                    "instance F1 + normalised Hausdorff, overall sqrt(instance * semantic)).",
        epilog="Exit status: 0 when scored, 2 when a store cannot be read (the message names it).")
    ap.add_argument("--submission", required=True,
                    help="the submission: a submission.zarr folder, a folder holding one, or a .zip holding "
                         "it (at the zip's root or under submission.zarr/); arrays crop<N>/<label> with "
                         "voxel_size and translation attrs (z, y, x, nm)")
    ap.add_argument("--truth", required=True,
                    help="the ground truth: a flat store crop<N>/<label> (e.g. the synthetic data's "
                         "test_truth.zarr), a CellMap <dataset>.zarr, or a folder of CellMap datasets")
    ap.add_argument("--out", default=None,
                    help="write the scores as JSON here and a Markdown report beside it (same name, .md); "
                         "both written atomically. Default: print only")
    ap.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                    help="score only these labels (e.g. --labels mito er); default: every truth label")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (0 scored, 2 unreadable input)."""
    args = _parser().parse_args(argv)
    try:
        scores = score_submission(args.submission, args.truth, args.labels)
    except ScoringInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = format_scores_markdown(scores)
    print(report, end="")
    if args.out:
        out = write_scores(scores, args.out)
        print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
