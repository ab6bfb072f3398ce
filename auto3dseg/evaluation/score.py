"""Score a CellMap submission against local ground truth, by the official rules or stricter ones.

A submission is a Zarr-2 store ``submission.zarr/crop<N>/<label>`` (a folder, or a
``.zip`` holding it), each label a plain array with ``voxel_size`` and ``translation``
attributes (z, y, x, nm). The truth is either the flat layout the toolbox and the
built-in synthetic data write (``test_truth.zarr/crop<N>/<label>``, arrays with the same
attributes) or CellMap stores (``<dataset>.zarr/recon-*/labels/groundtruth/crop<N>/
<label>/s0``; only the classes a crop annotates are scored). Every truth (crop, label) is
scored; its target grid is the test manifest's row (``test_manifest``) or else the truth
array's attributes.

Two rule sets (``rules=``):

* ``"official"`` (default) reproduces the challenge's ``score_submission`` figures:
  placement by :mod:`~auto3dseg.evaluation.resample`, per-crop counts and per-class
  pooling by :mod:`~auto3dseg.evaluation.official`; a bare ``<N>/`` folder is read as
  ``crop<N>/`` when no ``crop<N>/`` matches; a missing ``translation`` means offset 0;
  a truth array ``<label>_mask`` multiplies the truth and the prediction of ``<label>``
  (and, as in the toolbox, is itself scored as a semantic label);
* ``"strict"``: the project's earlier rules (:mod:`~auto3dseg.evaluation.strict`):
  physical placement, truth 255 ignored, instance scores averaged over crops, a crop
  with too many objects scores 0, missing ``voxel_size``/``translation`` refused.

Under both, the traps of :mod:`~auto3dseg.evaluation.traps` become warnings (JSON
``warnings``, the Markdown report and stderr).

Command line::

    python -m auto3dseg.evaluation.score --submission submission.zip \\
        --truth demo_output/synthetic_cellmap/test_truth.zarr \\
        --test_manifest demo_output/synthetic_cellmap/test_crop_manifest.csv --out scores.json
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from auto3dseg.evaluation.official import (
    aggregate_official,
    official_instance_counts,
    official_kind,
    official_missing_counts,
    official_semantic_counts,
)
from auto3dseg.evaluation.report import format_scores_markdown, write_scores
from auto3dseg.evaluation.resample import official_place
from converters.outputs import check_output_file, os_error_message
from auto3dseg.evaluation.stores import (
    CROP_RE,
    ScoringInputError,
    SubmissionStore,
    TruthLabel,
    array_grid,
    find_truth_labels,
    label_attr,
    open_submission,
    read_manifest_grids,
    truth_inside,
)
from auto3dseg.evaluation.swapped import swap_check
from auto3dseg.evaluation.strict import aggregate_scores, score_label, strict_kind
from auto3dseg.evaluation.traps import (
    axis_order_warnings,
    early_offset_warnings,
    float_instance_warnings,
    format_warning,
    make_warning,
    newer_zarr_warnings,
    shape_mismatch_warnings,
    skipped_class_warnings,
    uint8_wrap_warnings,
    unknown_truth_warnings,
    value_warnings,
)
from auto3dseg.submission.placement import grid_of, place_on_grid
from converters.geometry import Grid

__all__ = [
    "RULES",
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

RULES = ("official", "strict")
Warn = dict[str, Any]


def read_submission_label(store: SubmissionStore, crop: int, label: str, where: str = ""
                          ) -> tuple[Any, Grid | None, str]:
    """The submitted array of ``crop<N>/<label>``, its grid (strict attributes), or why it is missing.

    Returns ``(array, grid, "")`` when present, else ``(None, None, reason)``; a group in
    place of an array (e.g. a multiscale group holding ``s0``) is missing, as for the
    official scorer.

    Raises
    ------
    ScoringInputError
        If the array lacks ``voxel_size`` or ``translation``, or is not 3D.
    """
    kind = store.node_kind(f"crop{crop}", label)
    if kind is None:
        return None, None, "label not in submission" if f"crop{crop}" in store.crop_dirs() else "crop not in submission"
    if kind == "group":
        return None, None, "a group, not an array (e.g. multiscale with s0): the official scorer counts it missing"
    arr = store.array(f"crop{crop}", label)
    key = f"crop{crop}/{label}"
    return arr, array_grid(arr, f"{where}:{key}" if where else key), ""


# --------------------------------------------------------------------------------------
# Crops, targets and the manifest
# --------------------------------------------------------------------------------------
def _crop_dirs(sub: SubmissionStore, truth_crops: set[int], rules: str) -> tuple[dict[int, str], list[Warn]]:
    """Submission folder of each truth crop, and warnings for bare ``<N>/`` folders."""
    dirs = sub.crop_dirs()
    direct = {int(m.group(1)): d for d in dirs if (m := CROP_RE.match(d)) and int(m.group(1)) in truth_crops}
    bare = {int(d): d for d in dirs if d.isdigit() and d == str(int(d))}
    renamed = rules == "official" and not direct and any(n in truth_crops for n in bare)
    if rules == "official" and not direct and not renamed:
        raise ScoringInputError(f"{sub.where}: no folder crop<N> (or <N>) of a truth crop "
                                f"({', '.join(f'crop{c}' for c in sorted(truth_crops))}) in the submission; "
                                "the official scorer refuses it")
    warns = []
    for n, d in sorted(bare.items()):
        effect = ("read as crop{n}/ because no crop<N>/ folder matched (the official scorer renames them)"
                  if renamed else "not read: its labels count as missing (name it crop{n}/)").format(n=n)
        for label in sorted(sub.labels(d)) or ["*"]:
            warns.append(make_warning(n, label, "bare_crop_dir", f"folder '{d}/' instead of 'crop{n}/': {effect}"))
    return ({n: d for n, d in bare.items() if n in truth_crops} if renamed else direct), warns


def _manifest_warnings(truths: Sequence[TruthLabel], grids: dict[tuple[int, str], Grid], rules: str,
                       wanted: set[str] | None) -> list[Warn]:
    warns = []
    have = {(t.crop, t.label) for t in truths}
    for crop, label in sorted(set(grids) - have):
        if wanted is None or label in wanted:
            warns.append(make_warning(crop, label, "no_truth", "in the test manifest but not in the truth: not scored"))
    for t in truths:
        g = grids.get((t.crop, t.label))
        if g is None:
            warns.append(make_warning(t.crop, t.label, "not_in_manifest",
                                      "in the truth but not in the test manifest: the truth's attributes give "
                                      "the target grid (the official scorer fails on it when it is submitted)"))
        elif not (np.allclose(g.origin, t.grid.origin) and np.allclose(g.spacing, t.grid.spacing)
                  and g.shape == t.grid.shape):
            use = "the manifest" if rules == "official" else "the truth's attributes"
            warns.append(make_warning(t.crop, t.label, "grid_mismatch",
                                      f"manifest grid (translation {list(g.origin)}, voxel_size {list(g.spacing)}, "
                                      f"shape {list(g.shape)}) differs from the truth's (translation "
                                      f"{list(t.grid.origin)}, voxel_size {list(t.grid.spacing)}, shape "
                                      f"{list(t.grid.shape)}); {use} places the prediction"))
    return warns


def _target(t: TruthLabel, grids: dict[tuple[int, str], Grid], rules: str) -> Grid:
    if rules == "strict":
        return t.grid
    target = grids.get((t.crop, t.label), t.grid)
    if tuple(target.shape) != tuple(t.grid.shape):
        raise ScoringInputError(f"{t.source}: truth shape {list(t.grid.shape)} differs from the test manifest's "
                                f"{list(target.shape)}; the official rules need the truth on the manifest's grid")
    return target


# --------------------------------------------------------------------------------------
# One (crop, label)
# --------------------------------------------------------------------------------------
def _base(t: TruthLabel, kind: str, target: Grid) -> dict[str, Any]:
    return {"crop": t.crop, "label": t.label, "kind": kind, "voxel_size": list(target.spacing),
            "shape": list(target.shape)}


def _official_record(t: TruthLabel, kind: str, target: Grid, counts: dict[str, Any]) -> dict[str, Any]:
    record = {**_base(t, kind, target), **counts}
    if kind == "semantic":
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        record.update(iou=tp / (tp + fp + fn) if tp + fp + fn else 1.0,
                      dice=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
        record["score"] = record["iou"]
    elif counts["status"] == "missing":
        record.update(f1=0.0, hausdorff_norm=0.0, combined=0.0, score=0.0)
    else:
        record["score"] = counts["combined"]
    return record


def _missing(t: TruthLabel, truth_arr: np.ndarray, target: Grid, rules: str) -> dict[str, Any]:
    if rules == "strict":
        return score_label(t, None)
    kind = official_kind(t.label)
    return _official_record(t, kind, target, official_missing_counts(truth_arr, kind))


def _score_present(t: TruthLabel, truth_arr: np.ndarray, target: Grid, arr: Any, rules: str, where: str,
                   mask: np.ndarray | None = None) -> tuple[dict[str, Any], list[Warn], list[str]]:
    """Place one submitted array on the target and score it (times ``mask`` if given); also its traps and notes."""
    warns: list[Warn] = []
    notes: list[str] = []
    if arr.ndim != 3:
        raise ScoringInputError(f"{where}: expected a 3D (z, y, x) array, got shape {arr.shape}")
    src = np.asarray(arr[...])
    if rules == "official":
        kind = official_kind(t.label)
        vs = label_attr(arr.attrs, "voxel_size", where)
        tr = label_attr(arr.attrs, "translation", where)
        if vs is None:
            warns.append(make_warning(t.crop, t.label, "no_voxel_size", "no voxel_size attribute: not resampled, "
                                      "centre padded/cropped to the crop's shape (official rules)"))
        if tr is None:
            warns.append(make_warning(t.crop, t.label, "no_translation", "no translation attribute: taken as "
                                      "the crop's own origin, offset 0 (official rules)"))
        warns += shape_mismatch_warnings(t.crop, t.label, src.shape, arr.attrs.get("shape"), vs, tr, target)

        def place(v: Sequence[float] | None, tr_: Sequence[float] | None) -> np.ndarray:
            return official_place(src, v, tr_, target, kind)
    else:
        kind = strict_kind(t.label)
        grid = array_grid(arr, where)
        vs, tr = grid.spacing, grid.origin
        if kind == "instance" and src.dtype.kind not in "biu":
            notes.append(f"{t.key}: instance ids stored as {src.dtype}; read as integers")
            src = src.astype(np.int64)

        def place(v: Sequence[float] | None, tr_: Sequence[float] | None) -> np.ndarray:
            return place_on_grid(src, grid_of(v, tr_, src.shape), target, kind)  # type: ignore[arg-type]
    try:
        placed = place(vs, tr)
    except ValueError as exc:
        raise ScoringInputError(f"{where}: {exc}") from exc
    if mask is not None:
        placed = placed * mask
    if rules == "official":
        counts = (official_semantic_counts(placed, truth_arr) if kind == "semantic"
                  else official_instance_counts(placed, truth_arr, target.spacing))
        record = _official_record(t, kind, target, counts)
    else:
        record = score_label(t, placed)
    if kind == "instance":
        warns += uint8_wrap_warnings(t.crop, t.label, src)
        if rules == "official":
            warns += float_instance_warnings(t.crop, t.label, src, placed, record.get("status"))
    if record.get("tie_without_solver"):
        warns.append(make_warning(t.crop, t.label, "matching_tie",
                                  "two one-to-one matchings cost the same and OR-tools, the official scorer's "
                                  "solver, is not installed: the choice, and with it the Hausdorff term, may "
                                  "differ from the official figure (pip install ortools)"))
    warns += value_warnings(t.crop, t.label, kind, src, rules)
    axis = axis_order_warnings(t.crop, t.label, src.shape, vs, tr, target, placed, truth_arr, place)
    warns += axis
    if rules == "official" and not axis:
        warns += early_offset_warnings(t.crop, t.label, vs, tr, target)
    return record, warns, notes


class _OnGrid:
    """An array already on a grid, with the attributes a submitted array carries."""

    def __init__(self, data: np.ndarray, grid: Grid):
        self.data, self.ndim, self.shape = data, data.ndim, data.shape
        self.attrs = {"voxel_size": [float(v) for v in grid.spacing],
                      "translation": [float(v) for v in grid.origin], "shape": [int(v) for v in grid.shape]}

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.data[key]


def score_on_truth_grid(t: TruthLabel, truth_arr: np.ndarray, data: np.ndarray | None,
                        rules: str = "official") -> dict[str, Any]:
    """The record of one (crop, label) whose prediction ``data`` lies on the truth's own grid
    (None: written empty), as :func:`score_submission` makes it for such a submitted array."""
    target = _target(t, {}, rules)
    if data is None:
        data = np.zeros(tuple(target.shape), dtype=np.uint8)
    return _score_present(t, truth_arr, target, _OnGrid(data, target), rules, t.key)[0]


# --------------------------------------------------------------------------------------
# The submission
# --------------------------------------------------------------------------------------
def score_submission(submission: str | os.PathLike[str], truth: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                     labels: Sequence[str] | None = None, *, rules: str = "official",
                     test_manifest: str | os.PathLike[str] | None = None,
                     echo_warnings: bool = True, only: Collection[tuple[int, str]] | None = None) -> dict[str, Any]:
    """Score a submission against a truth store.

    Parameters
    ----------
    submission : path
        ``submission.zarr`` folder, a folder holding it, or a ``.zip``.
    truth : path or sequence of paths
        Truth store, see :func:`find_truth_labels`; several stores are scored as one (a
        crop and label found twice is an error).
    labels : sequence of str, optional
        Score only these labels (default: every truth label).
    rules : {"official", "strict"}
        ``"official"`` reproduces the challenge's scorer; ``"strict"`` is the project's
        earlier, stricter rule set (see the module notes and the README's table).
    test_manifest : path, optional
        The toolbox's ``test_crop_manifest.csv``: each (crop, label)'s target grid
        (official rules; the truth's attributes otherwise) and the labels to expect.
    echo_warnings : bool
        Print each warning to stderr as ``warning: crop<N>/<label> [kind]: message``.
    only : collection of (int, str), optional
        Score only these (crop id, label) pairs of the truth (the cross-validated score: the
        classes each training crop annotates).

    Returns
    -------
    dict
        JSON-serialisable: ``submission``, ``truth``, ``rules``, ``test_manifest``,
        ``overall`` (``score``, ``instance_mean``, ``semantic_mean``, ``rule``),
        ``labels`` (per label), ``crops`` (one record per truth crop and label),
        ``missing`` (``"crop<N>/<label>"`` absent from the submission), ``warnings``
        (``{crop, label, kind, message}``) and ``notes``.

    Raises
    ------
    ScoringInputError
        If a store cannot be read, an array lacks what the rules need, or nothing is
        left to score.

    Examples
    --------
    >>> import tempfile, zarr
    >>> d = tempfile.mkdtemp()
    >>> t = zarr.open_group(f"{d}/t.zarr", mode="w").require_group("crop1").create_dataset(
    ...     "er", data=np.ones((2, 2, 2), np.uint8))
    >>> t.attrs.put({"voxel_size": [8, 8, 8], "translation": [4, 4, 4]})
    >>> s = score_submission(f"{d}/t.zarr", f"{d}/t.zarr", echo_warnings=False)
    >>> s["labels"]["er"]["iou"], s["overall"]["score"]       # no instance class: official overall 0
    (1.0, 0.0)
    """
    if rules not in RULES:
        raise ValueError(f"rules must be one of {RULES}, got {rules!r}")
    truth_paths = [truth] if isinstance(truth, (str, os.PathLike)) else list(truth)
    swapped = "; ".join(filter(None, (swap_check(submission, p) for p in truth_paths)))
    truths = [t for p in truth_paths for t in find_truth_labels(p)]
    if len(truth_paths) > 1:
        keys = [t.key for t in truths]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ScoringInputError(f"the same crop and label in more than one truth store: {', '.join(twice[:5])}")
    if only is not None:
        keep = {(int(c), str(lab)) for c, lab in only}
        truths = [t for t in truths if (t.crop, t.label) in keep]
        if not truths:
            raise ScoringInputError(f"{', '.join(map(str, truth_paths))}: none of the {len(only)} requested crop "
                                    "labels is in the truth")
    masks = {(t.crop, t.label): t for t in truths if t.label.endswith("_mask")}
    notes: list[str] = []
    warns: list[Warn] = [make_warning("*", "*", "looks_swapped", swapped)] if swapped else []
    wanted = set(labels) if labels is not None else None
    if wanted is not None:
        absent = sorted(wanted - {t.label for t in truths})
        if absent:
            notes.append(f"requested labels not in the truth: {', '.join(absent)}")
        truths = [t for t in truths if t.label in wanted]
        if not truths:
            raise ScoringInputError(f"{truth}: none of the labels {sorted(wanted)} is in the truth")
    grids = read_manifest_grids(test_manifest) if test_manifest else {}
    if grids:
        warns += _manifest_warnings(truths, grids, rules, wanted)
    records, missing = [], []
    with open_submission(submission, rules) as sub:
        read = sub.where  # a folder holding a zip is read from that zip (official rules)
        warns += newer_zarr_warnings(submission, read) if Path(read) != Path(submission) else []
        dirs, crop_warns = _crop_dirs(sub, {t.crop for t in truths}, rules)
        warns += crop_warns
        if only is None and wanted is None:  # a submitted crop the truth lacks (the manifest's are named above)
            scored = {t.crop for t in truths} | {c for c, _ in grids}
            for n in sorted({int(m.group(1)) for d in sub.crop_dirs() if (m := CROP_RE.match(d))} - scored):
                warns.append(make_warning(n, "*", "no_truth", "in the submission but not in the truth: not scored "
                                          "(the score covers the other crops only)"))
        for t in truths:
            target = _target(t, grids, rules)
            truth_arr = np.asarray(t.array[...])
            kind = official_kind(t.label) if rules == "official" else strict_kind(t.label)
            warns += unknown_truth_warnings(t.crop, t.label, truth_arr, kind, rules)
            crop_dir = dirs.get(t.crop)
            node = sub.node_kind(crop_dir, t.label) if crop_dir else None
            if node != "array":
                missing.append(t.key)
                if node == "group":
                    warns.append(make_warning(t.crop, t.label, "label_is_group",
                                              "written as a group (e.g. multiscale with s0), not a plain array: "
                                              "scored as missing, as the official scorer does"))
                else:
                    why = "its crop folder is not in the submission" if crop_dir is None else "not in its crop folder"
                    if crop_dir is not None:  # a misspelt name is the likely cause: say which one
                        known = {u.label for u in truths if u.crop == t.crop}
                        extra = sorted(set(sub.labels(crop_dir)) - known)
                        near = difflib.get_close_matches(t.label, extra, n=1, cutoff=0.5) or [
                            e for e in extra if e.lower().startswith(t.label.lower())][:1]
                        if near:
                            why += f"; it holds '{near[0]}', which is no label of the truth: misspelt?"
                    warns.append(make_warning(t.crop, t.label, "missing_label",
                                              f"missing from the submission ({why}): every truth voxel/object "
                                              "counts as a miss; an empty array would score better"))
                records.append(_missing(t, truth_arr, target, rules))
                continue
            where = f"{submission}:{crop_dir}/{t.label}"
            mask_label = masks.get((t.crop, f"{t.label}_mask")) if rules == "official" else None
            mask = None if mask_label is None else np.asarray(mask_label.array[...])
            if mask is not None:  # the official scorer multiplies truth and prediction by <label>_mask
                truth_arr = truth_arr * mask
            record, w, n = _score_present(t, truth_arr, target, sub.array(crop_dir, t.label), rules, where, mask)
            records.append(record)
            warns += w
            notes += n
    per_label, overall = aggregate_official(records) if rules == "official" else aggregate_scores(records)
    warns += skipped_class_warnings(records, per_label, rules)
    if echo_warnings:
        for w in warns:
            print(f"warning: {format_warning(w)}", file=sys.stderr)
    return {"submission": str(submission), "submission_read": read, "truth": ", ".join(map(str, truth_paths)),
            "rules": rules,
            "test_manifest": str(test_manifest) if test_manifest else None, "overall": overall,
            "labels": per_label, "crops": records, "missing": missing, "warnings": warns, "notes": notes}


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m auto3dseg.evaluation.score",
        description="Score a CellMap submission against local ground truth (semantic IoU, instance F1 + "
                    "normalised Hausdorff, overall sqrt(instance * semantic)), by the official scorer's rules "
                    "or stricter ones. Warnings for common traps go to stderr and the report.",
        epilog="Exit status: 0 when scored, 2 when a store cannot be read (the message names it).")
    ap.add_argument("--submission", required=True,
                    help="the submission: a submission.zarr folder, a folder holding one, or a .zip holding "
                         "it (at the zip's root or under submission.zarr/); arrays crop<N>/<label> with "
                         "voxel_size and translation attrs (z, y, x, nm). A folder holding a zip is read from "
                         "that zip, even beside a submission.zarr, as the official scorer does (--rules strict "
                         "reads its submission.zarr); to score the zarr give it: --submission .../submission.zarr")
    ap.add_argument("--truth", required=True,
                    help="the ground truth: a flat store crop<N>/<label> (e.g. the synthetic data's "
                         "test_truth.zarr), a CellMap <dataset>.zarr, or a folder of CellMap datasets")
    ap.add_argument("--rules", choices=RULES, default="official",
                    help="'official' (default): the challenge scorer's figures (per-class pooling, its "
                         "resampling and too-many-objects skip, truth 255 as foreground); 'strict': the "
                         "project's stricter rules (per-crop mean, too many objects = 0, missing attributes "
                         "refused)")
    ap.add_argument("--test_manifest", default=None, metavar="CSV",
                    help="the toolbox's test_crop_manifest.csv: target grid of each (crop, label) and the labels "
                         "to expect; default: the truth arrays' own voxel_size/translation/shape")
    ap.add_argument("--out", default=None,
                    help="write the scores as JSON here and a Markdown report beside it (same name, .md); "
                         "both written atomically. Default: print only")
    ap.add_argument("--labels", nargs="+", default=None, metavar="LABEL",
                    help="score only these labels (e.g. --labels mito er); default: every truth label")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (0 scored, 2 unreadable input)."""
    args = _parser().parse_args(argv)
    sub, truth = Path(args.submission).resolve(), Path(args.truth).resolve()
    if sub == truth or truth in sub.parents or sub in truth.parents:
        print(f"error: --submission {args.submission} and --truth {args.truth} are the same store: scored against "
              "itself a store is 1.0; give the ground truth as --truth", file=sys.stderr)
        return 2
    if sub.is_dir() and truth.is_dir() and (linked := truth_inside(truth, sub)):
        print(f"error: --truth {args.truth}: {linked} links into --submission {args.submission}: scored against "
              "itself a store is 1.0; give the ground truth as --truth", file=sys.stderr)
        return 2
    try:
        if args.out:
            check_output_file(args.out, inputs=(args.truth, args.submission))  # before scoring: it can take long
    except OSError as exc:
        print(f"error: {os_error_message(exc, '--out')}", file=sys.stderr)
        return 2
    try:
        scores = score_submission(args.submission, args.truth, args.labels, rules=args.rules,
                                  test_manifest=args.test_manifest)
    except ScoringInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_scores_markdown(scores), end="")
    if args.out:
        try:
            out = write_scores(scores, check_output_file(args.out, inputs=(args.truth, args.submission)))
        except OSError as exc:
            print(f"error: {os_error_message(exc, '--out')}", file=sys.stderr)
            return 2
        print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
