"""Local CellMap scoring: metrics on hand-made arrays, and the scorer on small stores.

Every expected value is worked out by hand in the comment next to it.
"""

from __future__ import annotations

import doctest
import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from auto3dseg.evaluation import metrics as m
from auto3dseg.evaluation import official, report, resample, stores, strict, traps
from auto3dseg.evaluation import score as sc
from converters.cellmap.synthetic import multiscale_attrs

VS4 = (4.0, 4.0, 4.0)


def h(d_nm: float, voxel_size=VS4) -> float:
    """The challenge's normalisation, written out: 1.01 ** (-d / ||voxel_size||)."""
    return 1.01 ** (-d_nm / math.sqrt(sum(v * v for v in voxel_size)))


# --------------------------------------------------------------------------------------
# Store helpers
# --------------------------------------------------------------------------------------
def write_flat(path: Path, labels: dict[tuple[int, str], tuple[np.ndarray, tuple, tuple]]) -> Path:
    """A flat store crop<N>/<label> of plain arrays with voxel_size/translation attrs."""
    root = zarr.open_group(str(path), mode="w")
    for (crop, label), (data, voxel_size, translation) in labels.items():
        arr = root.require_group(f"crop{crop}").create_dataset(label, data=data, chunks=data.shape)
        arr.attrs.put({"voxel_size": list(voxel_size), "translation": list(translation),
                       "shape": list(data.shape)})
    return path


def zip_store(folder: Path, zip_path: Path, prefix: str) -> Path:
    """Zip a zarr folder with its files under ``prefix`` ('' = at the zip's root)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, (Path(prefix) / f.relative_to(folder)).as_posix())
    return zip_path


def cube(shape, lo, hi, value=1, dtype=np.uint16) -> np.ndarray:
    a = np.zeros(shape, dtype)
    a[tuple(slice(a_, b_) for a_, b_ in zip(lo, hi))] = value
    return a


# --------------------------------------------------------------------------------------
# Semantic metrics
# --------------------------------------------------------------------------------------
def test_semantic_counts_iou_dice_by_hand():
    truth = np.array([1, 1, 1, 0, 0, 0, 255, 255], np.uint8).reshape(1, 2, 4)
    pred = np.array([1, 1, 0, 1, 1, 0, 1, 0], np.uint8).reshape(1, 2, 4)
    # known voxels 0..5: TP at 0,1; FP at 3,4; FN at 2; voxels 6,7 (unknown) ignored
    counts = m.semantic_counts(pred, truth)
    assert counts == {"tp": 2, "fp": 2, "fn": 1}
    assert m.iou(counts) == pytest.approx(2 / 5)
    assert m.dice(counts) == pytest.approx(4 / 7)
    # without the ignore value, 255 is foreground: voxel 6 is a TP, voxel 7 a FN
    assert m.semantic_counts(pred, truth, ignore_value=None) == {"tp": 3, "fp": 2, "fn": 2}


def test_semantic_empty_cases():
    truth = cube((2, 2, 2), (0, 0, 0), (1, 2, 2))
    empty = np.zeros_like(truth)
    counts = m.semantic_counts(empty, truth)
    assert counts == {"tp": 0, "fp": 0, "fn": 4}
    assert m.iou(counts) == 0.0 and m.dice(counts) == 0.0
    # empty against empty is defined as a perfect score
    assert m.iou(m.semantic_counts(empty, empty)) == 1.0
    assert m.dice(m.semantic_counts(empty, empty)) == 1.0


# --------------------------------------------------------------------------------------
# Instance metrics
# --------------------------------------------------------------------------------------
def two_cubes(shape=(10, 10, 10)) -> np.ndarray:
    t = cube(shape, (1, 1, 1), (4, 4, 4), 1)
    t[6:9, 6:9, 6:9] = 2
    return t


def test_perfect_instance_prediction():
    truth = two_cubes()
    pred = np.where(truth == 1, 40, np.where(truth == 2, 7, 0)).astype(np.uint32)  # other ids
    s = m.instance_score(pred, truth, VS4)
    assert (s["status"], s["tp"], s["fp"], s["fn"]) == ("scored", 2, 0, 0)
    assert s["f1"] == 1.0 and s["hausdorff_norm"] == 1.0 and s["combined"] == 1.0


def test_empty_instance_prediction():
    truth = two_cubes()
    s = m.instance_score(np.zeros_like(truth), truth, VS4)
    assert (s["tp"], s["fp"], s["fn"], s["f1"], s["combined"]) == (0, 0, 2, 0.0, 0.0)
    # both objects unmatched: each at the cap, min(40, 40, 40) / 2 = 20 nm
    assert s["cap_nm"] == 20.0
    assert s["hausdorff_norm"] == pytest.approx(h(20.0))


def test_split_object_is_one_tp_one_fp():
    # truth: one bar z = 1..6 at (y, x) = (2, 2); prediction: the same id on z = 1..3 and
    # z = 5..6, separated at z = 4, so connected components make two objects
    truth = cube((10, 10, 10), (1, 2, 2), (7, 3, 3))
    pred = cube((10, 10, 10), (1, 2, 2), (4, 3, 3), 5)
    pred[5:7, 2, 2] = 5
    s = m.instance_score(pred, truth, VS4)
    assert (s["n_pred"], s["tp"], s["fp"], s["fn"]) == (2, 1, 1, 0)
    assert s["f1"] == pytest.approx(2 / 3)  # 2·1 / (2·1 + 1 + 0)
    # matched piece z=1..3 (IoU 3/6 beats 2/6): truth voxel z=6 is 3 voxels = 12 nm from it;
    # the unmatched piece sits at the cap, 20 nm
    assert s["hausdorff_nm"] == pytest.approx(12.0)
    assert s["hausdorff_norm"] == pytest.approx((h(12.0) + h(20.0)) / 2)
    assert s["combined"] == pytest.approx(math.sqrt(2 / 3 * (h(12.0) + h(20.0)) / 2))
    # scored as submitted (no re-grouping), the two pieces are one object: no FP
    assert m.instance_score(pred, truth, VS4, relabel=False)["fp"] == 0


def test_merged_objects_are_one_tp_one_fn():
    truth = cube((6, 6, 6), (1, 1, 1), (3, 5, 5), 1)
    truth[3:5, 1:5, 1:5] = 2  # touches object 1
    pred = (truth > 0).astype(np.uint8)  # one blob over both
    s = m.instance_score(pred, truth, VS4)
    assert (s["n_pred"], s["n_truth"], s["tp"], s["fp"], s["fn"]) == (1, 2, 1, 0, 1)
    assert s["f1"] == pytest.approx(2 / 3)  # 2·1 / (2·1 + 0 + 1)


def test_touching_predicted_ids_stay_apart():
    # two different ids that touch are two components, as in the official scorer
    pred = cube((1, 1, 6), (0, 0, 0), (1, 1, 3), 1)
    pred[0, 0, 3:] = 2
    labels, n = m.relabel_connected(pred)
    assert n == 2 and labels[0, 0].tolist() == [1, 1, 1, 2, 2, 2]


def test_matching_maximises_summed_iou_not_greedy():
    # 1D along x. T1 = x 0..9, T2 = x 10..19; P2 = x 0..3, P1 = x 4..13.
    # IoU(T1,P1) = 6/14, IoU(T2,P1) = 4/16, IoU(T1,P2) = 4/10, IoU(T2,P2) = 0.
    # Greedy takes T1-P1 (0.43) and leaves T2 alone; the optimum pairs T1-P2 and T2-P1
    # (0.40 + 0.25 = 0.65), two true positives.
    truth = np.zeros((1, 1, 20), np.uint16)
    truth[0, 0, :10], truth[0, 0, 10:] = 1, 2
    pred = np.zeros_like(truth)
    pred[0, 0, :4], pred[0, 0, 4:14] = 2, 1
    pairs, ious, n_pred, n_truth = m.match_instances(pred, truth)
    assert pairs.tolist() == [[2, 1], [1, 2]]
    assert ious.tolist() == pytest.approx([4 / 10, 4 / 16])
    assert (n_pred, n_truth) == (2, 2)


def test_no_overlap_no_match():
    truth = cube((1, 1, 6), (0, 0, 0), (1, 1, 2))
    pred = cube((1, 1, 6), (0, 0, 4), (1, 1, 6))
    pairs, _, n_pred, n_truth = m.match_instances(pred, truth)
    assert pairs.shape == (0, 2) and (n_pred, n_truth) == (1, 1)
    s = m.instance_score(pred, truth, VS4)
    assert (s["tp"], s["fp"], s["fn"], s["f1"]) == (0, 1, 1, 0.0)


def test_large_ids_are_matched():
    truth = cube((2, 2, 2), (0, 0, 0), (1, 2, 2), 2**40, np.uint64)
    pred = cube((2, 2, 2), (0, 0, 0), (2, 2, 2), 3_000_000_000, np.uint64)
    pairs, ious, _, _ = m.match_instances(pred, truth)
    assert pairs.tolist() == [[3_000_000_000, 2**40]] and ious.tolist() == [0.5]
    assert m.pair_hausdorff_distances(pred, truth, pairs, VS4).tolist() == [4.0]


@pytest.mark.parametrize("k", [1, 2])
def test_hausdorff_of_a_shifted_cube(k):
    vs = (8.0, 4.0, 4.0)
    truth = cube((12, 12, 12), (2, 2, 2), (5, 5, 5))
    pred = cube((12, 12, 12), (2 + k, 2, 2), (5 + k, 5, 5))
    d = k * 8.0  # shift of k voxels along z, 8 nm each
    a, b = truth > 0, pred > 0
    assert m.hausdorff_distance(a, b, vs) == pytest.approx(d)
    s = m.instance_score(pred, truth, vs)
    assert s["tp"] == 1 and s["hausdorff_nm"] == pytest.approx(d)
    assert s["hausdorff_norm"] == pytest.approx(1.01 ** (-d / math.sqrt(96.0)))  # ||(8,4,4)|| = √96
    assert s["combined"] == pytest.approx(math.sqrt(1.01 ** (-d / math.sqrt(96.0))))


def test_hausdorff_along_y_and_the_cap():
    vs = (8.0, 4.0, 4.0)
    truth = cube((4, 12, 12), (1, 2, 2), (3, 5, 5))
    pred = cube((4, 12, 12), (1, 4, 2), (3, 7, 5))  # 2 voxels along y: 8 nm
    assert m.hausdorff_distance(truth > 0, pred > 0, vs) == pytest.approx(8.0)
    # cap = min(4·8, 12·4, 12·4) / 2 = 16 nm; a matched distance never exceeds it
    assert m.hausdorff_cap(vs, truth.shape) == 16.0
    s = m.instance_score(pred, truth, vs, cap_nm=5.0)
    assert s["hausdorff_nm"] == 5.0 and s["hausdorff_norm"] == pytest.approx(h(5.0, vs))


def test_too_many_instances_is_a_failure():
    truth = np.ones((1, 20, 20), np.uint16)  # one object
    dots = np.zeros((1, 20, 20), np.uint16)
    dots[0, ::2, ::2] = 1  # 100 isolated voxels, all one id: 100 components
    flat = dots.reshape(-1)
    on = np.flatnonzero(flat)
    # cutoff for one true object: 10 + 50·e^(−1/5) = 50.94 predicted objects
    ok, bad = flat.copy(), flat.copy()
    ok[on[50:]] = 0   # 50 objects: scored
    bad[on[51:]] = 0  # 51 objects: failure
    s_ok = m.instance_score(ok.reshape(dots.shape), truth, VS4)
    s_bad = m.instance_score(bad.reshape(dots.shape), truth, VS4)
    assert (s_ok["status"], s_ok["n_pred"], s_ok["tp"], s_ok["fp"]) == ("scored", 50, 1, 49)
    assert (s_bad["status"], s_bad["n_pred"], s_bad["combined"]) == ("too_many_instances", 51, 0.0)


def test_instance_empty_truth():
    empty = np.zeros((4, 4, 4), np.uint16)
    # nothing to find and nothing found: a perfect crop, by definition
    s = m.instance_score(empty, empty, VS4)
    assert (s["tp"], s["fp"], s["fn"], s["f1"], s["hausdorff_norm"], s["combined"]) == (0, 0, 0, 1.0, 1.0, 1.0)
    # no true object, one predicted: F1 = 0 / (0 + 1 + 0) = 0, never a "too many" failure
    s = m.instance_score(cube((4, 4, 4), (0, 0, 0), (1, 1, 1)), empty, VS4)
    assert (s["status"], s["fp"], s["f1"], s["combined"]) == ("scored", 1, 0.0, 0.0)


def test_instance_f1_by_hand():
    assert m.instance_f1(3, 1, 2) == pytest.approx(6 / 9)
    assert m.instance_f1(0, 0, 0) == 1.0
    assert m.instance_f1(0, 4, 0) == 0.0


def test_docstring_examples():
    for module in (m, sc, official, resample, stores, strict, traps, report):
        result = doctest.testmod(module, extraglobs={"np": np})
        assert result.attempted > 0 and result.failed == 0, module.__name__


# --------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------
def test_semantic_pooled_and_instance_mean_over_crops():
    recs = [
        {"label": "er", "kind": "semantic", "status": "scored", "tp": 1, "fp": 1, "fn": 0},
        {"label": "er", "kind": "semantic", "status": "scored", "tp": 1, "fp": 0, "fn": 2},
        {"label": "mito", "kind": "instance", "status": "scored", "tp": 1, "fp": 0, "fn": 0,
         "f1": 1.0, "hausdorff_norm": 1.0, "combined": 1.0},
        {"label": "mito", "kind": "instance", "status": "missing", "tp": 0, "fp": 0, "fn": 3,
         "f1": 0.0, "hausdorff_norm": 0.0, "combined": 0.0},
    ]
    labels, overall = sc.aggregate_scores(recs)
    # pooled: TP 2, FP 1, FN 2 → IoU 2/5 (the mean of per-crop IoUs would be 0.4167)
    assert labels["er"]["iou"] == pytest.approx(0.4)
    assert labels["er"]["dice"] == pytest.approx(4 / 7)
    assert labels["mito"]["score"] == pytest.approx(0.5) and labels["mito"]["missing"] == 1
    assert overall["score"] == pytest.approx(math.sqrt(0.5 * 0.4))


# --------------------------------------------------------------------------------------
# The scorer on stores
# --------------------------------------------------------------------------------------
@pytest.fixture
def truth_store(tmp_path) -> Path:
    """Crop 1 at 8 nm, voxel 0 centred at (4, 4, 4) nm: mito (two cubes) and er."""
    mito = np.zeros((8, 8, 8), np.uint32)
    mito[1:3, 1:3, 1:3] = 3
    mito[5:7, 5:7, 5:7] = 9
    er = cube((8, 8, 8), (0, 4, 0), (8, 6, 8), dtype=np.uint8)  # 8·2·8 = 128 voxels
    return write_flat(tmp_path / "truth.zarr", {(1, "mito"): (mito, (8, 8, 8), (4, 4, 4)),
                                                (1, "er"): (er, (8, 8, 8), (4, 4, 4))})


def test_find_truth_labels_flat(truth_store):
    found = sc.find_truth_labels(truth_store)
    assert [(t.crop, t.label) for t in found] == [(1, "er"), (1, "mito")]
    assert found[1].grid.origin == (4.0, 4.0, 4.0) and found[1].grid.spacing == (8.0, 8.0, 8.0)
    assert found[1].grid.shape == (8, 8, 8)


def test_perfect_submission_scores_one(truth_store, tmp_path):
    sub = tmp_path / "submission.zarr"
    shutil.copytree(truth_store, sub)
    scores = sc.score_submission(sub, truth_store)
    assert scores["overall"]["score"] == 1.0 and scores["missing"] == []
    assert scores["labels"]["mito"]["f1"] == 1.0 and scores["labels"]["er"]["iou"] == 1.0
    json.dumps(scores)  # serialisable


@pytest.mark.parametrize("rules", ["official", "strict"])
def test_submission_at_another_voxel_size_and_translation(truth_store, tmp_path, rules):
    # The truth's physical box is 0..64 nm. The submission is at 4 nm over -16..80 nm
    # (voxel 0 centred at -14 nm, 24 voxels), so truth voxel i ↔ submission voxels 2i+4, 2i+5.
    def up(a):
        fine = a.repeat(2, 0).repeat(2, 1).repeat(2, 2)
        return np.pad(fine, 4)

    truth = {t.label: np.asarray(t.array[...]) for t in sc.find_truth_labels(truth_store)}
    sub = write_flat(tmp_path / "submission.zarr", {
        (1, "mito"): (up(truth["mito"]), (4, 4, 4), (-14, -14, -14)),
        (1, "er"): (up(truth["er"]), (4, 4, 4), (-14, -14, -14)),
    })
    scores = sc.score_submission(sub, truth_store, rules=rules)
    by = {r["label"]: r for r in scores["crops"]}
    assert by["er"]["tp"] == 128 and by["er"]["fp"] == 0 and by["er"]["fn"] == 0
    assert (by["mito"]["tp"], by["mito"]["fp"], by["mito"]["fn"]) == (2, 0, 0)
    assert scores["overall"]["score"] == 1.0
    # the same array with the truth's translation is off by 16 nm = 2 truth voxels
    shifted = write_flat(tmp_path / "shifted.zarr", {
        (1, "er"): (up(truth["er"]), (4, 4, 4), (2, 2, 2))})
    assert sc.score_submission(shifted, truth_store, labels=["er"], rules=rules)["labels"]["er"]["iou"] < 0.5


def test_missing_label_scored_as_false_negatives(truth_store, tmp_path):
    mito = np.asarray(zarr.open_group(str(truth_store), mode="r")["crop1/mito"][...])
    sub = write_flat(tmp_path / "submission.zarr", {(1, "mito"): (mito, (8, 8, 8), (4, 4, 4))})
    scores = sc.score_submission(sub, truth_store)
    assert scores["missing"] == ["crop1/er"]
    er = next(r for r in scores["crops"] if r["label"] == "er")
    # every voxel of the 8³ crop counts as a miss (the official scorer's rule)
    assert (er["status"], er["tp"], er["fp"], er["fn"], er["score"]) == ("missing", 0, 0, 512, 0.0)
    assert scores["labels"]["mito"]["score"] == 1.0
    assert scores["overall"]["score"] == 0.0  # sqrt(1 · 0)


def test_missing_instance_label_and_group_in_place_of_array(truth_store, tmp_path):
    er = np.asarray(zarr.open_group(str(truth_store), mode="r")["crop1/er"][...])
    sub = write_flat(tmp_path / "submission.zarr", {(1, "er"): (er, (8, 8, 8), (4, 4, 4))})
    root = zarr.open_group(str(sub), mode="a")
    root["crop1"].require_group("mito").create_dataset("s0", data=np.zeros((8, 8, 8), np.uint8))
    scores = sc.score_submission(sub, truth_store)
    mito = next(r for r in scores["crops"] if r["label"] == "mito")
    assert scores["missing"] == ["crop1/mito"]
    assert (mito["status"], mito["tp"], mito["fn"], mito["f1"], mito["score"]) == ("missing", 0, 2, 0.0, 0.0)
    assert [(w["crop"], w["label"], w["kind"]) for w in scores["warnings"]] == [(1, "mito", "label_is_group")]


@pytest.mark.parametrize("prefix", ["submission.zarr", ""])
def test_zipped_submission(truth_store, tmp_path, prefix):
    mito = np.asarray(zarr.open_group(str(truth_store), mode="r")["crop1/mito"][...])
    folder = write_flat(tmp_path / "submission.zarr", {(1, "mito"): (mito, (8, 8, 8), (4, 4, 4))})
    zipped = zip_store(folder, tmp_path / "submission.zip", prefix)
    scores = sc.score_submission(zipped, truth_store)
    assert scores["labels"]["mito"]["score"] == 1.0 and scores["missing"] == ["crop1/er"]


def test_unreadable_inputs_name_the_file(truth_store, tmp_path):
    bad = tmp_path / "not_a.zip"
    bad.write_bytes(b"hello")
    with pytest.raises(sc.ScoringInputError, match="not_a.zip"):
        sc.score_submission(bad, truth_store)
    no_attrs = tmp_path / "noattrs.zarr"
    zarr.open_group(str(no_attrs), mode="w").require_group("crop1").create_dataset(
        "mito", data=np.zeros((8, 8, 8), np.uint16))
    # the strict rules refuse an array without voxel_size/translation (the official ones assume them)
    with pytest.raises(sc.ScoringInputError, match=r"crop1/mito.*voxel_size"):
        sc.score_submission(no_attrs, truth_store, rules="strict")
    with pytest.raises(sc.ScoringInputError, match="nowhere"):
        sc.find_truth_labels(tmp_path / "nowhere")


def write_cellmap_truth(root_dir: Path) -> Path:
    """A CellMap-layout store: crop7 with mito (annotated, 16 nm) and er (all unknown)."""
    store = root_dir / "ds" / "ds.zarr"
    gt = zarr.open_group(str(store), mode="w").require_group("recon-1/labels/groundtruth/crop7")
    gt.attrs.put({"cellmap": {"annotation": {"class_names": ["er", "mito"]}}})
    mito = np.zeros((4, 4, 4), np.uint8)
    mito[1:3, 1:3, 1:3] = 1
    scale, translation = (16.0, 16.0, 16.0), (108.0, 208.0, 308.0)
    for name, data in (("mito", mito), ("er", None)):
        g = gt.require_group(name)
        g.attrs.put(multiscale_attrs(name, [("s0", scale, translation),
                                            ("s1", (32.0,) * 3, tuple(t + 8 for t in translation))]))
        s0 = g.create_dataset("s0", shape=(4, 4, 4), chunks=(4, 4, 4), dtype=np.uint8, fill_value=255)
        g.create_dataset("s1", shape=(2, 2, 2), chunks=(2, 2, 2), dtype=np.uint8, fill_value=255)
        if data is not None:
            s0[...] = data
    return store


def test_find_truth_labels_cellmap_multiscale(tmp_path):
    store = write_cellmap_truth(tmp_path / "data")
    for where in (tmp_path / "data", store):  # a data root or one dataset store
        found = sc.find_truth_labels(where)
        # er has no chunk on disk: not annotated, not scored
        assert [(t.crop, t.label) for t in found] == [(7, "mito")]
        assert found[0].grid.origin == (108.0, 208.0, 308.0)
        assert found[0].grid.spacing == (16.0, 16.0, 16.0) and found[0].grid.shape == (4, 4, 4)


def test_score_against_cellmap_truth(tmp_path):
    store = write_cellmap_truth(tmp_path / "data")
    pred = cube((4, 4, 4), (1, 1, 1), (3, 3, 3), 12, np.uint16)
    sub = write_flat(tmp_path / "submission.zarr", {(7, "mito"): (pred, (16, 16, 16), (108, 208, 308))})
    scores = sc.score_submission(sub, store)
    assert scores["labels"]["mito"]["score"] == 1.0 and scores["missing"] == []


def test_cli_writes_json_and_markdown(truth_store, tmp_path, capsys):
    mito = np.asarray(zarr.open_group(str(truth_store), mode="r")["crop1/mito"][...])
    sub = write_flat(tmp_path / "submission.zarr", {(1, "mito"): (mito, (8, 8, 8), (4, 4, 4))})
    out = tmp_path / "res" / "scores.json"
    assert sc.main(["--submission", str(sub), "--truth", str(truth_store), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["missing"] == ["crop1/er"] and data["labels"]["mito"]["score"] == 1.0
    md = out.with_suffix(".md").read_text()
    assert "| mito | instance | 1.0000 |" in md and "crop1/er" in md
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.json", "scores.md"]
    assert "**Overall score: 0.0000**" in capsys.readouterr().out
    assert sc.main(["--submission", str(tmp_path / "nope.zarr"), "--truth", str(truth_store)]) == 2
    assert "nope.zarr" in capsys.readouterr().err


def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        sc.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--submission", "--truth", "--out", "--labels", "--rules", "--test_manifest"):
        assert flag in text
