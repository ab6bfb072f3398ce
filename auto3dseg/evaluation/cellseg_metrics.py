"""The CellSeg F1 of one image pair, as the official ``baseline/compute_metric.py`` computes it
(see :mod:`auto3dseg.evaluation.cellseg` for the rules): border removal, sparse one-to-one
matching at an IoU threshold, tiling of very large images."""


import fastremap
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

__all__ = ["match_instances", "remove_border_instances", "score_image"]

TILED_PIXELS = 25_000_000  # images with at least this many pixels are scored in tiles
TILE = 2000
BORDER = 2



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


