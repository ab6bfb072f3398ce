"""The official CellMap scorer's rules (``rules="official"``) against the stricter project rules.

Each test builds a tiny truth and submission by hand and works the official figure out in
its comments, from the rule itself (pooling, largest-id counting, skipping, resampling,
flooring of translations, ...); the figure is never taken from the implementation.
Every test fails if the rule it names is broken.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zarr

from auto3dseg.evaluation import score as sc
from auto3dseg.evaluation.resample import official_place
from converters.geometry import Grid

VS8 = (8.0, 8.0, 8.0)


def h(d_nm: float, voxel_size=VS8) -> float:
    """The challenge's normalisation, written out: 1.01 ** (-d / ||voxel_size||)."""
    return 1.01 ** (-d_nm / math.sqrt(sum(v * v for v in voxel_size)))


def cutoff(n: int) -> float:
    """The official too-many ratio, written out: 10 + 50·exp(-n / 5)."""
    return 10 + 50 * math.exp(-n / 5)


def write_store(path: Path, labels: dict, crop_dir=lambda c: f"crop{c}") -> Path:
    """Plain arrays ``<crop_dir>/<label>``; value ``(data, attrs)`` (attrs may lack keys)."""
    root = zarr.open_group(str(path), mode="w")
    for (crop, label), (data, attrs) in labels.items():
        arr = root.require_group(crop_dir(crop)).create_dataset(label, data=data, chunks=data.shape)
        arr.attrs.put(attrs)
    return path


def at(voxel_size, translation, data=None) -> dict:
    out = {"voxel_size": list(voxel_size), "translation": list(translation)}
    if data is not None:
        out["shape"] = list(data.shape)
    return out


def box(shape, lo, hi, value=1, dtype=np.uint16) -> np.ndarray:
    a = np.zeros(shape, dtype)
    a[tuple(slice(x, y) for x, y in zip(lo, hi))] = value
    return a


def score(sub, truth, rules="official", **kw):
    return sc.score_submission(sub, truth, rules=rules, echo_warnings=False, **kw)


def kinds(scores) -> set[tuple]:
    return {(w["crop"], w["label"], w["kind"]) for w in scores["warnings"]}


ORIGIN = (4.0, 4.0, 4.0)
ER = box((10, 10, 10), (0, 0, 0), (10, 10, 5), dtype=np.uint8)  # a semantic label scoring 1.0 when copied


# --------------------------------------------------------------------------------------
# Instance figures are pooled per class, not averaged over crops
# --------------------------------------------------------------------------------------
def test_instance_counts_and_hausdorff_are_pooled_per_class(tmp_path):
    cube = box((10, 10, 10), (2, 2, 2), (5, 5, 5))
    specks = cube.copy()
    specks[8, 8, 8] = specks[8, 0, 8] = 7           # two far, isolated extra objects, after the cube in scan order
    truth = write_store(tmp_path / "t.zarr", {(1, "mito"): (cube, at(VS8, ORIGIN)),
                                              (2, "mito"): (cube, at(VS8, ORIGIN)), (1, "er"): (ER, at(VS8, ORIGIN))})
    sub = write_store(tmp_path / "s.zarr", {(1, "mito"): (cube, at(VS8, ORIGIN)),
                                            (2, "mito"): (specks, at(VS8, ORIGIN)), (1, "er"): (ER, at(VS8, ORIGIN))})
    cap = 10 * 8 / 2                                  # half the shortest side: 40 nm
    # pooled: TP 2, FP 2, FN 0 → F1 = 4/6; distances: two exact matches (1.0) and two caps
    f1, haus = 4 / 6, (1 + 1 + 2 * h(cap)) / 4
    s = score(sub, truth)
    mito = s["labels"]["mito"]
    assert (mito["tp"], mito["fp"], mito["fn"]) == (2, 2, 0)
    assert mito["f1"] == pytest.approx(f1) and mito["hausdorff_norm"] == pytest.approx(haus)
    assert mito["score"] == pytest.approx(math.sqrt(f1 * haus))
    assert s["overall"]["score"] == pytest.approx(math.sqrt(math.sqrt(f1 * haus) * 1.0))
    # strict: the mean over crops of each crop's sqrt(F1 · H): crop 2 has F1 2/4, H (1 + 2 caps)/3
    crop2 = math.sqrt(0.5 * (1 + 2 * h(cap)) / 3)
    assert score(sub, truth, "strict")["labels"]["mito"]["score"] == pytest.approx((1.0 + crop2) / 2)


# --------------------------------------------------------------------------------------
# Too many predicted objects: counted against the largest truth id, skipped, 1.0 if always
# --------------------------------------------------------------------------------------
def _object_and_specks(n_specks: int) -> np.ndarray:
    pred = box((12, 12, 12), (0, 0, 0), (2, 2, 2))
    lattice = [(z, y, x) for z in (4, 6, 8, 10) for y in (4, 6, 8, 10) for x in (4, 6, 8, 10)]
    for z, y, x in lattice[:n_specks]:
        pred[z, y, x] = 1                             # isolated voxels: one component each
    return pred


def test_too_many_counts_truth_objects_as_the_largest_id(tmp_path):
    one_object_id3 = box((12, 12, 12), (0, 0, 0), (2, 2, 2), value=3)
    pred = _object_and_specks(59)                     # 60 components
    assert 60 / 3 <= cutoff(3) and 60 / 1 > cutoff(1)  # 20 ≤ 37.4 (largest id 3) but 60 > 50.9 (1 object)
    truth = write_store(tmp_path / "t.zarr", {(1, "ves"): (one_object_id3, at(VS8, ORIGIN)),
                                              (1, "er"): (box((12, 12, 12), (0, 0, 0), (1, 1, 1), dtype=np.uint8),
                                                          at(VS8, ORIGIN))})
    sub = write_store(tmp_path / "s.zarr", {(1, "ves"): (pred, at(VS8, ORIGIN))})
    s = score(sub, truth)
    ves = s["labels"]["ves"]
    # scored: the object (component 1 in scan order) matches and takes id 3; 59 false positives at
    # the cap of 48 nm. Component 3, the speck at (4, 4, 6), keeps its number, so "prediction == 3"
    # is the object plus that speck: sqrt(3² + 3² + 5²) · 8 = 52.5 nm from the object, capped at 48
    assert (ves["tp"], ves["fp"], ves["fn"]) == (1, 59, 0)
    f1, haus = 2 / (2 + 59), (h(48.0) + 59 * h(48.0)) / 60
    assert ves["score"] == pytest.approx(math.sqrt(f1 * haus))
    # strict: 1 distinct object, 60 > 50.9 → a failed crop scoring 0
    strict = score(sub, truth, "strict")
    assert strict["crops"][1]["status"] == "too_many_instances" and strict["labels"]["ves"]["score"] == 0.0


def test_a_class_skipped_in_every_crop_scores_one_and_warns(tmp_path):
    one_object = box((12, 12, 12), (0, 0, 0), (2, 2, 2))
    truth = write_store(tmp_path / "t.zarr", {(1, "ves"): (one_object, at(VS8, ORIGIN))})
    sub = write_store(tmp_path / "s.zarr", {(1, "ves"): (_object_and_specks(59), at(VS8, ORIGIN))})
    s = score(sub, truth)                              # 60 / 1 > 50.9: skipped, adds nothing
    assert s["crops"][0]["status"] == "skipped_too_many_instances"
    assert s["labels"]["ves"]["score"] == 1.0          # nothing pooled anywhere: the official 1.0
    assert {(1, "ves", "too_many_instances"), (1, "ves", "skipped_everywhere")} <= kinds(s)
    strict = score(sub, truth, "strict")
    assert strict["labels"]["ves"]["score"] == 0.0 and (1, "ves", "skipped_everywhere") in kinds(strict)


def test_a_skipped_crop_leaves_the_other_crops_figures(tmp_path):
    one_object = box((12, 12, 12), (0, 0, 0), (2, 2, 2))
    shifted = box((12, 12, 12), (0, 0, 1), (2, 2, 3))  # one voxel along x: Hausdorff 8 nm
    truth = write_store(tmp_path / "t.zarr", {(1, "ves"): (one_object, at(VS8, ORIGIN)),
                                              (2, "ves"): (one_object, at(VS8, ORIGIN))})
    sub = write_store(tmp_path / "s.zarr", {(1, "ves"): (_object_and_specks(59), at(VS8, ORIGIN)),
                                            (2, "ves"): (shifted, at(VS8, ORIGIN))})
    s = score(sub, truth)
    # only crop 2 counts: TP 1 → F1 1, H = h(8 nm)
    assert s["labels"]["ves"]["score"] == pytest.approx(math.sqrt(h(8.0)))


# --------------------------------------------------------------------------------------
# Missing labels, empty classes, overall
# --------------------------------------------------------------------------------------
def test_missing_instance_label_is_worse_than_an_empty_one(tmp_path):
    two = box((10, 10, 10), (1, 1, 1), (3, 3, 3))
    two[6:8, 6:8, 6:8] = 2
    one = box((10, 10, 10), (1, 1, 1), (3, 3, 3))
    truth = write_store(tmp_path / "t.zarr", {(1, "mito"): (one, at(VS8, ORIGIN)), (2, "mito"): (two, at(VS8, ORIGIN))})
    missing = write_store(tmp_path / "m.zarr", {(1, "mito"): (one, at(VS8, ORIGIN))})
    empty = write_store(tmp_path / "e.zarr", {(1, "mito"): (one, at(VS8, ORIGIN)),
                                              (2, "mito"): (np.zeros_like(two), at(VS8, ORIGIN))})
    # pooled TP 1, FN 2 → F1 = 2/4. Missing: the two objects count 0 each in H; empty: the cap (40 nm)
    s_missing, s_empty = score(missing, truth), score(empty, truth)
    assert s_missing["labels"]["mito"]["score"] == pytest.approx(math.sqrt(0.5 * (1 + 0 + 0) / 3))
    assert s_empty["labels"]["mito"]["score"] == pytest.approx(math.sqrt(0.5 * (1 + 2 * h(40.0)) / 3))
    assert (2, "mito", "missing_label") in kinds(s_missing)


def test_missing_semantic_label_counts_every_voxel_and_empty_classes_score_one(tmp_path):
    nothing = np.zeros((10, 10, 10), np.uint8)
    truth = write_store(tmp_path / "t.zarr", {(1, "er"): (ER, at(VS8, ORIGIN)), (2, "er"): (ER, at(VS8, ORIGIN)),
                                              (1, "ld"): (nothing.astype(np.uint16), at(VS8, ORIGIN))})
    sub = write_store(tmp_path / "s.zarr", {(1, "er"): (ER, at(VS8, ORIGIN)), (1, "ld"): (nothing, at(VS8, ORIGIN))})
    s = score(sub, truth)
    # crop 2 missing: all 1000 voxels are false negatives → IoU 500 / (500 + 1000)
    assert s["labels"]["er"]["fn"] == 1000 and s["labels"]["er"]["iou"] == pytest.approx(500 / 1500)
    assert s["labels"]["ld"]["score"] == 1.0          # nothing to find, nothing found
    assert s["overall"]["score"] == pytest.approx(math.sqrt(1.0 * 500 / 1500))


def test_overall_is_zero_without_a_semantic_class(tmp_path):
    cube = box((10, 10, 10), (2, 2, 2), (5, 5, 5))
    truth = write_store(tmp_path / "t.zarr", {(1, "mito"): (cube, at(VS8, ORIGIN))})
    assert score(truth, truth)["overall"]["score"] == 0.0          # sqrt(1 · 0)
    assert score(truth, truth, "strict")["overall"]["score"] == 1.0  # the mean of the kind present


# --------------------------------------------------------------------------------------
# Semantic: truth 255 and float predictions
# --------------------------------------------------------------------------------------
def test_truth_unknown_is_foreground_and_float_above_zero_counts(tmp_path):
    truth_er = np.zeros((1, 1, 4), np.uint8)
    truth_er[0, 0, :3] = (1, 1, 255)
    pred = np.array([[[0.9, 0.3, 0.0, 0.0]]], np.float32)
    truth = write_store(tmp_path / "t.zarr", {(1, "er"): (truth_er, at(VS8, ORIGIN))})
    sub = write_store(tmp_path / "s.zarr", {(1, "er"): (pred, at(VS8, ORIGIN))})
    # official: foreground truth {0, 1, 2} (255 too), prediction {0, 1} (0.3 > 0) → IoU 2/3
    s = score(sub, truth)
    assert (s["labels"]["er"]["tp"], s["labels"]["er"]["fn"]) == (2, 1)
    assert s["labels"]["er"]["iou"] == pytest.approx(2 / 3)
    assert {(1, "er", "truth_unknown"), (1, "er", "float_semantic")} <= kinds(s)
    # strict: voxel 2 ("unknown") left out → TP 2 of 2 → 1.0
    assert score(sub, truth, "strict")["labels"]["er"]["iou"] == 1.0


# --------------------------------------------------------------------------------------
# Placement: translation flooring, no translation / voxel size, resampling
# --------------------------------------------------------------------------------------
def test_translation_is_floored_onto_the_target_lattice(tmp_path):
    truth_er = np.zeros((2, 2, 8), np.uint8)
    truth_er[:, :, 2:4] = 1
    truth = write_store(tmp_path / "t.zarr", {(1, "er"): (truth_er, at(VS8, ORIGIN))})
    # a 2-voxel array whose first voxel is centred on truth voxel 2 (4 + 2·8 = 20 nm)
    sub = write_store(tmp_path / "s.zarr", {(1, "er"): (np.ones((2, 2, 2), np.uint8), at(VS8, (4.0, 4.0, 20.0)))})
    # official: 20 // 8 · 8 = 16, 16 − 4 = 12 nm → 12 // 8 = 1 voxel: lands on x 1..2
    # → TP x2 (4 voxels), FP x1 (4), FN x3 (4) → IoU 4/12
    assert score(sub, truth)["labels"]["er"]["iou"] == pytest.approx(1 / 3)
    assert score(sub, truth, "strict")["labels"]["er"]["iou"] == 1.0   # centres aligned


def test_no_translation_means_offset_zero_and_no_voxel_size_centre_crops(tmp_path):
    truth_er = np.zeros((4, 4, 4), np.uint8)
    truth_er[:2] = 1                                   # z 0..1: 32 voxels
    truth = write_store(tmp_path / "t.zarr", {(1, "er"): (truth_er, at(VS8, ORIGIN))})
    padded = np.pad(truth_er, ((1, 0), (0, 0), (0, 0)))  # one empty plane first, no translation
    sub = write_store(tmp_path / "s.zarr", {(1, "er"): (padded, {"voxel_size": list(VS8)})})
    # offset 0: the array's z 0..3 fill the crop, the truth's planes land on z 1..2
    # → TP 16 (z1), FP 16 (z2), FN 16 (z0) → IoU 1/3
    s = score(sub, truth)
    assert s["labels"]["er"]["iou"] == pytest.approx(1 / 3) and (1, "er", "no_translation") in kinds(s)
    with pytest.raises(sc.ScoringInputError, match="translation"):
        score(sub, truth, "strict")
    # no attributes at all: 6 planes centre-cropped to 4 ((6 − 4) // 2 = 1 off the start) → exact
    both = write_store(tmp_path / "b.zarr", {(1, "er"): (np.pad(truth_er, ((1, 1), (0, 0), (0, 0))), {})})
    s = score(both, truth)
    assert s["labels"]["er"]["iou"] == 1.0 and (1, "er", "no_voxel_size") in kinds(s)


def test_resampled_array_starts_at_its_floored_translation(tmp_path):
    # target: 8 nm, voxel 0 centred at 4 nm, 2 × 2 × 6. Truth along x: [0, 1, 1, 2, 2, 0]
    truth_mito = np.zeros((2, 2, 6), np.uint16)
    truth_mito[:, :, 1:3], truth_mito[:, :, 3:5] = 1, 2
    truth = write_store(tmp_path / "t.zarr", {(1, "mito"): (truth_mito, at(VS8, ORIGIN)),
                                              (1, "er"): (ER, at(VS8, ORIGIN))})
    # submission at 4 nm covering truth x 1..4 exactly: fine voxel 0 centred at 8 + 2 = 10 nm
    fine = np.zeros((4, 4, 8), np.uint16)
    fine[:, :, :4], fine[:, :, 4:] = 5, 6
    sub = write_store(tmp_path / "s.zarr", {(1, "mito"): (fine, at((4.0, 4.0, 4.0), (2.0, 2.0, 10.0))),
                                            (1, "er"): (ER, at(VS8, ORIGIN))})
    # official: halved to x [5, 5, 6, 6]; 10 // 8 · 8 = 8, 8 − 4 = 4 nm → 0 voxels: placed at x 0..3,
    # one voxel early. Each object still overlaps its own (IoU 1/3, best total), shifted by 8 nm = cap
    assert official_place(fine, (4.0, 4.0, 4.0), (2.0, 2.0, 10.0), Grid(ORIGIN, VS8, (2, 2, 6)),
                          "instance")[0, 0].tolist() == [5, 5, 6, 6, 0, 0]
    s = score(sub, truth)
    mito = s["labels"]["mito"]
    assert (mito["tp"], mito["fp"], mito["fn"]) == (2, 0, 0)
    assert mito["score"] == pytest.approx(math.sqrt(1.0 * h(8.0)))
    assert score(sub, truth, "strict")["labels"]["mito"]["score"] == 1.0   # centres aligned: exact


def test_coarser_instance_array_is_repeated_from_index_zero():
    coarse = np.array([1, 2, 0, 3], np.uint16).reshape(1, 1, 4).repeat(2, 0).repeat(2, 1)
    placed = official_place(coarse, (16.0, 16.0, 16.0), (8.0, 8.0, 8.0), Grid(ORIGIN, VS8, (4, 4, 8)), "instance")
    # nearest ×2, first voxel at index 0; 8 // 8 · 8 = 8, 8 − 4 = 4 nm → offset 0
    assert placed[0, 0].tolist() == [1, 1, 2, 2, 0, 0, 3, 3] and placed.dtype == np.uint16


# --------------------------------------------------------------------------------------
# Hausdorff of an unmatched truth object against a component with its number
# --------------------------------------------------------------------------------------
def test_unmatched_truth_is_measured_against_the_component_with_its_number(tmp_path):
    truth_mito = np.zeros((12, 12, 16), np.uint16)
    truth_mito[1, 1, 0:2] = 1                          # unmatched: nothing predicted there
    truth_mito[1, 1, 10:12] = 2
    pred = np.zeros_like(truth_mito)
    pred[1, 1, 4:6] = 9                                # first in scan order → component 1
    pred[1, 1, 10:12] = 9                              # component 2, matches truth 2
    truth = write_store(tmp_path / "t.zarr", {(1, "mito"): (truth_mito, at(VS8, ORIGIN))})
    sub = write_store(tmp_path / "s.zarr", {(1, "mito"): (pred, at(VS8, ORIGIN))})
    rec = score(sub, truth)["crops"][0]
    # TP 1, FP 1, FN 1. Distances: truth 1 vs component 1 (x 0..1 vs 4..5: 4 voxels = 32 nm,
    # under the 48 nm cap), truth 2 exact (0), the unmatched component at the cap
    assert (rec["tp"], rec["fp"], rec["fn"], rec["n_hausdorff"]) == (1, 1, 1, 3)
    assert rec["hausdorff_norm_sum"] == pytest.approx(h(32.0) + 1.0 + h(48.0))


# --------------------------------------------------------------------------------------
# Submission layout: bare crop folders, nested zarr, groups
# --------------------------------------------------------------------------------------
def test_bare_crop_folders(tmp_path):
    truth = write_store(tmp_path / "t.zarr", {(1, "er"): (ER, at(VS8, ORIGIN)), (2, "er"): (ER, at(VS8, ORIGIN))})
    bare = write_store(tmp_path / "b.zarr", {(1, "er"): (ER, at(VS8, ORIGIN)), (2, "er"): (ER, at(VS8, ORIGIN))},
                       crop_dir=str)
    s = score(bare, truth)                             # no crop<N> matched: 1/ and 2/ are read as crop1/, crop2/
    assert s["labels"]["er"]["iou"] == 1.0
    assert {(1, "er", "bare_crop_dir"), (2, "er", "bare_crop_dir")} <= kinds(s)
    strict = score(bare, truth, "strict")
    assert strict["labels"]["er"]["iou"] == 0.0 and (1, "er", "bare_crop_dir") in kinds(strict)
    # with crop1/ present, the bare 2/ is not renamed: crop 2 missing → IoU 500 / (500 + 1000)
    mixed = write_store(tmp_path / "m.zarr", {(1, "er"): (ER, at(VS8, ORIGIN))})
    write_store(tmp_path / "x.zarr", {(2, "er"): (ER, at(VS8, ORIGIN))}, crop_dir=str)
    (tmp_path / "x.zarr" / "2").rename(mixed / "2")
    assert score(mixed, truth)["labels"]["er"]["iou"] == pytest.approx(500 / 1500)


def test_one_nested_zarr_folder_is_the_root(tmp_path):
    truth = write_store(tmp_path / "t.zarr", {(1, "er"): (ER, at(VS8, ORIGIN))})
    zp = tmp_path / "deep.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for f in sorted(truth.rglob("*")):
            if f.is_file():
                zf.write(f, f"outer/inner.zarr/{f.relative_to(truth).as_posix()}")
    assert score(zp, truth)["labels"]["er"]["iou"] == 1.0
    with pytest.raises(sc.ScoringInputError):
        score(zp, truth, "strict")


# --------------------------------------------------------------------------------------
# Test manifest: target grids and labels to expect
# --------------------------------------------------------------------------------------
def test_manifest_gives_the_target_grid(tmp_path):
    # the truth array's attributes are off by 80 nm; the manifest has the real grid
    truth = write_store(tmp_path / "t.zarr", {(1, "er"): (ER, at(VS8, (84.0, 4.0, 4.0)))})
    sub = write_store(tmp_path / "s.zarr", {(1, "er"): (ER, at(VS8, ORIGIN))})
    manifest = tmp_path / "m.csv"
    manifest.write_text("crop_name,dataset,class_label,voxel_size,translation,shape\n"
                        "1,ds,er,[8.0;8.0;8.0],[4.0;4.0;4.0],[10;10;10]\n"
                        "1,ds,mito,[8.0;8.0;8.0],[4.0;4.0;4.0],[10;10;10]\n")
    s = score(sub, truth, test_manifest=manifest)
    assert s["labels"]["er"]["iou"] == 1.0
    assert {(1, "er", "grid_mismatch"), (1, "mito", "no_truth")} <= kinds(s)
    # without it, the truth's attributes: the submission is 10 planes away → no overlap
    assert score(sub, truth)["labels"]["er"]["iou"] == 0.0


# --------------------------------------------------------------------------------------
# Traps: warned under both rule sets, in the JSON, the Markdown and on stderr
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rules", ["official", "strict"])
def test_every_trap_is_warned_naming_crop_and_label(tmp_path, rules, capsys):
    origin = (4.0, 104.0, 204.0)
    ves = box((10, 10, 10), (1, 1, 1), (3, 3, 3))
    ves[6:8, 6:8, 6:8] = 2
    truth = write_store(tmp_path / "t.zarr", {
        (1, "er"): (ER, at(VS8, origin)), (1, "cyto"): (ER, at(VS8, origin)),
        (1, "mito"): (ves, at(VS8, origin)), (1, "ves"): (ves, at(VS8, origin)),
        (1, "ld"): (box((12, 12, 12), (0, 0, 0), (2, 2, 2)), at(VS8, (4.0, 4.0, 4.0))),
        (2, "er"): (ER, at(VS8, origin))})
    wrapped = np.zeros((10, 10, 10), np.uint8)
    wrapped[1:3, 1:3, 1:3] = 1
    wrapped[6:8, 6:8, 6:8] = 1                         # object 257 written as 1: two pieces, one id
    wrapped[0, 9, 9] = 255
    sub = write_store(tmp_path / "s.zarr", {
        (1, "er"): (ER, at(VS8, origin[::-1])),        # translation written x, y, z: outside the crop
        (1, "ves"): (wrapped, at(VS8, origin)),
        (1, "ld"): (_object_and_specks(59), at(VS8, (4.0, 4.0, 4.0)))})   # 60 objects for 1
    zarr.open_group(str(sub / "crop1"), mode="a").require_group("mito").create_dataset("s0", data=ves)
    write_store(tmp_path / "x.zarr", {(2, "er"): (ER, at(VS8, origin))}, crop_dir=str)
    (tmp_path / "x.zarr" / "2").rename(sub / "2")     # a bare crop folder beside crop1/
    s = sc.score_submission(sub, truth, rules=rules)
    expected = {(1, "er", "axis_order"), (1, "mito", "label_is_group"), (2, "er", "bare_crop_dir"),
                (1, "ves", "uint8_wrapped"), (1, "cyto", "missing_label"), (2, "er", "missing_label"),
                (1, "ld", "too_many_instances"), (1, "ld", "skipped_everywhere")}
    assert expected <= kinds(s)
    err = capsys.readouterr().err
    md = sc.format_scores_markdown(s)
    assert "## Warnings" in md
    for crop, label, kind in expected:
        assert f"warning: crop{crop}/{label} [{kind}]" in err
        assert f"- crop{crop}/{label} [{kind}]" in md
    assert all(set(w) == {"crop", "label", "kind", "message"} and w["message"] for w in s["warnings"])


def test_label_mask_multiplies_truth_and_prediction(tmp_path):
    er_mask = np.zeros((10, 10, 10), np.uint8)
    er_mask[:, :, :7] = 1                              # x 7..9 is outside the annotated region
    truth = write_store(tmp_path / "t.zarr", {(1, "er"): (ER, at(VS8, ORIGIN)),
                                              (1, "er_mask"): (er_mask, at(VS8, ORIGIN))})
    pred = ER.copy()
    pred[:, :, 5:] = 1                                 # FP on x 5..9: 100 voxels per plane of x
    sub = write_store(tmp_path / "s.zarr", {(1, "er"): (pred, at(VS8, ORIGIN)),
                                            (1, "er_mask"): (er_mask, at(VS8, ORIGIN))})
    # masked: FP only on x 5..6 → TP 500, FP 200 → IoU 5/7 (unmasked, strict: 500 / 1000)
    assert score(sub, truth)["labels"]["er"]["iou"] == pytest.approx(5 / 7)
    assert score(sub, truth, "strict")["labels"]["er"]["iou"] == pytest.approx(1 / 2)
