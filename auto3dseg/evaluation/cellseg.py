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
import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fastremap
import numpy as np
import tifffile
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from tqdm import tqdm

__all__ = ["format_cellseg_markdown", "main", "match_instances", "remove_border_instances", "score_folders",
           "score_image", "write_cellseg_scores"]

TILED_PIXELS = 25_000_000  # images with at least this many pixels are scored in tiles
TILE = 2000
BORDER = 2
ROW_KEYS = ("name", "true_num", "pred_num", "tp", "fp", "fn", "precision", "recall", "dice", "f1")
RULES = ("NeurIPS 2022 CellSeg F1 as in the official baseline/compute_metric.py: instances touching the "
         "2-px image frame removed from truth and prediction, one-to-one Hungarian matching, TP at "
         "IoU >= threshold, F1 = 0 when TP = 0; images >= 25e6 px scored in 2000x2000 tiles; per-image F1 "
         "rounded to 4 decimals. mean_f1 counts missing/failed images as 0, mean_f1_official leaves them out.")


def remove_border_instances(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Remove instances touching the ``width``-pixel frame; return a renumbered copy.

    Kept ids are renumbered 1..N in increasing order of their old id. As in the official
    code, an image with no interior (a side <= ``2 * width``) keeps only its smallest value.

    Parameters
    ----------
    labels : ndarray
        2-D instance mask of non-negative integers (or bool), 0 = background.
    width : int
        Frame width in pixels; 0 removes nothing (only renumbers).

    Returns
    -------
    ndarray
        Same shape and dtype (uint8 for bool), ids 1..N.

    Examples
    --------
    >>> m = np.zeros((8, 8), np.uint16); m[1, 4] = 7; m[3:5, 3:5] = 9
    >>> remove_border_instances(m)[3:5, 3:5].tolist(), int(remove_border_instances(m).max())
    ([[1, 1], [1, 1]], 1)
    """
    arr = np.asarray(labels)
    arr = arr.astype(np.uint8) if arr.dtype == bool else arr
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D instance mask, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"instance ids must be integers, got dtype {arr.dtype}")
    if arr.size and fastremap.minmax(arr)[0] < 0:
        raise ValueError("instance mask has negative ids (the official relabelling rejects them)")
    h, w = arr.shape
    drop = np.empty(0, dtype=arr.dtype)
    if width > 0 and arr.size:
        if h > 2 * width and w > 2 * width:
            frame = np.concatenate([arr[:width].ravel(), arr[h - width :].ravel(),
                                    arr[:, :width].ravel(), arr[:, w - width :].ravel()])
            drop = fastremap.unique(frame)
            drop = drop[drop != 0]
        else:  # no interior: the official drops every frame value but the smallest
            drop = fastremap.unique(np.ascontiguousarray(arr))[1:]
    arr = np.ascontiguousarray(arr)
    ids = fastremap.unique(arr) if arr.size else drop
    keep = ids[(ids != 0) & ~np.isin(ids, drop)]
    if keep.size == 0:
        return np.zeros_like(arr)
    if drop.size == 0 and int(keep[-1]) == keep.size:
        return arr.copy()
    mapping = {int(k): i for i, k in enumerate(keep.tolist(), 1)}
    mapping.update({int(d): 0 for d in drop.tolist()})
    return fastremap.remap(arr, mapping, preserve_missing_labels=True, in_place=False)


def match_instances(gt: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of two renumbered masks.

    The counts are the largest ids, as in the official code (so pass masks numbered 1..N);
    a prediction with no instance gives ``(0, 0, 0)``.

    Parameters
    ----------
    gt, pred : ndarray
        Instance masks of the same shape, non-negative integer ids, 0 = background.
    iou_threshold : float
        A matched pair is a true positive when its IoU is at least this.

    Returns
    -------
    tuple of int
        ``(tp, fp, fn)`` with ``fp = pred_num - tp`` and ``fn = true_num - tp``.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]]); pred = np.array([[1, 1, 0, 0, 2]])
    >>> match_instances(gt, pred), match_instances(gt, pred, iou_threshold=0.6)
    ((2, 0, 0), (1, 1, 1))
    """
    g, p = np.asarray(gt).ravel(), np.asarray(pred).ravel()
    if np.shape(gt) != np.shape(pred):
        raise ValueError(f"truth shape {np.shape(gt)} differs from prediction shape {np.shape(pred)}")
    (gmin, ng), (pmin, npr) = (fastremap.minmax(a) if a.size else (0, 0) for a in (g, p))
    ng, npr, th = int(ng), int(npr), float(iou_threshold)
    if min(gmin, pmin) < 0:
        raise ValueError("instance masks must not have negative ids")
    if npr <= 0:
        return 0, 0, 0
    # th <= 0: every pair qualifies, even at IoU 0, so the assignment fills min(ng, npr)
    tp = 0 if ng <= 0 else min(ng, npr) if th <= 0 else _matched_pairs(g, p, th)
    return tp, npr - tp, ng - tp


def _matched_pairs(g: np.ndarray, p: np.ndarray, th: float) -> int:
    """Size of a maximum matching of the (truth, prediction) pairs with IoU >= ``th`` > 0."""
    if max(fastremap.minmax(g)[1], fastremap.minmax(p)[1]) > g.size:  # sparse big ids: keep bincount small
        g, p = fastremap.renumber(g, in_place=False)[0], fastremap.renumber(p, in_place=False)[0]
    ng, npr = int(g.max()), int(p.max())
    size_g = np.bincount(g.astype(np.intp, copy=False), minlength=ng + 1)
    size_p = np.bincount(p.astype(np.intp, copy=False), minlength=npr + 1)
    both = (g != 0) & (p != 0)  # only overlapping pairs can reach IoU >= th > 0
    keys, inter = np.unique(g[both].astype(np.int64) * (npr + 1) + p[both].astype(np.int64), return_counts=True)
    gi, pi = np.divmod(keys, npr + 1)
    iou = inter / (size_g[gi] + size_p[pi] - inter)  # float64, the official's division
    gi, pi = gi[iou >= th], pi[iou >= th]
    if gi.size == np.unique(gi).size and pi.size == np.unique(pi).size:
        return int(gi.size)  # at most one candidate per instance (always so for th > 0.5)
    graph = csr_matrix((np.ones(gi.size, np.int8), (gi - 1, pi - 1)), shape=(ng, npr))
    return int(np.count_nonzero(maximum_bipartite_matching(graph, perm_type="column") >= 0))


def _ids_change(a: np.ndarray, dtype: np.dtype) -> bool:
    """Whether the unsafe cast ``a.astype(dtype)`` (the official's) changes any value."""
    if a.dtype == dtype or a.dtype == bool:
        return False
    if a.dtype.kind in "iu":
        lo, hi = fastremap.minmax(a)
        return bool(lo < np.iinfo(dtype).min or hi > np.iinfo(dtype).max)
    return not np.array_equal(a.astype(dtype), a)


def _prf(tp: int, true_num: int, pred_num: int) -> tuple[float, float, float]:
    """Precision, recall, F1 with the official float64 arithmetic (0 when TP = 0)."""
    if tp == 0:
        return 0.0, 0.0, 0.0
    with np.errstate(all="ignore"):
        prec, rec = np.float64(tp) / np.float64(pred_num), np.float64(tp) / np.float64(true_num)
        return float(prec), float(rec), float(2 * (prec * rec) / (prec + rec))


def _official_add(acc: tuple[np.dtype | None, int], dtype: np.dtype, n: int) -> tuple[np.dtype, int]:
    """``acc + n`` as the official sums the per-tile counts (``np.max`` of each tile) under NumPy 2.

    Each term has the output dtype of skimage's ``relabel_sequential`` (applied twice) on a
    tile of ``dtype``; NumPy 2 keeps the sum in the promoted dtype of the terms, so it wraps.
    """
    for _ in range(2):
        need = np.min_scalar_type(n)
        dtype = need if dtype.itemsize < need.itemsize or n >= np.iinfo(dtype).max else dtype
    acc_dt = dtype if acc[0] is None else np.promote_types(acc[0], dtype)
    bits = 8 * acc_dt.itemsize
    value = (acc[1] + n) % (1 << bits)
    return acc_dt, value - (1 << bits) if acc_dt.kind == "i" and value >> (bits - 1) else value


def _score_tiles(gt: np.ndarray, pred: np.ndarray, th: float, width: int, pad_dtype: np.dtype) -> dict:
    """Tile-wise scoring; ``official`` holds the counts summed as the official does under NumPy 2."""
    h, w = gt.shape
    tp = fp = fn = 0
    sums = {"true_num": 0, "pred_num": 0}
    acc: dict[str, tuple[np.dtype | None, int]] = {"true_num": (None, 0), "pred_num": (None, 0)}
    for i in range(0, h, TILE):
        for j in range(0, w, TILE):
            tiles = []
            for what, src in (("truth", gt), ("prediction", pred)):
                tile = np.zeros((TILE, TILE), dtype=pad_dtype)
                tile[: min(TILE, h - i), : min(TILE, w - j)] = src[i : i + TILE, j : j + TILE]  # unsafe cast
                if pad_dtype.kind == "i" and fastremap.minmax(tile)[0] < 0:
                    raise ValueError(f"{what} has negative ids once padded in the truth dtype {pad_dtype} (ids "
                                     "beyond its range wrap); the official script fails on this image: use ids "
                                     "1..N that fit the truth dtype")
                tiles.append(remove_border_instances(tile, width))
            t, f, n = match_instances(tiles[0], tiles[1], th)
            tp, fp, fn = tp + t, fp + f, fn + n
            for key, tile in zip(sums, tiles, strict=True):
                sums[key] += int(tile.max())
                acc[key] = _official_add(acc[key], pad_dtype, int(tile.max()))
    return {"tp": tp, "fp": fp, "fn": fn, **sums, "official": (acc["true_num"][1], acc["pred_num"][1])}


def score_image(gt: np.ndarray, pred: np.ndarray, *, iou_threshold: float = 0.5, remove_border: bool = True) -> dict:
    """Score one prediction against its truth with the official CellSeg rules.

    Parameters
    ----------
    gt, pred : ndarray
        2-D instance masks of the same shape (0 = background).
    iou_threshold : float
        IoU from which a matched pair is a true positive.
    remove_border : bool
        Remove instances touching the 2-px frame (of the image, or of each tile for images
        >= 25e6 px). False is the official ``--count_bd_cells`` (which crashes on tiled images).

    Returns
    -------
    dict
        ``true_num, pred_num, tp, fp, fn`` (int), ``precision, recall, f1, dice`` (float,
        unrounded), ``tiled`` (bool), ``warnings`` (official quirks that changed something).

    Raises
    ------
    ValueError
        Arrays not 2-D, of different shapes, or that the official script cannot score.

    Examples
    --------
    >>> gt = np.zeros((10, 10), np.uint16); gt[3:6, 3:6] = 4
    >>> s = score_image(gt, (gt > 0).astype(np.uint8))
    >>> s["tp"], s["f1"], s["dice"], s["tiled"]
    (1, 1.0, 1.0, False)
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.ndim != 2 or pred.ndim != 2:
        raise ValueError(f"expected 2-D instance masks, got truth {gt.shape} and prediction {pred.shape} "
                         "(an RGB or multi-page image is not an instance mask)")
    if gt.shape != pred.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {gt.shape}")
    if gt.size == 0:
        raise ValueError("empty image")
    th, width = float(iou_threshold), BORDER if remove_border else 0
    g_fg, p_fg = gt > 0, pred > 0
    n_g, n_p, inter = np.count_nonzero(g_fg), np.count_nonzero(p_fg), np.count_nonzero(g_fg & p_fg)
    dice = 1.0 if n_g == 0 and n_p == 0 else (0.0 if n_g == 0 else 2 * int(inter) / int(n_g + n_p))
    warnings: list[str] = []
    tiled = gt.size >= TILED_PIXELS
    if not tiled:
        parts = []
        for what, a in (("truth", gt), ("prediction", pred)):
            a32 = a.astype(np.int32)
            if fastremap.minmax(a32)[0] < 0:
                raise ValueError(f"{what} has negative ids once cast to int32 as the official does (ids >= "
                                 "2**31 wrap); the official script fails on this image: use ids 1..N")
            if _ids_change(a, np.dtype(np.int32)):
                warnings.append(f"{what} ids ({a.dtype}) changed in the official cast to int32")
            parts.append(remove_border_instances(a32, width))
        true_num, pred_num = int(parts[0].max()), int(parts[1].max())
        tp, fp, fn = match_instances(parts[0], parts[1], th)
    else:
        if gt.dtype.kind not in "iu":
            raise ValueError(f"the official tiled scoring (>= 25e6 px) needs an integer truth, got {gt.dtype}")
        c = _score_tiles(gt, pred, th, width, gt.dtype)
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        true_num, pred_num = c["official"]
        f1_official = _prf(tp, true_num, pred_num)[2]
        if (true_num, pred_num) != (c["true_num"], c["pred_num"]):
            warnings.append(
                f"official counts wrap in the truth dtype {gt.dtype} (NumPy >= 2 sums the per-tile counts in "
                f"it): true_num {c['true_num']} -> {true_num}, pred_num {c['pred_num']} -> {pred_num}; "
                f"F1 {f1_official:.4f} (official) vs {_prf(tp, c['true_num'], c['pred_num'])[2]:.4f}")
        if _ids_change(pred, gt.dtype):
            msg = (f"prediction ids ({pred.dtype}) wrap when the official pads it in the truth dtype "
                   f"{gt.dtype}: official F1 {f1_official:.4f}")
            if pred.dtype.kind in "iu" and 0 <= fastremap.minmax(pred)[0] <= fastremap.minmax(pred)[1] < 2**63:
                a = _score_tiles(gt, pred, th, width, np.dtype(np.int64))
                msg += f", {_prf(a['tp'], a['true_num'], a['pred_num'])[2]:.4f} with the ids as written"
            warnings.append(msg)
    precision, recall, f1 = _prf(tp, true_num, pred_num)
    return {"true_num": int(true_num), "pred_num": int(pred_num), "tp": int(tp), "fp": int(fp), "fn": int(fn),
            "precision": precision, "recall": recall, "f1": f1, "dice": float(dice), "tiled": tiled,
            "warnings": warnings}


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

    Examples
    --------
    >>> score_folders("/no/such/dir", "/tmp")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: truth folder /no/such/dir does not exist
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    for folder, what in ((gt_dir, "truth"), (pred_dir, "prediction")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {folder} does not exist")
    gts, preds = _listing(gt_dir, gt_suffix), _listing(pred_dir, pred_suffix)
    if not gts:
        raise FileNotFoundError(f"no truth file ending in {gt_suffix!r} in {gt_dir}")
    missing, extra = sorted(set(gts) - set(preds)), sorted(set(preds) - set(gts))
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, str]] = []
    warnings = [] if preds else [f"no prediction file ending in {pred_suffix!r} in {pred_dir}: all score 0"]
    for stem in tqdm(sorted(set(gts) & set(preds)), disable=not progress, desc="CellSeg F1", unit="image"):
        name = preds[stem].name
        try:
            s = score_image(_read_mask(gts[stem]), _read_mask(preds[stem]), iou_threshold=iou_threshold)
        except Exception as exc:  # noqa: BLE001 - reported per image, never aborts the batch
            failed.append({"name": name, "error": f"{name} (truth {gts[stem].name}): {exc}"})
            continue
        rows.append({"name": name, **{k: s[k] for k in ROW_KEYS[1:6]},
                     **{k: _finite(np.round(s[k], 4)) for k in ROW_KEYS[6:]}})  # official rounding
        warnings += [f"{name}: {w}" for w in s["warnings"]]
    f1s = [math.nan if r["f1"] is None else r["f1"] for r in rows]
    all_f1 = f1s + [0.0] * (len(missing) + len(failed))
    if missing:
        warnings.append(f"{len(missing)} truth image(s) without prediction count as F1 = 0 in mean_f1")
    if failed:
        warnings.append(f"{len(failed)} image(s) failed and count as F1 = 0 in mean_f1")
    return {"mean_f1": _finite(np.mean(all_f1) if all_f1 else None),
            "median_f1": _finite(np.median(all_f1) if all_f1 else None),
            "mean_f1_official": _finite(np.mean(f1s) if f1s else None), "n_images": len(gts),
            "n_scored": len(rows), "missing": missing, "extra": extra, "failed": failed, "per_image": rows,
            "iou_threshold": float(iou_threshold), "rules": RULES, "warnings": warnings}


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


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    _write_atomic(out, json.dumps(result, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ROW_KEYS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in ROW_KEYS} for r in result["per_image"])
    _write_atomic(out.with_suffix(".csv"), buf.getvalue())
    _write_atomic(out.with_suffix(".md"), format_cellseg_markdown(result))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (``--help`` lists the flags).

    Returns
    -------
    int
        0 when scored, 2 for bad input (a folder missing, no truth file, ``--iou`` outside (0, 1]).

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
    if not 0 < args.iou <= 1:
        print(f"error: --iou must be in (0, 1], got {args.iou}", file=sys.stderr)
        return 2
    try:
        result = score_folders(args.gt, args.pred, gt_suffix=args.gt_suffix, pred_suffix=args.pred_suffix,
                               iou_threshold=args.iou, progress=not args.no_progress)
    except FileNotFoundError as exc:
        print(f"error: {exc}. Pass --gt and --pred folders of <stem>_label.tiff masks, or set --gt_suffix/"
              "--pred_suffix to the file endings you use.", file=sys.stderr)
        return 2
    write_cellseg_scores(result, args.out)
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
