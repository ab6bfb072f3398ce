"""Bad input to the CellMap scorer, round 3 (issue 19): swapped stores, matching ties, quiet traps.

Each test builds a tiny truth and submission by hand; expected figures are worked out in
the comments from the rule (never read back from the implementation).
"""

from __future__ import annotations

import math
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from auto3dseg.evaluation import score as sc
from auto3dseg.evaluation.stores import ScoringInputError
from auto3dseg.submission.previous import SIGNATURE
from converters.cellmap.synthetic.layout import TEST_TRUTH_NAME

VS8 = (8.0, 8.0, 8.0)
NORM8 = math.sqrt(3 * 64.0)  # ||voxel_size|| of an 8 nm crop


def h(d_nm: float) -> float:
    """The challenge's normalised Hausdorff distance at 8 nm: 1.01 ** (-d / ||voxel_size||)."""
    return 1.01 ** (-d_nm / NORM8)


def write_store(path: Path, labels: dict) -> Path:
    """Plain arrays ``crop<N>/<label>``; value ``(data, attrs)``."""
    root = zarr.open_group(str(path), mode="w")
    for (crop, label), (data, attrs) in labels.items():
        root.require_group(f"crop{crop}").create_dataset(label, data=data, chunks=data.shape).attrs.put(attrs)
    return path


def at(translation, voxel_size=VS8, data=None) -> dict:
    out = {"translation": [float(v) for v in translation]}
    if voxel_size is not None:
        out["voxel_size"] = [float(v) for v in voxel_size]
    if data is not None:
        out["shape"] = list(data.shape)
    return out


def score(sub, truth, **kw):
    return sc.score_submission(sub, truth, echo_warnings=False, **kw)


def warned(scores, kind: str) -> list[dict]:
    return [w for w in scores["warnings"] if w["kind"] == kind]


ER = np.zeros((10, 10, 10), np.uint8)
ER[:, :, :5] = 1  # a semantic label copied as is (IoU 1), so the overall score is not 0


# --------------------------------------------------------------------------------------
# 1. --submission and --truth swapped
# --------------------------------------------------------------------------------------
def _pair(tmp_path: Path) -> tuple[Path, Path]:
    """A synthetic-style truth (named as the generator names it) and a submission laid out as
    the project's writer leaves it (submission.zarr with its signature beside it)."""
    truth_mito = np.zeros((10, 10, 10), np.uint16)
    truth_mito[1:4, 1:4, 1:4] = 1
    truth_mito[6:9, 6:9, 6:9] = 2
    pred = np.zeros_like(truth_mito)
    pred[1:4, 1:4, 1:4] = 1
    pred[6:9, 1:4, 6:9] = 2  # a false positive
    truth = write_store(tmp_path / "data" / TEST_TRUTH_NAME,
                        {(1, "mito"): (truth_mito, at((4, 4, 4))), (1, "er"): (ER, at((4, 4, 4)))})
    out = tmp_path / "work" / "submission"
    sub = write_store(out / "submission.zarr", {(1, "mito"): (pred, at((4, 4, 4))), (1, "er"): (ER, at((4, 4, 4)))})
    (out / SIGNATURE).write_text("abc\n")
    return sub, truth


def test_swapped_zarr_folders_are_refused_naming_both(tmp_path, capsys):
    sub, truth = _pair(tmp_path)
    right = score(sub, truth)
    assert not warned(right, "looks_swapped")
    with pytest.raises(ScoringInputError, match="swapped") as exc:
        score(truth, sub)
    msg = str(exc.value)
    assert str(sub) in msg and str(truth) in msg and "\n" not in msg
    assert sc.main(["--submission", str(truth), "--truth", str(sub)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "swapped" in err[0] and str(truth) in err[0]


def test_swapped_stores_named_gt_and_pred_are_refused(tmp_path):
    """gt.zarr / pred.zarr, the commonest names, were scored swapped with no sign (0.36 for 0.49)."""
    import shutil

    sub, truth = _pair(tmp_path)
    gt, pred = tmp_path / "mine" / "gt.zarr", tmp_path / "mine" / "pred.zarr"
    shutil.copytree(truth, gt)
    shutil.copytree(sub, pred)
    assert not warned(score(pred, gt), "looks_swapped")
    with pytest.raises(ScoringInputError, match="named 'gt.zarr'.*named 'pred.zarr'.*swapped"):
        score(gt, pred)


def test_a_zip_given_as_truth_or_cellmap_truth_as_submission_is_refused(tmp_path):
    sub, truth = _pair(tmp_path)
    zipped = tmp_path / "entry.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in sub.rglob("*"):
            zf.write(f, Path("submission.zarr") / f.relative_to(sub))
    with pytest.raises(ScoringInputError, match="zip file.*swapped"):
        score(truth, zipped)
    with pytest.raises(ScoringInputError, match="zip file entry.zip.*swapped"):
        score(truth, tmp_path)  # a folder holding only the zip, as the official scorer takes it
    cellmap = tmp_path / "jrc_x" / "jrc_x.zarr" / "recon-1" / "labels" / "groundtruth" / "crop1"
    cellmap.mkdir(parents=True)
    with pytest.raises(ScoringInputError, match="CellMap ground truth.*swapped"):
        score(tmp_path / "jrc_x", truth)


def test_one_sided_sign_warns_and_scores(tmp_path):
    sub, truth = _pair(tmp_path)
    plain = tmp_path / "plain.zarr"
    zarr.copy_store(zarr.DirectoryStore(str(sub)), zarr.DirectoryStore(str(plain)))
    s = score(truth, plain)  # only the --submission side looks wrong: scored, with a loud warning
    (w,) = warned(s, "looks_swapped")
    assert TEST_TRUTH_NAME in w["message"] and "swapped" in w["message"]
    assert s["overall"]["score"] is not None


# --------------------------------------------------------------------------------------
# 2. Two matchings of equal cost: the official min-cost flow's choice
# --------------------------------------------------------------------------------------
def tie_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Two true and two predicted objects (one z slab of 2; y, x below relative to (4, 4)).

    G1 = x 0-3, y 0-5 (24 per slice); G2 = x 4-7, y 0-1 plus x 4-11, y 2-3 (24).
    P1 = x 0-7, y 0-1 (16);           P2 = x 0-3, y 2-5 plus x 4-11, y 2-3 (32).
    Overlaps: G1∩P1 = G2∩P1 = 8, G1∩P2 = G2∩P2 = 16 per slice, so IoU(G1,P1) = IoU(G2,P1)
    = 8/32 and IoU(G1,P2) = IoU(G2,P2) = 16/40: {G1P1, G2P2} and {G1P2, G2P1} cost the same.
    Hausdorff (in voxels): G1–P1 4 (G1's y 5 row; P1's x 7 column), G2–P2 √20 (P2's corner
    (x 0, y 5) to G2's (4, 3)); G1–P2 8 (P2's x 11 to G1's x 3), G2–P1 √20.
    """
    t = np.zeros((24, 24, 24), np.uint16)
    p = np.zeros_like(t)
    zs = slice(4, 6)
    t[zs, 4:10, 4:8] = 1
    t[zs, 4:6, 8:12] = 2
    t[zs, 6:8, 8:16] = 2
    p[zs, 4:6, 4:12] = 1
    p[zs, 6:10, 4:8] = 2
    p[zs, 6:8, 8:16] = 2
    return t, p


def official_graph_choice(costs: dict[tuple[int, int], int], n_truth: int, n_pred: int) -> set[tuple[int, int]]:
    """The (truth, prediction) pairs the official min-cost flow picks, its graph written from the
    rule: source 0, truth nodes 1..n, predicted nodes after them, sink last; arcs source→truth
    (0), truth→sink (10⁶ + 1), truth→prediction in (truth, prediction) order, prediction→sink (0)."""
    from ortools.graph.python import min_cost_flow

    sink = n_truth + n_pred + 1
    arcs = ([(0, g, 0) for g in range(1, n_truth + 1)] + [(g, sink, 10**6 + 1) for g in range(1, n_truth + 1)]
            + [(g, n_truth + q, c) for (g, q), c in sorted(costs.items())]
            + [(n_truth + q, sink, 0) for q in range(1, n_pred + 1)])
    mcf = min_cost_flow.SimpleMinCostFlow()
    for u, v, c in arcs:
        mcf.add_arc_with_capacity_and_unit_cost(u, v, 1, c)
    mcf.set_node_supply(0, n_truth)
    mcf.set_node_supply(sink, -n_truth)
    assert mcf.solve() == mcf.OPTIMAL
    return {(mcf.tail(a), mcf.head(a) - n_truth) for a in range(mcf.num_arcs())
            if mcf.flow(a) == 1 and 1 <= mcf.tail(a) <= n_truth and mcf.head(a) != sink}


def test_tie_is_broken_as_the_official_min_cost_flow(tmp_path):
    t, p = tie_arrays()
    truth = write_store(tmp_path / "t.zarr", {(1, "mito"): (t, at((4, 4, 4))), (1, "er"): (ER, at((4, 4, 4)))})
    sub = write_store(tmp_path / "s.zarr", {(1, "mito"): (p, at((4, 4, 4))), (1, "er"): (ER, at((4, 4, 4)))})
    # costs int((1 - IoU) * 10⁶); components are numbered in scan order: P1 (y 0-1) is 1, P2 is 2
    c1, c2 = int((1 - 8 / 32) * 10**6), int((1 - 16 / 40) * 10**6)
    pick = official_graph_choice({(1, 1): c1, (1, 2): c2, (2, 1): c1, (2, 2): c2}, 2, 2)
    sums = {frozenset({(1, 1), (2, 2)}): h(4 * 8) + h(math.sqrt(20) * 8),
            frozenset({(1, 2), (2, 1)}): h(8 * 8) + h(math.sqrt(20) * 8)}
    assert abs(sums[frozenset({(1, 1), (2, 2)})] - sums[frozenset({(1, 2), (2, 1)})]) > 0.01  # the choice matters
    m = score(sub, truth)["labels"]["mito"]
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 0)
    assert m["hausdorff_norm_sum"] == pytest.approx(sums[frozenset(pick)], abs=1e-6)


def test_tie_without_the_solver_is_flagged(tmp_path, monkeypatch):
    t, p = tie_arrays()
    truth = write_store(tmp_path / "t.zarr", {(1, "mito"): (t, at((4, 4, 4))), (1, "er"): (ER, at((4, 4, 4)))})
    sub = write_store(tmp_path / "s.zarr", {(1, "mito"): (p, at((4, 4, 4))), (1, "er"): (ER, at((4, 4, 4)))})
    monkeypatch.setitem(sys.modules, "ortools.graph.python", None)  # as if OR-tools were not installed
    s = score(sub, truth)
    assert s["labels"]["mito"]["f1"] == 1.0  # the same optimum either way
    (w,) = warned(s, "matching_tie")
    assert w["crop"] == 1 and w["label"] == "mito" and "ortools" in w["message"]
    # no tie: one object each, no warning
    one = write_store(tmp_path / "one.zarr", {(1, "mito"): (t * (t == 1), at((4, 4, 4))),
                                              (1, "er"): (ER, at((4, 4, 4)))})
    assert not warned(score(one, truth), "matching_tie")


# --------------------------------------------------------------------------------------
# 3. Quiet traps
# --------------------------------------------------------------------------------------
def test_no_axis_order_warning_without_voxel_size(tmp_path):
    """No voxel_size: the official scorer centre-crops the 20-slice array to the crop's 10, so the
    object at array z 3-7 lands at crop z 0-2 and misses the truth at 3-7. With the translation
    reversed it is centre-cropped the same way and lands one voxel earlier still: no better, so
    axis order is not to blame (the missing voxel size is, and is warned)."""
    truth_er = np.zeros((10, 10, 10), np.uint8)
    truth_er[3:8] = 1
    arr = np.zeros((20, 10, 10), np.uint8)
    arr[3:8] = 1
    origin = (12.0, 4.0, 4.0)
    truth = write_store(tmp_path / "t.zarr", {(1, "er"): (truth_er, at(origin))})
    sub = write_store(tmp_path / "s.zarr", {(1, "er"): (arr, at(origin, voxel_size=None))})
    s = score(sub, truth)
    assert s["labels"]["er"]["tp"] == 0
    assert not warned(s, "axis_order") and not warned(s, "outside_crop")
    assert warned(s, "no_voxel_size")


def test_one_voxel_early_is_warned_with_crop_label_and_offset(tmp_path):
    """Crop voxel centres at 4 + 8k nm; an 8-slice array at z = 100 nm lies at crop voxel 12
    (100 = 4 + 12·8) but the official snapping floors 100 to 96 nm, 11.5 voxels after 4,
    counted as 11: one voxel early along z."""
    truth_er = np.zeros((20, 20, 20), np.uint8)
    truth_er[12:20] = 1
    arr = np.ones((8, 20, 20), np.uint8)
    truth = write_store(tmp_path / "t.zarr", {(7, "er"): (truth_er, at((4, 4, 4)))})
    sub = write_store(tmp_path / "s.zarr", {(7, "er"): (arr, at((100, 4, 4)))})
    s = score(sub, truth)
    assert s["labels"]["er"]["tp"] == 7 * 400  # landed at 11-18: 7 of the 8 slices on the truth
    (w,) = warned(s, "early_offset")
    assert w["crop"] == 7 and w["label"] == "er" and w["offset_voxels"] == [-1, 0, 0]
    assert "1 voxel early along z" in w["message"]
    # the full-crop array (the manifest's translation) lands where it lies: no warning
    full = write_store(tmp_path / "full.zarr", {(7, "er"): (truth_er, at((4, 4, 4)))})
    assert not warned(score(full, truth), "early_offset")


def test_one_from_skipped_and_both_empty_crops_is_warned(tmp_path):
    """mito: crop 1 has one true object and 61 predicted specks (61 > 10 + 50·e^(-1/5) ≈ 50.9:
    skipped), crop 2 has nothing on either side. The class pools nothing and scores 1.0."""
    one = np.zeros((10, 10, 10), np.uint16)
    one[0, 0, 0] = 1
    specks = np.zeros_like(one)
    specks[::2, ::2, ::2] = 1  # 125 isolated voxels, each its own object
    empty = np.zeros_like(one)
    truth = write_store(tmp_path / "t.zarr", {(1, "mito"): (one, at((4, 4, 4))), (2, "mito"): (empty, at((4, 4, 4))),
                                              (1, "er"): (ER, at((4, 4, 4)))})
    sub = write_store(tmp_path / "s.zarr", {(1, "mito"): (specks, at((4, 4, 4))), (2, "mito"): (empty, at((4, 4, 4))),
                                            (1, "er"): (ER, at((4, 4, 4)))})
    s = score(sub, truth)
    assert s["labels"]["mito"]["score"] == 1.0
    (w,) = warned(s, "skipped_or_empty")
    assert w["label"] == "mito" and "crop1" in w["message"] and "crop2" in w["message"]
    assert not warned(s, "skipped_everywhere")
    # a crop that earns its figure: no class-level warning
    good = write_store(tmp_path / "g.zarr", {(1, "mito"): (one, at((4, 4, 4))), (2, "mito"): (empty, at((4, 4, 4))),
                                             (1, "er"): (ER, at((4, 4, 4)))})
    assert not warned(score(good, truth), "skipped_or_empty")


def test_float_ids_blurred_by_resampling_are_named(tmp_path):
    """Instance ids 1..64 written as float32 at 4 nm for an 8 nm crop: shrinking a float array
    smooths it (anti-aliasing) and interpolates between ids, so values no object has appear and
    each becomes an object. The same ids as uint16 are resampled by nearest neighbour."""
    ids = np.zeros((20, 20, 20), np.uint16)
    n = 0
    for z in range(0, 20, 5):
        for y in range(0, 20, 5):
            for x in range(0, 20, 5):
                n += 1
                ids[z:z + 4, y:y + 4, x:x + 4] = n
    fine = ids.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    truth = write_store(tmp_path / "t.zarr", {(1, "mito"): (ids, at((4, 4, 4))), (1, "er"): (ER, at((4, 4, 4)))})
    as_float = write_store(tmp_path / "f.zarr", {(1, "mito"): (fine.astype(np.float32), at((2, 2, 2), (4, 4, 4))),
                                                 (1, "er"): (ER, at((4, 4, 4)))})
    (w,) = warned(score(as_float, truth), "float_instance_ids")
    assert w["crop"] == 1 and w["label"] == "mito"
    assert "blurred by resampling" in w["message"] and "64 ids" in w["message"] and "integers" in w["message"]
    as_int = write_store(tmp_path / "i.zarr", {(1, "mito"): (fine, at((2, 2, 2), (4, 4, 4))),
                                               (1, "er"): (ER, at((4, 4, 4)))})
    s = score(as_int, truth)
    assert not warned(s, "float_instance_ids") and s["labels"]["mito"]["f1"] == 1.0


# --------------------------------------------------------------------------------------
# --out that cannot be written: one line naming it, for both scorers
# --------------------------------------------------------------------------------------
def test_out_on_a_folder_or_unwritable_place_is_one_line(tmp_path, capsys):
    import tifffile

    from auto3dseg.evaluation import cellseg as cs

    sub, truth = _pair(tmp_path)
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for d in (gt, pred):
        d.mkdir()
        tifffile.imwrite(d / "a_label.tiff", np.eye(8, dtype=np.uint16))
    pred_file = pred / "a_label.tiff"
    before = pred_file.read_bytes()
    for out in (tmp_path, blocked / "scores.json", tmp_path / "scores.md", tmp_path / "f1.csv", pred_file,
                sub.parent / "submission.zip"):
        for run in (lambda o: sc.main(["--submission", str(sub), "--truth", str(truth), "--out", str(o)]),
                    lambda o: cs.main(["--gt", str(gt), "--pred", str(pred), "--out", str(o), "--no_progress"])):
            assert run(out) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"error: {out}") and "--out" in err[0], err
    assert not list(tmp_path.glob("*.md")) and pred_file.read_bytes() == before  # no input overwritten


def test_cellseg_pred_folder_without_label_files_is_refused_naming_what_it_holds(tmp_path, capsys):
    import tifffile

    from auto3dseg.evaluation import cellseg as cs

    gt, pred = tmp_path / "gt", tmp_path / "raw"
    gt.mkdir()
    pred.mkdir()
    tifffile.imwrite(gt / "a_label.tiff", np.eye(8, dtype=np.uint16))
    tifffile.imwrite(pred / "a.tif", np.eye(8, dtype=np.uint16))  # the raw images given as predictions
    assert cs.main(["--gt", str(gt), "--pred", str(pred), "--out", str(tmp_path / "f1.json"), "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "no prediction file ending in '_label.tiff'" in err and "a.tif" in err and "raw images" in err, err
    assert not (tmp_path / "f1.json").exists()


@pytest.mark.parametrize("rules", ["official", "strict"])
@pytest.mark.parametrize("attrs, words", [
    (at((4, 4, 4), (0.0, 8.0, 8.0)), "'voxel_size' [0.0, 8.0, 8.0] must be positive sizes"),
    (at((4, 4, 4), (-8.0, 8.0, 8.0)), "'voxel_size' [-8.0, 8.0, 8.0] must be positive sizes"),
    (at((float("nan"), 4, 4)), "'translation' [nan, 4.0, 4.0] must be finite numbers"),
])
def test_impossible_voxel_size_or_translation_is_named(tmp_path, rules, attrs, words):
    """voxel_size 0 scored the label 0 in silence, a negative one said "does not reach the crop",
    a NaN translation ended in numpy's broadcast error or scored as empty."""
    truth_mito = np.zeros((10, 10, 10), np.uint16)
    truth_mito[1:4, 1:4, 1:4] = 1
    truth = write_store(tmp_path / "truth.zarr", {(1, "mito"): (truth_mito, at((4, 4, 4)))})
    sub = write_store(tmp_path / "sub.zarr", {(1, "mito"): (truth_mito, attrs)})
    with pytest.raises(ScoringInputError, match=r"crop1/mito: " + re.escape(words)):
        score(sub, truth, rules=rules)


def test_a_misspelt_label_is_named_beside_the_missing_one(tmp_path):
    truth_mito = np.zeros((10, 10, 10), np.uint16)
    truth_mito[1:4, 1:4, 1:4] = 1
    truth = write_store(tmp_path / "truth.zarr", {(1, "mito"): (truth_mito, at((4, 4, 4)))})
    for wrong in ("mitoo", "mitochondria"):
        sub = write_store(tmp_path / f"sub_{wrong}.zarr", {(1, wrong): (truth_mito, at((4, 4, 4)))})
        got = warned(score(sub, truth), "missing_label")
        assert len(got) == 1 and f"it holds '{wrong}', which is no label of the truth: misspelt?" in got[0]["message"]


def test_a_submitted_crop_the_truth_lacks_is_named(tmp_path):
    """A truth store without crop2 scored crop1 alone, without a word (with a manifest it was named)."""
    truth = write_store(tmp_path / "truth.zarr", {(1, "er"): (ER, at((4, 4, 4)))})
    sub = write_store(tmp_path / "sub.zarr", {(1, "er"): (ER, at((4, 4, 4))), (2, "er"): (ER, at((4, 4, 4)))})
    got = warned(score(sub, truth), "no_truth")
    assert [(w["crop"], w["label"]) for w in got] == [(2, "*")], got
    assert "in the submission but not in the truth: not scored" in got[0]["message"]
    assert not warned(score(sub, truth, only=[(1, "er")]), "no_truth")  # a chosen subset (the CV) says nothing
    assert not warned(score(write_store(tmp_path / "one.zarr", {(1, "er"): (ER, at((4, 4, 4)))}), truth), "no_truth")


def test_out_inside_the_truth_or_the_predictions_is_refused(tmp_path, capsys):
    """Reports were written into the truth store (scores.json among the crops) and truth folder."""
    import tifffile

    from auto3dseg.evaluation import cellseg as cs

    sub, truth = _pair(tmp_path)
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for d in (gt, pred):
        d.mkdir()
        tifffile.imwrite(d / "a_label.tiff", np.eye(8, dtype=np.uint16))
    for run, inside in ((lambda o: sc.main(["--submission", str(sub), "--truth", str(truth), "--out", str(o)]),
                         (truth, sub)),
                        (lambda o: cs.main(["--gt", str(gt), "--pred", str(pred), "--out", str(o), "--no_progress"]),
                         (gt, pred))):
        for folder in inside:
            if not Path(folder).is_dir():
                continue
            assert run(folder / "scores.json") == 2
            err = capsys.readouterr().err
            assert f"is inside the input {folder}" in err and "never written into an input" in err, err
            assert not (folder / "scores.json").exists()
            assert run(folder) == 2  # the folder itself: the example name given lies beside it, not in it
            err = capsys.readouterr().err
            assert f"(e.g. {Path(folder).resolve().parent / (Path(folder).name + '_scores.json')})" in err, err


def test_a_prediction_scored_against_itself_is_refused(tmp_path, capsys):
    """Both scorers gave 1.0, exit 0, for a folder or store given as its own truth."""
    import tifffile

    from auto3dseg.evaluation import cellseg as cs

    sub, _ = _pair(tmp_path)
    assert sc.main(["--submission", str(sub), "--truth", str(sub)]) == 2
    assert "are the same store" in capsys.readouterr().err
    pred = tmp_path / "pred"
    pred.mkdir()
    tifffile.imwrite(pred / "a_label.tiff", np.eye(8, dtype=np.uint16))
    assert cs.main(["--gt", str(pred), "--pred", str(pred), "--out", str(tmp_path / "f1.json"), "--no_progress"]) == 2
    assert "are the same folder" in capsys.readouterr().err


def test_truth_stamp_sees_a_cellmap_label_groups_attributes(synthetic, tmp_path):
    """A CellMap-layout truth whose label group's multiscales voxel size was corrected kept its
    cached scores: the stamp covered each label's s0 folder only."""
    import json
    import os
    import shutil

    from auto3dseg.evaluation.stores import truth_stamp

    truth = tmp_path / "synth-1.zarr"
    shutil.copytree(synthetic / "synth-1" / "synth-1.zarr", truth)
    first = truth_stamp(truth)
    assert first and first == truth_stamp(truth)
    group = truth / "recon-1" / "labels" / "groundtruth" / "crop1" / "mito"
    attrs = json.loads((group / ".zattrs").read_text())
    transform = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    transform["scale"] = [2 * v for v in transform["scale"]]  # 8 nm corrected to 16 nm
    (group / ".zattrs").write_text(json.dumps(attrs))
    os.utime(group / ".zattrs", ns=(first[2] - 10**9, first[2] - 10**9))  # an older time: the bytes differ
    assert truth_stamp(truth) != first
    stamp = truth_stamp(truth)
    chunk = next(f for f in (group / "s0").iterdir() if not f.name.startswith("."))
    older = chunk.stat().st_mtime_ns - 10**9
    chunk.write_bytes(bytes(reversed(chunk.read_bytes())))  # restored from a backup: same size, an older time
    os.utime(chunk, ns=(older, older))
    assert truth_stamp(truth) != stamp
    em = truth / "recon-1" / "em"
    assert em.is_dir()
    stamp = truth_stamp(truth)
    for f in em.rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes())  # the EM is not scored: rewriting it changes nothing
    assert truth_stamp(truth) == stamp


def test_a_truth_whose_crops_link_into_the_submission_is_refused(tmp_path, capsys):
    """--truth a store whose crop folders link into --submission scored 1.0 (only the two paths were compared)."""
    sub, _ = _pair(tmp_path)
    linked = tmp_path / "linked_truth.zarr"
    linked.mkdir()
    (linked / ".zgroup").write_text((sub / ".zgroup").read_text())
    (linked / "crop1").symlink_to(sub / "crop1")
    out = tmp_path / "s.json"
    assert sc.main(["--submission", str(sub), "--truth", str(linked), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "links into --submission" in err and "scored against itself" in err and not out.exists(), err
