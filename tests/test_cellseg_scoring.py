"""NeurIPS 2022 CellSeg scorer: the official F1 rules on hand-made masks and small folders.

Expected figures are worked out by hand next to each assertion (or, for random and real
masks, by the dense reference below: the official rules written out naively).
"""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy.optimize import linear_sum_assignment

from auto3dseg.evaluation import cellseg as cs

CELLS2D = Path(__file__).resolve().parents[2] / "shared" / "data" / "cells2d"


def f1_of(tp: int, true_num: int, pred_num: int) -> float:
    return 0.0 if tp == 0 else 2 * tp / (true_num + pred_num)


def canvas(shape=(40, 40), dtype=np.uint16) -> np.ndarray:
    return np.zeros(shape, dtype)


# --------------------------------------------------------------------------------------
# Dense reference of the official rules (small images only)
# --------------------------------------------------------------------------------------
def ref_drop_border(lab: np.ndarray) -> np.ndarray:
    frame = set(np.unique(lab[:2])) | set(np.unique(lab[-2:])) | set(np.unique(lab[:, :2])) | set(
        np.unique(lab[:, -2:]))
    kept = [i for i in np.unique(lab) if i != 0 and i not in frame]
    out = np.zeros(lab.shape, np.int64)
    for new, old in enumerate(kept, 1):
        out[lab == old] = new
    return out


def ref_score(gt: np.ndarray, pred: np.ndarray, th: float = 0.5) -> tuple[int, int, int]:
    """(tp, true_num, pred_num): dense overlap table, official Hungarian cost."""
    g, p = ref_drop_border(gt), ref_drop_border(pred)
    ng, npr = int(g.max()), int(p.max())
    if ng == 0 or npr == 0:
        return 0, ng, npr
    overlap = np.zeros((ng + 1, npr + 1))
    np.add.at(overlap, (g.ravel(), p.ravel()), 1)
    iou = overlap / (overlap.sum(0, keepdims=True) + overlap.sum(1, keepdims=True) - overlap)
    iou = iou[1:, 1:]
    cost = -(iou >= th).astype(float) - iou / (2 * min(ng, npr))
    rows, cols = linear_sum_assignment(cost)
    return int((iou[rows, cols] >= th).sum()), ng, npr


def test_docstring_examples():
    assert doctest.testmod(cs, optionflags=doctest.IGNORE_EXCEPTION_DETAIL).failed == 0


# --------------------------------------------------------------------------------------
# Border removal
# --------------------------------------------------------------------------------------
def test_border_frame_is_two_pixels_wide():
    m = canvas((20, 20))
    m[1, 8:11] = 3  # row 1 is in the 2-px frame: removed
    m[8:11, 18] = 4  # column 18 = W-2: removed
    m[2:4, 5:7] = 9  # row 2 is just inside: kept
    m[3:6, 12:15] = 5  # distance 3 from the top: kept
    m[17, 3:6] = 6  # row 17 = H-3: kept
    out = cs.remove_border_instances(m)
    # kept ids 5, 6, 9 renumbered in order: 5 -> 1, 6 -> 2, 9 -> 3
    assert out.dtype == m.dtype and out.max() == 3
    assert (out[3:6, 12:15] == 1).all() and (out[17, 3:6] == 2).all() and (out[2:4, 5:7] == 3).all()
    assert out[1, 8:11].sum() == 0 and out[8:11, 18].sum() == 0
    assert (m[1, 8:11] == 3).all(), "the input must not be modified"
    assert cs.remove_border_instances(m, width=0).max() == 5  # nothing removed, 5 ids renumbered


def test_border_cells_do_not_count():
    gt = canvas()
    gt[0:5, 10:15] = 1  # touches the border: not counted on either side
    gt[10:15, 10:15] = 2
    pred = canvas()
    pred[0:5, 10:15] = 7
    pred[10:15, 10:15] = 8
    pred[1:6, 25:30] = 9  # a false positive, but on the border: ignored
    s = cs.score_image(gt, pred)
    assert (s["true_num"], s["pred_num"], s["tp"], s["fp"], s["fn"]) == (1, 1, 1, 0, 0)
    assert s["f1"] == 1.0
    # Dice uses every foreground pixel: 2 * 50 / (50 + 75)
    assert s["dice"] == pytest.approx(100 / 125)


# --------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------
def test_perfect_prediction_scores_one():
    gt = canvas()
    gt[5:10, 5:10], gt[12:20, 5:9], gt[25:30, 20:35] = 1, 2, 3
    pred = np.where(gt > 0, gt + 100, 0).astype(np.int32)  # other ids, same cells
    s = cs.score_image(gt, pred)
    assert (s["tp"], s["fp"], s["fn"], s["f1"], s["dice"], s["tiled"]) == (3, 0, 0, 1.0, 1.0, False)


def test_split_cell():
    gt = canvas()
    gt[10:20, 10:20] = 1  # 100 px
    pred = canvas()
    pred[10:20, 10:16], pred[10:20, 16:20] = 1, 2  # 60 + 40 px: IoU 0.6 and 0.4
    s = cs.score_image(gt, pred)
    # TP 1, FP 1: precision 1/2, recall 1 -> F1 2/3
    assert (s["tp"], s["fp"], s["fn"]) == (1, 1, 0)
    assert s["f1"] == pytest.approx(2 / 3)
    pred[10:20, 14:16] = 3  # 40 + 20 + 40 px: best IoU 0.4 -> no TP
    assert cs.score_image(gt, pred)["f1"] == 0.0


def test_merged_cells():
    gt = canvas()
    gt[10:20, 5:15], gt[10:20, 15:25], gt[10:20, 25:35] = 1, 2, 3  # 100 px each
    pred = canvas()
    pred[10:20, 5:25] = 1  # cells 1 + 2 merged: IoU 100/200 = 0.5 with each (one may match)
    pred[10:20, 25:35] = 2  # cell 3 right
    s = cs.score_image(gt, pred)
    # TP 2 of 3 truth, 2 predicted: precision 1, recall 2/3 -> F1 0.8
    assert (s["tp"], s["fp"], s["fn"], s["true_num"], s["pred_num"]) == (2, 0, 1, 3, 2)
    assert s["f1"] == pytest.approx(0.8)
    pred[10:20, 5:35] = 1  # all three merged: IoU 1/3 -> nothing matches
    assert cs.score_image(gt, pred)["tp"] == 0


def test_iou_exactly_at_threshold():
    gt = canvas()
    gt[10:20, 10:20] = 1  # 100 px
    pred = canvas()
    pred[10:20, 10:15] = 4  # 50 px inside: IoU 50/100 = 0.5 -> TP
    assert cs.match_instances(cs.remove_border_instances(gt), cs.remove_border_instances(pred)) == (1, 0, 0)
    assert cs.score_image(gt, pred)["f1"] == 1.0
    pred[19, 14] = 0  # 49 px: IoU 0.49 -> no TP
    s = cs.score_image(gt, pred)
    assert (s["tp"], s["fp"], s["fn"], s["f1"]) == (0, 1, 1, 0.0)
    assert cs.score_image(gt, pred, iou_threshold=0.49)["tp"] == 1


def test_no_true_positive_gives_zero():
    gt = canvas()
    gt[5:10, 5:10] = 1
    pred = canvas()
    pred[20:25, 20:25] = 1
    s = cs.score_image(gt, pred)
    assert (s["tp"], s["fp"], s["fn"], s["precision"], s["recall"], s["f1"]) == (0, 1, 1, 0.0, 0.0, 0.0)
    assert s["dice"] == 0.0


def test_empty_prediction_and_empty_images():
    gt = canvas()
    gt[5:10, 5:10] = 1
    s = cs.score_image(gt, canvas())
    # the official counts nothing (not even FN) when the prediction has no instance
    assert (s["true_num"], s["pred_num"], s["tp"], s["fp"], s["fn"], s["f1"], s["dice"]) == (1, 0, 0, 0, 0, 0.0, 0.0)
    both = cs.score_image(canvas(), canvas())
    assert (both["f1"], both["dice"]) == (0.0, 1.0)  # F1 0 when TP = 0, even with nothing to find
    pred_only = cs.score_image(canvas(), gt)
    assert (pred_only["tp"], pred_only["fp"], pred_only["fn"], pred_only["f1"]) == (0, 1, 0, 0.0)


def test_non_sequential_ids():
    gt = canvas(dtype=np.uint32)
    gt[5:10, 5:10], gt[12:20, 5:9], gt[25:30, 20:35] = 5, 1000, 70000
    pred = canvas(dtype=np.int64)
    pred[5:10, 5:10], pred[12:20, 5:9] = 2**31 - 1, 3  # cell 70000 missed
    s = cs.score_image(gt, pred)
    # TP 2 of 3, no FP: F1 = 2 * 2 / (3 + 2) = 0.8
    assert (s["true_num"], s["pred_num"], s["tp"], s["fp"], s["fn"]) == (3, 2, 2, 0, 1)
    assert s["f1"] == pytest.approx(0.8) and s["warnings"] == []
    pred[5:10, 5:10] = 2**40  # the official int32 cast turns 2**40 into 0: that cell is lost
    s = cs.score_image(gt, pred)
    assert (s["pred_num"], s["tp"], s["f1"]) == (1, 1, pytest.approx(2 * 1 / (3 + 1)))
    assert len(s["warnings"]) == 1 and "int32" in s["warnings"][0]


def test_one_to_one_matching_maximises_true_positives():
    gt = canvas()
    gt[10:14, 10:20], gt[10:14, 20:24] = 1, 2  # A: 40 px, B: 16 px
    pred = canvas()
    pred[10:14, 14:24] = 1  # P1: 40 px, IoU 24/56 = 0.43 with A and 16/40 = 0.4 with B
    pred[10:14, 10:14] = 2  # P2: 16 px, IoU 16/40 = 0.4 with A
    # at IoU >= 0.3 the best pair (A, P1) is not taken: (A, P2) + (B, P1) gives 2 TPs
    assert cs.score_image(gt, pred, iou_threshold=0.3)["tp"] == 2
    assert cs.score_image(gt, pred)["tp"] == 0  # nothing reaches 0.5
    gt, pred = canvas(), canvas()
    gt[5:9, 5:9], gt[5:9, 9:13] = 1, 2  # two 16-px cells ...
    pred[5:9, 5:13] = 1  # ... merged: IoU 0.5 with both, only one may count
    gt[20:24, 5:13] = 3  # a 32-px cell ...
    pred[20:24, 5:9], pred[20:24, 9:13] = 2, 3  # ... split in halves: IoU 0.5 with both
    s = cs.score_image(gt, pred)
    # TP 2 of 3 truth and 3 predicted: F1 = 2 * 2 / (3 + 3)
    assert (s["tp"], s["true_num"], s["pred_num"], s["f1"]) == (2, 3, 3, pytest.approx(2 / 3))


def test_sparse_matching_equals_dense_hungarian():
    rng = np.random.default_rng(0)
    for _ in range(200):
        g = np.kron(rng.integers(0, 8, (6, 6)), np.ones((3, 3), int))
        p = np.roll(g, rng.integers(-2, 3), axis=1) * (rng.random(g.shape) > 0.25)
        for th in (0.2, 0.5, 0.7):  # below 0.5 an instance can have several candidates
            tp, true_num, pred_num = ref_score(g, p, th)
            s = cs.score_image(g, p, iou_threshold=th)
            assert (s["tp"], s["true_num"], s["pred_num"]) == (tp, true_num, pred_num)


def test_bad_arrays_raise_value_error():
    with pytest.raises(ValueError, match="differs"):
        cs.score_image(canvas((10, 10)), canvas((10, 12)))
    with pytest.raises(ValueError, match="2-D"):
        cs.score_image(canvas((10, 10)), np.zeros((10, 10, 3), np.uint8))


# --------------------------------------------------------------------------------------
# Tiled scoring (>= 25e6 pixels)
# --------------------------------------------------------------------------------------
def big_truth() -> np.ndarray:
    gt = np.zeros((5000, 5000), np.uint8)  # 25e6 px: tiled, padded to 6000 x 6000
    gt[100:120, 100:120] = 1  # inside tile (0, 0)
    gt[500:520, 1990:2010] = 2  # crosses the tile edge at x = 2000: removed in both tiles
    gt[1997:1999, 300:320] = 3  # touches the 2-px frame of tile (0, 0) (rows 1998-1999): removed
    gt[3000:3020, 4980:5000] = 4  # touches the image's right edge, inside tile (1, 2): kept
    gt[4500:4520, 2500:2520] = 5  # inside tile (2, 1)
    return gt


def test_tiled_scoring_removes_cells_on_tile_edges():
    gt = big_truth()
    s = cs.score_image(gt, gt.copy())
    # counted: cells 1, 4, 5 (2 crosses a tile edge, 3 touches a tile frame)
    assert s["tiled"] and (s["true_num"], s["pred_num"], s["tp"], s["fp"], s["fn"]) == (3, 3, 3, 0, 0)
    assert s["f1"] == 1.0 and s["warnings"] == []
    pred = gt.copy()
    pred[pred == 2] = 0  # the crossing cell is not scored: still F1 1
    pred[pred == 3] = 0  # nor the one on the tile frame
    pred[4500:4520, 2500:2510] = 0  # cell 5 half found: IoU 0.5 -> still a TP
    assert cs.score_image(gt, pred)["f1"] == 1.0
    pred[3000:3020, 4980:5000] = 0  # cell 4 missed: TP 2 of 3 -> F1 0.8
    s = cs.score_image(gt, pred)
    assert (s["tp"], s["true_num"], s["pred_num"], s["f1"]) == (2, 3, 2, pytest.approx(0.8))
    small = cs.score_image(gt[:4000, :4000], gt[:4000, :4000])  # 16e6 px: not tiled, border = image's
    assert not small["tiled"] and small["true_num"] == 3  # cells 1, 2, 3


def test_tiled_prediction_ids_wrap_in_truth_dtype():
    gt = big_truth()
    pred = gt.astype(np.uint16)
    s = cs.score_image(gt, pred)  # uint16 ids that fit in uint8: no change, no warning
    assert s["f1"] == 1.0 and s["warnings"] == []
    pred[pred == 5] = 256  # padded as uint8 by the official: 256 -> 0, cell 5 disappears
    s = cs.score_image(gt, pred)
    # TP 2 of 3 truth, 2 predicted: F1 0.8; with the ids as written it would be 1.0
    assert (s["tp"], s["pred_num"], s["f1"]) == (2, 2, pytest.approx(0.8))
    assert len(s["warnings"]) == 1 and "wrap" in s["warnings"][0] and "1.0000 with the ids as written" in s[
        "warnings"][0]


def test_tiled_counts_wrap_in_uint8_truth():
    gt = np.zeros((5000, 5000), np.uint8)
    # 9 tiles x 30 cells = 270 instances; ids reused across tiles (distinct cells per tile)
    for ty in range(3):
        for tx in range(3):
            for k in range(30):
                y, x = ty * 2000 + 100 + (k // 6) * 50, tx * 2000 + 100 + (k % 6) * 50
                gt[y : y + 20, x : x + 20] = k + 1
    s = cs.score_image(gt, gt)
    # the official (NumPy >= 2) sums per-tile counts in uint8: 270 -> 270 - 256 = 14,
    # so precision = recall = 270 / 14 and F1 = 270 / 14
    assert (s["tp"], s["true_num"], s["pred_num"]) == (270, 14, 14)
    assert s["f1"] == pytest.approx(270 / 14)
    assert any("true_num 270 -> 14" in w for w in s["warnings"])


# --------------------------------------------------------------------------------------
# Folders and command line
# --------------------------------------------------------------------------------------
def write(folder: Path, name: str, arr: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / f"{name}_label.tiff", arr)


@pytest.fixture()
def folders(tmp_path) -> tuple[Path, Path]:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    a = canvas()
    a[5:10, 5:10], a[20:30, 20:30] = 1, 2
    write(gt_dir, "a", a)
    write(pred_dir, "a", a)  # F1 1
    b = canvas()
    b[5:10, 5:10], b[12:20, 5:9], b[25:30, 20:35] = 1, 2, 3
    write(gt_dir, "b", b)
    write(pred_dir, "b", np.where(b == 3, 0, b))  # TP 2 of 3: F1 0.8
    write(gt_dir, "c", a)  # no prediction: missing, F1 0
    write(gt_dir, "d", a)
    write(pred_dir, "d", a[:-1])  # shape mismatch: failed, F1 0
    write(pred_dir, "e", a)  # no truth: extra, not scored
    return gt_dir, pred_dir


def test_score_folders_missing_failed_extra(folders):
    r = cs.score_folders(*folders, progress=False)
    assert r["n_images"] == 4 and r["missing"] == ["c"] and r["extra"] == ["e"]
    assert [f["name"] for f in r["failed"]] == ["d_label.tiff"]
    assert "d_label.tiff" in r["failed"][0]["error"] and "differs" in r["failed"][0]["error"]
    assert any("1 image(s) failed" in w and "differs" in w for w in r["warnings"])  # the reason said with it
    # a prediction whose truth file is lost is not scored, as officially, but said (probe S6)
    assert any("1 prediction(s) have no truth file" in w and "e_label.tiff" in w for w in r["warnings"]), r["warnings"]
    rows = {row["name"]: row for row in r["per_image"]}
    assert set(rows) == {"a_label.tiff", "b_label.tiff"}
    assert rows["b_label.tiff"]["f1"] == 0.8 and rows["b_label.tiff"]["recall"] == 0.6667  # rounded as the CSV
    assert r["mean_f1"] == pytest.approx((1 + 0.8 + 0 + 0) / 4)  # missing and failed count 0
    assert r["median_f1"] == pytest.approx(0.4)
    assert r["mean_f1_official"] == pytest.approx((1 + 0.8) / 2)  # the official leaves them out
    json.dumps(r, allow_nan=False)


def test_unreadable_and_rgb_predictions_fail_per_image(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    a = canvas()
    a[5:10, 5:10] = 1
    for name in ("x", "y", "z"):
        write(gt_dir, name, a)
    write(pred_dir, "x", np.stack([a] * 3, axis=-1).astype(np.uint8))
    (pred_dir / "y_label.tiff").write_bytes(b"not a tiff")
    write(pred_dir, "z", a)
    r = cs.score_folders(gt_dir, pred_dir, progress=False)
    errors = {f["name"]: f["error"] for f in r["failed"]}
    assert set(errors) == {"x_label.tiff", "y_label.tiff"}
    assert "2-D" in errors["x_label.tiff"] and "cannot read" in errors["y_label.tiff"]
    assert r["mean_f1"] == pytest.approx(1 / 3) and r["mean_f1_official"] == 1.0


def test_cli_writes_json_csv_md(folders, tmp_path, capsys):
    out = tmp_path / "res" / "scores.json"
    assert cs.main(["--gt", str(folders[0]), "--pred", str(folders[1]), "--out", str(out), "--no_progress"]) == 0
    data = json.loads(out.read_text())
    assert data["mean_f1"] == pytest.approx(0.45) and data["missing"] == ["c"]
    csv_lines = out.with_suffix(".csv").read_text().splitlines()
    assert csv_lines[0] == "name,true_num,pred_num,tp,fp,fn,precision,recall,dice,f1"
    assert csv_lines[2].startswith("b_label.tiff,3,2,2,0,1,1.0,0.6667,") and csv_lines[2].endswith(",0.8")
    md = out.with_suffix(".md").read_text()
    assert "| 0.4500 |" in md and "c" in md and "d_label.tiff" in md
    assert "0.4500" in capsys.readouterr().out
    assert not list(out.parent.glob(".*tmp"))


def test_cli_bad_input_exits_2(tmp_path, capsys):
    out, pred = str(tmp_path / "s.json"), tmp_path / "pred"
    pred.mkdir()
    assert cs.main(["--gt", str(tmp_path / "nope"), "--pred", str(pred), "--out", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cs.main(["--gt", str(tmp_path / "empty"), "--pred", str(pred), "--out", out]) == 2
    assert "_label.tiff" in capsys.readouterr().err
    assert not Path(out).exists()


def test_cli_help_runs_as_module():
    r = subprocess.run([sys.executable, "-m", "auto3dseg.evaluation.cellseg", "--help"],
                       capture_output=True, text=True, check=True)
    for flag in ("--gt", "--pred", "--out", "--iou", "--gt_suffix", "--pred_suffix", "--no_progress"):
        assert flag in r.stdout


# --------------------------------------------------------------------------------------
# Real CellSeg labels (skipped where ../shared is absent, e.g. in CI)
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(not (CELLS2D / "labels").is_dir(), reason=f"no real CellSeg labels at {CELLS2D}")
def test_real_labels_perfect_and_perturbed(tmp_path):
    labels = sorted((CELLS2D / "labels").glob("*_label.tiff"))
    assert labels
    for path in labels:
        gt = tifffile.imread(path)
        s = cs.score_image(gt, gt)
        assert s["f1"] == 1.0 and s["true_num"] == int(ref_drop_border(gt).max()) > 0
        pred = np.roll(gt, 2, axis=1).astype(np.int32)  # shifted by 2 px
        pred[(pred % 3) == 0] = 0  # and a third of the cells deleted
        tp, true_num, pred_num = ref_score(gt, pred)
        s = cs.score_image(gt, pred)
        assert (s["tp"], s["true_num"], s["pred_num"]) == (tp, true_num, pred_num)
        assert s["f1"] == pytest.approx(f1_of(tp, true_num, pred_num)) and 0 < s["f1"] < 1
        write(tmp_path / "pred", path.name[: -len("_label.tiff")], pred)
    r = cs.score_folders(CELLS2D / "labels", tmp_path / "pred", progress=False)
    assert r["n_images"] == len(labels) and not r["failed"] and not r["missing"]
    assert r["mean_f1"] == pytest.approx(np.mean([row["f1"] for row in r["per_image"]]))


# --------------------------------------------------------------------------------------
# Raw images given as predictions (--pred_suffix matching the images' names)
# --------------------------------------------------------------------------------------
def _noise_image(seed: int) -> np.ndarray:
    """A grey 16-bit "microscopy image": every pixel non-zero, neighbours rarely equal."""
    return np.random.default_rng(seed).integers(100, 4000, (40, 40)).astype(np.uint16)


def test_a_folder_of_raw_images_as_predictions_is_refused(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "images"
    a = canvas()
    a[5:10, 5:10], a[20:30, 20:30] = 1, 2
    pred_dir.mkdir()
    for i, name in enumerate(("x", "y", "z")):
        write(gt_dir, name, a)
        tifffile.imwrite(pred_dir / f"{name}.tif", _noise_image(i))
    with pytest.raises(cs.NotInstanceMasks, match="3 of the 3 predictions"):
        cs.score_folders(gt_dir, pred_dir, pred_suffix=".tif", progress=False)
    out = tmp_path / "s.json"
    assert cs.main(["--gt", str(gt_dir), "--pred", str(pred_dir), "--pred_suffix", ".tif", "--out", str(out),
                    "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "look like raw images, not instance masks" in err and "x.tif" in err and "<stem>.tif" in err, err
    assert not out.exists()


def test_one_raw_image_among_masks_fails_alone_and_float_intensities_too(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    a = canvas()
    a[5:10, 5:10], a[20:30, 20:30] = 1, 2
    for name in ("m1", "m2", "m3", "img", "flt"):
        write(gt_dir, name, a)
    for name in ("m1", "m2", "m3"):
        write(pred_dir, name, a)
    write(pred_dir, "img", _noise_image(0))
    write(pred_dir, "flt", a.astype(np.float32) * 0.37)
    r = cs.score_folders(gt_dir, pred_dir, progress=False)
    errors = {f["name"]: f["error"] for f in r["failed"]}
    assert set(errors) == {"img_label.tiff", "flt_label.tiff"} and r["n_scored"] == 3
    assert "raw image" in errors["img_label.tiff"] and "neighbours" in errors["img_label.tiff"]
    assert "fractional float32" in errors["flt_label.tiff"]
    assert r["mean_f1"] == pytest.approx(3 / 5)


def test_binary_predictions_are_named_and_still_scored(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    a = canvas((64, 64))
    for i in range(6):  # six separate cells away from the 2-px frame
        a[5 + 8 * i:10 + 8 * i, 5:10] = i + 1
    for name in ("b1", "b2", "ok"):
        write(gt_dir, name, a)
    binary = np.where(a > 0, 255, 0).astype(np.uint8)
    write(pred_dir, "b1", binary)
    write(pred_dir, "b2", binary)
    write(pred_dir, "ok", a)
    r = cs.score_folders(gt_dir, pred_dir, progress=False)
    assert r["n_scored"] == 3 and not r["failed"]  # still scored as the official scorer would
    per = {row["name"]: row for row in r["per_image"]}
    assert per["b1_label.tiff"]["pred_num"] == 1 and per["ok_label.tiff"]["f1"] == 1.0
    named = [w for w in r["warnings"] if "one id 255" in w]
    assert sorted(w.split(":")[0] for w in named) == ["b1_label.tiff", "b2_label.tiff"], r["warnings"]
    assert "skimage.measure.label" in named[0]
    assert any("2 of 3 prediction(s) hold a single id" in w for w in r["warnings"])
    # an image with one true cell predicted as one id is not a binary-mask mistake
    one = canvas()
    one[5:10, 5:10] = 7
    write(gt_dir, "b1", one)
    write(pred_dir, "b1", one)
    r = cs.score_folders(gt_dir, pred_dir, progress=False)
    assert not any(w.startswith("b1_label.tiff") for w in r["warnings"]), r["warnings"]


def test_a_misnamed_prediction_or_a_truth_file_given_as_folder_is_named(folders, tmp_path):
    gt_dir, pred_dir = folders
    (pred_dir / "e_label.tiff").rename(pred_dir / "C_label.tiff")  # "c" spelt with a capital
    r = cs.score_folders(gt_dir, pred_dir, progress=False)
    assert any("c (is C it, misnamed?)" in w for w in r["warnings"]), r["warnings"]
    with pytest.raises(FileNotFoundError, match=r"truth folder .*a_label\.tiff is a file: give the folder that holds"):
        cs.score_folders(gt_dir / "a_label.tiff", pred_dir, progress=False)


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_predictions_that_are_links_to_the_truth_files_are_refused(folders, tmp_path, capsys, link):
    """A folder of per-file links to the truth scored 1.0 without a word (the CLI compared folders only)."""
    gt_dir, pred_dir = folders
    links = tmp_path / "links"
    links.mkdir()
    for f in sorted(gt_dir.glob("*_label.tiff")):
        if link == "symlink":
            (links / f.name).symlink_to(f)
        else:
            os.link(f, links / f.name)
    with pytest.raises(cs.TruthAsPrediction, match=r"4 prediction\(s\) in .*links are the truth files themselves"):
        cs.score_folders(gt_dir, links, progress=False)
    out = tmp_path / "s.json"
    assert cs.main(["--gt", str(gt_dir), "--pred", str(links), "--out", str(out), "--no_progress"]) == 2
    assert "scored against itself it is 1.0" in capsys.readouterr().err and not out.exists()
    assert cs.score_folders(gt_dir, pred_dir, progress=False)["n_scored"] == 2  # copies of truth files still score
