"""Local scorer for NeurIPS 2022 CellSeg predictions: the challenge's instance F1.

Reproduces the figures of the official ``baseline/compute_metric.py`` (JunMa11/NeurIPS-CellSeg)
with a sparse, vectorised implementation. Per image (2-D instance masks, 0 = background):

* Dice of the foregrounds (``> 0``) on the raw arrays (1.0 when both are empty).
* Below 25e6 pixels both masks are cast to int32 (as the official does), instances touching
  the 2-pixel image frame are removed from each, ids renumbered 1..N (counts = largest id).
* One-to-one Hungarian matching, a true positive at IoU >= 0.5. The official cost
  ``-(iou >= th) - iou / (2 n_min)`` first maximises the number of pairs at or above the
  threshold (the IoU term sums to < 1), so TP is the size of a maximum bipartite matching of
  those pairs, solved here on the sparse overlap graph. No predicted instance: TP = FP = FN = 0.
* ``precision = TP / pred_num``, ``recall = TP / true_num``, F1 their harmonic mean, 0 when
  TP = 0 (also when both are empty); rounded to 4 decimals before the mean.
* From 25e6 pixels on: zero-padded to multiples of 2000 and scored in 2000 x 2000 tiles
  (border instances removed per tile), TP/FP/FN and counts summed. Official quirks kept, with a
  warning when they change something: the prediction is padded in the truth's dtype (its ids
  wrap), and under NumPy >= 2 the per-tile counts are summed in that dtype (they wrap too).

Folders: unlike the official script (which iterates over the predictions), a truth image
without prediction (``missing``) or that cannot be scored (``failed``) counts as F1 = 0 in
``mean_f1``; ``mean_f1_official`` leaves them out as the official does.

Command line::

    python -m auto3dseg.evaluation.cellseg --gt labels/ --pred preds/ --out scores.json
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from tqdm import tqdm

from auto3dseg.evaluation.cellseg_inputs import (MIN_CELLS_FOR_BINARY, NotInstanceMasks, binary_mask_id,
                                                 image_like_problem, wrapped_uint8_problem)
from auto3dseg.evaluation.cellseg_metrics import match_instances, remove_border_instances, score_image
from converters.outputs import atomic_write_text

__all__ = ["format_cellseg_markdown", "main", "match_instances", "remove_border_instances", "score_folders",
           "score_image", "write_cellseg_scores"]

ROW_KEYS = ("name", "true_num", "pred_num", "tp", "fp", "fn", "precision", "recall", "dice", "f1")
RULES = ("NeurIPS 2022 CellSeg F1 as in the official baseline/compute_metric.py: instances touching the "
         "2-px image frame removed from truth and prediction, one-to-one Hungarian matching, TP at "
         "IoU >= threshold, F1 = 0 when TP = 0; images >= 25e6 px scored in 2000x2000 tiles; per-image F1 "
         "rounded to 4 decimals. mean_f1 counts missing/failed images as 0, mean_f1_official leaves them out.")


def _read_mask(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return np.asarray(tifffile.imread(path))
        from skimage import io as skio

        return np.asarray(skio.imread(path))
    except Exception as exc:  # any reader failure becomes a per-image error
        raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def _listing(folder: Path, suffix: str) -> dict[str, Path]:
    return {p.name[: len(p.name) - len(suffix)]: p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(suffix)}


def _refuse_images(pred_dir: Path, suffix: str, images: list[tuple[str, str]], n: int) -> None:
    """Raise :class:`NotInstanceMasks` when most of the ``n`` predictions compared look like raw images
    (a folder of images given as --pred): no score is better than an F1 of 0 without a hint."""
    if not images or 2 * len(images) <= n:
        return
    shown = ", ".join(name for name, _ in images[:3]) + (", ..." if len(images) > 3 else "")
    raise NotInstanceMasks(f"{len(images)} of the {n} predictions in {pred_dir} ({shown}) look like raw images, "
                           f"not instance masks ({images[0][0]}: {images[0][1]}). Give --pred the folder of "
                           f"predicted instance masks (0 = background, one id per cell) named <stem>{suffix}, e.g. "
                           "the submission folder written by the prediction, not the images folder")


def _finite(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def score_folders(gt_dir: str | os.PathLike, pred_dir: str | os.PathLike, *, gt_suffix: str = "_label.tiff",
                  pred_suffix: str = "_label.tiff", iou_threshold: float = 0.5, progress: bool = True) -> dict:
    """Score every truth ``<stem><gt_suffix>`` against ``<stem><pred_suffix>``.

    Parameters
    ----------
    gt_dir, pred_dir : path
        Folders of truth and predicted 2-D instance masks (TIFF, or what skimage reads).
    gt_suffix, pred_suffix : str
        File name endings; the part before them is the image stem.
    iou_threshold : float
        IoU from which a matched pair is a true positive.
    progress : bool
        Show a tqdm progress bar over the images.

    Returns
    -------
    dict
        JSON-ready: ``mean_f1`` and ``median_f1`` (missing/failed images count 0),
        ``mean_f1_official`` (scored images only, None if none), ``n_images``, ``n_scored``,
        ``missing`` (truth stems without prediction), ``extra`` (prediction stems without
        truth), ``failed`` (``{name, error}``), ``per_image`` (rows rounded to 4 decimals
        as in the official CSV), ``iou_threshold``, ``rules``, ``warnings``.

    Raises
    ------
    FileNotFoundError
        A folder is missing or holds no truth file.
    TruthAsPrediction
        A prediction file is the truth file itself (a link to it).
    NotInstanceMasks
        Most predictions look like raw images (colour, fractional values, grey levels that are
        no blobs); fewer such files fail one by one.

    Examples
    --------
    >>> score_folders("/no/such/dir", "/tmp")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: truth folder /no/such/dir does not exist
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "truth"), (pred_dir, "prediction")):
        if folder.name.endswith((".zarr", ".zip")) or (folder.is_dir() and (folder / ".zgroup").is_file()):
            raise FileNotFoundError(f"{what} {folder} is a Zarr store or zip (the CellMap layout, crop<N>/<class>), "
                                    "not a folder of 2-D cell masks: score it with python -m "
                                    "auto3dseg.evaluation.score --submission SUBMISSION --truth TRUTH")
        if folder.is_file():
            raise FileNotFoundError(f"{what} folder {folder} is a file: give the folder that holds it "
                                    f"({folder.parent})")
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist")
    gts, preds = _listing(gt_dir, gt_suffix), _listing(pred_dir, pred_suffix)
    if not gts:
        raise FileNotFoundError(f"no truth file ending in {gt_suffix!r} in {gt_dir}")
    if not preds:  # every image would score 0: a wrong folder (raw images, another naming), not a result
        others = sorted(p.name for p in pred_dir.iterdir() if p.is_file())
        raise FileNotFoundError(f"no prediction file ending in {pred_suffix!r} in {pred_dir}"
                                + (f" (it holds {len(others)} other file(s), e.g. {', '.join(others[:3])}: raw "
                                   "images, or another naming?)" if others else " (it is empty)")
                                + f"; give the folder of <stem>{pred_suffix} instance masks (--pred)")
    if not set(gts) & set(preds):  # every image would score 0: another folder's truth, not a result
        raise FileNotFoundError(f"no truth file in {gt_dir} matches a prediction in {pred_dir} (truth e.g. "
                                f"{', '.join(sorted(gts)[:3])}; predictions e.g. {', '.join(sorted(preds)[:3])}): "
                                "give the truth of these images (--gt; --truth in run_auto3dseg.py), named <stem>" + gt_suffix)
    missing, extra = sorted(set(gts) - set(preds)), sorted(set(preds) - set(gts))
    _refuse_truth_as_prediction(gts, preds, pred_dir)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    warnings: list[str] = []
    images: list[tuple[str, str]] = []  # predictions that look like raw images, and why
    binary: list[str] = []  # predictions holding a single id for many true cells
    common = sorted(set(gts) & set(preds))
    for stem in tqdm(common, disable=not progress, desc="CellSeg F1", unit="image"):
        name = preds[stem].name
        try:
            pred = _read_mask(preds[stem])
            if looks := image_like_problem(pred):
                images.append((name, looks))
                raise ValueError(f"not an instance mask, a raw image? {looks}")
            s = score_image(_read_mask(gts[stem]), pred, iou_threshold=iou_threshold)
            if (one := binary_mask_id(pred)) is not None and s["true_num"] >= MIN_CELLS_FOR_BINARY:
                binary.append(name)
                warnings.append(f"{name}: every foreground pixel holds the one id {one} while the truth has "
                                f"{s['true_num']} cells: a binary (semantic) mask scores as one cell; if it is one, give "
                                "one id per cell (e.g. skimage.measure.label(mask), or run_auto3dseg.py --mode submit)")
            if wrapped := wrapped_uint8_problem(pred):
                warnings.append(f"{name}: {wrapped}")
        except Exception as exc:  # noqa: BLE001 - reported per image, never aborts the batch
            failed.append({"name": name, "error": f"{name} (truth {gts[stem].name}): {exc}"})
            continue
        rows.append({"name": name, **{k: s[k] for k in ROW_KEYS[1:6]},
                     **{k: _finite(np.round(s[k], 4)) for k in ROW_KEYS[6:]}})  # official rounding
        warnings += [f"{name}: {w}" for w in s["warnings"]]
    _refuse_images(pred_dir, pred_suffix, images, len(common))
    f1s = [math.nan if r["f1"] is None else r["f1"] for r in rows]
    all_f1 = f1s + [0.0] * (len(missing) + len(failed))
    if len(binary) > 1:
        warnings.append(f"{len(binary)} of {len(common)} prediction(s) hold a single id for many true cells: "
                        "binary masks, not instance masks?")
    if missing:
        lower = {e.lower(): e for e in extra}
        close = {m: difflib.get_close_matches(m.lower(), list(lower), n=1, cutoff=0.8) for m in missing}
        named = "; ".join(f"{m} (is {lower[c[0]]} it, misnamed?)" for m, c in close.items() if c)
        warnings.append(f"{len(missing)} truth image(s) without prediction count as F1 = 0 in mean_f1"
                        + (f": {named}" if named else ""))
    if extra:  # as the official scorer, which goes by the truth files: said, so that a lost truth file shows
        shown = ", ".join(preds[e].name for e in extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        warnings.append(f"{len(extra)} prediction(s) have no truth file in {gt_dir} and are not scored: {shown}")
    if failed:
        why = "; ".join(f["error"] for f in failed[:2]) + (f"; and {len(failed) - 2} more" if len(failed) > 2 else "")
        warnings.append(f"{len(failed)} image(s) failed and count as F1 = 0 in mean_f1 ({why})")
    return {"mean_f1": _finite(np.mean(all_f1) if all_f1 else None),
            "median_f1": _finite(np.median(all_f1) if all_f1 else None),
            "mean_f1_official": _finite(np.mean(f1s) if f1s else None), "n_images": len(gts),
            "n_scored": len(rows), "missing": missing, "extra": extra, "failed": failed, "per_image": rows,
            "iou_threshold": float(iou_threshold), "rules": RULES, "warnings": warnings}


class TruthAsPrediction(ValueError):
    """A prediction file is one of the truth files (a symlink or hard link to it)."""


def _refuse_truth_as_prediction(gts: dict[str, Path], preds: dict[str, Path], pred_dir: Path) -> None:
    """Refuse predictions that are the truth file itself: a folder of links to the truth scores
    1.0 without a word (the same-folder check of the CLI sees only folders)."""
    same = [s for s in sorted(set(gts) & set(preds)) if _same_file(gts[s], preds[s])]
    if same:
        raise TruthAsPrediction(
            f"{len(same)} prediction(s) in {pred_dir} are the truth files themselves (links to them: e.g. "
            f"{preds[same[0]].name} and {gts[same[0]]} are one file): scored against itself it is 1.0; give the "
            "ground truth and the predictions as files of their own")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _fmt(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def format_cellseg_markdown(result: dict) -> str:
    """Markdown report of a :func:`score_folders` result.

    Examples
    --------
    >>> r = {"mean_f1": 0.5, "median_f1": 0.5, "mean_f1_official": 1.0, "n_images": 2,
    ...      "missing": ["b"], "extra": [], "failed": [], "per_image": [], "warnings": []}
    >>> format_cellseg_markdown(r).splitlines()[0]
    '# NeurIPS 2022 CellSeg F1'
    """
    lines = ["# NeurIPS 2022 CellSeg F1", "",
             "| mean F1 | median F1 | mean F1 (official) | images | scored | missing | failed |",
             "|---|---|---|---|---|---|---|",
             (f"| {_fmt(result['mean_f1'])} | {_fmt(result['median_f1'])} | {_fmt(result['mean_f1_official'])} "
              f"| {result['n_images']} | {len(result['per_image'])} | {len(result['missing'])} "
              f"| {len(result['failed'])} |"), "", result.get("rules", ""), ""]
    if result["per_image"]:
        lines += ["| " + " | ".join(ROW_KEYS) + " |", "|" + "---|" * len(ROW_KEYS)]
        lines += ["| " + " | ".join(_fmt(r[k]) for k in ROW_KEYS) + " |" for r in result["per_image"]] + [""]
    for title, items in (("Missing predictions (F1 = 0)", result["missing"]),
                         ("Predictions without truth (not scored)", result["extra"]),
                         ("Failed (F1 = 0)", [f["error"] for f in result["failed"]]),
                         ("Warnings", result["warnings"])):
        if items:
            lines += [f"## {title}", ""] + [f"- {x}" for x in items] + [""]
    return "\n".join(lines)


def write_cellseg_scores(result: dict, out_json: str | os.PathLike) -> None:
    """Write ``out_json``, a per-image CSV (same stem, ``.csv``) and a Markdown report (``.md``).

    Each file is written under a temporary name, then moved in place with ``os.replace``.

    Parameters
    ----------
    result : dict
        A :func:`score_folders` result.
    out_json : path
        The JSON file; its folder is created if needed.

    Examples
    --------
    >>> import tempfile
    >>> r = {"mean_f1": 0.0, "median_f1": 0.0, "mean_f1_official": None, "n_images": 1,
    ...      "missing": ["a"], "extra": [], "failed": [], "per_image": [], "warnings": []}
    >>> with tempfile.TemporaryDirectory() as d:
    ...     write_cellseg_scores(r, Path(d) / "s.json")
    ...     sorted(p.name for p in Path(d).iterdir())
    ['s.csv', 's.json', 's.md']
    """
    out = Path(out_json)
    if out.suffix.lower() in (".csv", ".md"):
        raise ValueError(f"{out}: give the JSON path; the .csv and .md files are written beside it")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROW_KEYS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in ROW_KEYS} for r in result["per_image"])
    atomic_write_text(out.with_suffix(".csv"), buf.getvalue())
    atomic_write_text(out.with_suffix(".md"), format_cellseg_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``--help`` lists the flags).

    Returns
    -------
    int
        0 when scored, 2 for bad input (a folder missing, no truth file, predictions that are mostly raw
        images rather than instance masks, ``--iou`` outside (0, 1]).

    Examples
    --------
    >>> main(["--gt", "/no/such/dir", "--pred", ".", "--out", "scores.json"])
    2
    """
    parser = argparse.ArgumentParser(
        prog="python -m auto3dseg.evaluation.cellseg",
        description="Score NeurIPS 2022 CellSeg instance predictions with the official F1 rules (cells on "
                    "the 2-px border removed, Hungarian matching, 2000x2000 tiles from 25e6 px). Missing "
                    "or unreadable predictions score 0 in mean_f1; mean_f1_official leaves them out.")
    parser.add_argument("--gt", required=True, help="folder of truth masks <stem><gt_suffix>")
    parser.add_argument("--pred", required=True, help="folder of predicted masks <stem><pred_suffix>, same H x W")
    parser.add_argument("--out", required=True, help="JSON file to write; a per-image .csv and a .md go beside it")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU from which a match counts (default 0.5)")
    parser.add_argument("--gt_suffix", default="_label.tiff", help="truth file ending (default _label.tiff)")
    parser.add_argument("--pred_suffix", default="_label.tiff", help="prediction file ending (default _label.tiff)")
    parser.add_argument("--no_progress", action="store_true", help="do not show the progress bar")
    args = parser.parse_args(argv)
    if Path(args.gt).resolve() == Path(args.pred).resolve():
        print(f"error: --gt and --pred are the same folder ({args.gt}): scored against itself it is 1.0; give the "
              "ground truth as --gt", file=sys.stderr)
        return 2
    if not 0 < args.iou <= 1:
        print(f"error: --iou must be in (0, 1], got {args.iou}", file=sys.stderr)
        return 2
    from converters.outputs import check_output_file, os_error_message

    try:
        check_output_file(args.out, inputs=(args.gt, args.pred))  # before scoring, which can take long
    except OSError as exc:
        print(f"error: {os_error_message(exc, '--out')}", file=sys.stderr)
        return 2
    try:
        result = score_folders(args.gt, args.pred, gt_suffix=args.gt_suffix, pred_suffix=args.pred_suffix,
                               iou_threshold=args.iou, progress=not args.no_progress)
    except (NotInstanceMasks, TruthAsPrediction) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}. Pass --gt and --pred folders of <stem>_label.tiff masks, or set --gt_suffix/"
              "--pred_suffix to the file endings you use.", file=sys.stderr)
        return 2
    try:
        write_cellseg_scores(result, check_output_file(args.out, inputs=(args.gt, args.pred)))
    except OSError as exc:

        print(f"error: {os_error_message(exc, '--out')}", file=sys.stderr)
        return 2
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    out = Path(args.out)
    print(f"mean F1 {_fmt(result['mean_f1'])} (median {_fmt(result['median_f1'])}; official, leaving out "
          f"missing/failed: {_fmt(result['mean_f1_official'])}) over {result['n_images']} image(s), "
          f"{len(result['missing'])} missing, {len(result['failed'])} failed")
    print(f"wrote {out}, {out.with_suffix('.csv')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
