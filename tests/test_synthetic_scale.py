"""Tests of the procedural synthetic CellMap tree (``python -m converters.cellmap.synthetic --scale N``)."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

from converters.cellmap import synthetic as S
from converters.cellmap.synthetic.scale_classes import TESTED_CLASSES
from converters.cellmap.synthetic.scale_plan import DEMO_TEST_VOXELS, DEMO_TRAIN_VOXELS, plan_tree
from datalists.cellmap_classes import CELLMAP_CLASSES

GT, EM = S.GT_PATH, S.EM_PATH
SCALE = 3.0


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale") / "tree"
    summary = S.generate_synthetic_cellmap(out, seed=0, scale=SCALE, block=64)  # many blocks
    return out, summary


def _checksums(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob(".zarray")):
        arr = zarr.open_array(str(p.parent), mode="r")
        out[str(p.parent.relative_to(root))] = hashlib.sha1(arr[...].tobytes()).hexdigest()
    return out


def _store(out: Path, ds: str) -> zarr.Group:
    return zarr.open_group(str(out / ds / f"{ds}.zarr"), mode="r")


def _crop(out: Path, summary: dict, name: str) -> zarr.Group:
    return _store(out, summary["crops"][name]["dataset"])[f"{GT}/{name}"]


def _vec(text: str, typ=float) -> list:
    return [typ(v) for v in text.strip("[]").split(";")]


def _box(vs, tr, shape) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(tr) - np.asarray(vs) / 2.0
    return lo, lo + np.asarray(vs) * np.asarray(shape)


# ------------------------------------------------------------------------------ CLI, sizes
def test_help_lists_new_flags(capsys):
    with pytest.raises(SystemExit):
        S.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--scale", "--big_test_crop", "--workers", "--block", "--no_progress"):
        assert flag in text


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        S.generate_synthetic_cellmap(tmp_path / "a", scale=0.5)
    with pytest.raises(ValueError, match="big_test_crop"):
        S.generate_synthetic_cellmap(tmp_path / "b", scale=1, big_test_crop=64)
    assert S.main(["--out", str(tmp_path / "c"), "--scale", "2", "--block", "100"]) == 2


@pytest.mark.parametrize("scale", [1.5, 3.0, 16.0, 64.0, 256.0])
def test_size_rule(scale):
    plan = plan_tree(scale, seed=1)
    t = plan.totals()
    assert abs(t["train_gt_voxels"] / (scale * DEMO_TRAIN_VOXELS) - 1) < 0.15
    assert abs(t["test_label_voxels"] / (scale * DEMO_TEST_VOXELS) - 1) < 0.15
    assert len(plan.crops) == max(6, round(6 * scale**0.5))
    assert len(plan.tests) == min(16, round(2 * scale**0.5))
    assert len(plan.datasets) == -(-(len(plan.crops) + len(plan.tests)) // 8)
    assert min(min(c.shape) for c in plan.crops) >= 24
    sizes = {c.voxel_size[0] for c in plan.crops}
    assert 8.0 in sizes and (scale < 16 or sizes == {4.0, 8.0, 16.0})
    for d in plan.datasets:  # EM reaches 32 nm, and covers every crop
        assert d.voxel_nm * 2 ** (d.levels - 1) >= 32
        lo, hi = d.box
        for n in d.needs:
            assert np.all(np.asarray(n.lo) >= lo) and np.all(np.asarray(n.hi) <= hi)


def test_tree_size_in_summary(tree):
    out, summary = tree
    t = summary["totals"]
    assert abs(t["train_gt_voxels"] / (SCALE * DEMO_TRAIN_VOXELS) - 1) < 0.15
    assert t["train_gt_voxels"] == sum(int(np.prod(c["shape"])) for c in summary["crops"].values())
    assert t["em_s0_voxels"] == sum(int(np.prod(d["shape"])) for d in summary["datasets"].values())
    assert json.loads((out / "scale.json").read_text())["totals"] == t
    assert (out / "README.md").read_text().startswith("# Procedural synthetic CellMap tree")
    assert not (out / ".scenes").exists()


# ------------------------------------------------------------------------------ determinism
def test_same_bytes_whatever_block_size_and_workers(tree, tmp_path):
    out, summary = tree
    again = tmp_path / "again"
    S.generate_synthetic_cellmap(again, seed=0, scale=SCALE, block=128, workers=2)
    ref = _checksums(out)
    assert len(ref) > 100 and _checksums(again) == ref
    assert (out / "scale.json").read_text() == (again / "scale.json").read_text()
    assert (out / "test_crop_manifest.csv").read_text() == (again / "test_crop_manifest.csv").read_text()
    split = (again / "datasplit.csv").read_text().replace(str(again.resolve()), str(out.resolve()))
    assert split == (out / "datasplit.csv").read_text()


def test_other_seed_differs_and_big_test_crop(tree, tmp_path):
    out, _ = tree
    other = tmp_path / "seed1"
    summary = S.generate_synthetic_cellmap(other, seed=1, scale=SCALE, big_test_crop=72)
    a = _store(out, "synth-1")[f"{EM}/s0"][:]
    b = _store(other, "synth-1")[f"{EM}/s0"][:]
    assert a.shape != b.shape or (a != b).mean() > 0.5
    assert b.std() > 15
    big = summary["test_crops"]["crop2001"]
    assert big["dataset"] == "synth-big" and summary["datasets"]["synth-big"]["crops"] == []
    assert sorted(lab["label"] for lab in big["labels"]) == sorted(TESTED_CLASSES)
    assert {(tuple(lab["voxel_size"]), tuple(lab["shape"])) for lab in big["labels"]} == {((8.0,) * 3, (72,) * 3)}
    assert summary["totals"]["big_test_label_voxels"] == 48 * 72**3
    em = _store(other, "synth-big")[f"{EM}/s0"]
    lo, hi = _box(big["labels"][0]["voxel_size"], big["labels"][0]["translation"], big["labels"][0]["shape"])
    assert np.all(lo >= -4.0) and np.all(hi <= np.asarray(em.shape) * 8.0 - 4.0)
    truth = zarr.open_group(str(other / "test_truth.zarr"), mode="r")["crop2001"]
    assert truth["cyto"][:].any() and truth["cell"].dtype == np.uint32


# ------------------------------------------------------------------------------ EM
def test_em_pyramid(tree):
    out, summary = tree
    for ds, rec in summary["datasets"].items():
        em = _store(out, ds)[EM]
        sets = em.attrs["multiscales"][0]["datasets"]
        v = rec["em_voxel_nm"]
        assert len(sets) == rec["levels"] and sets[-1]["coordinateTransformations"][0]["scale"][0] >= 32
        for k, s in enumerate(sets):
            scale, trans = (t[key] for t, key in zip(s["coordinateTransformations"], ("scale", "translation")))
            assert scale == [v * 2**k] * 3 and trans == [(v * 2**k - v) / 2] * 3
    s0, s1 = (_store(out, "synth-1")[f"{EM}/s{k}"][:] for k in (0, 1))
    np.testing.assert_array_equal(s1, S.downsample_mean(s0, 2))


# ------------------------------------------------------------------------------ annotation
def test_every_tested_class_is_annotated_with_voxels(tree):
    out, summary = tree
    shown = {n for c in summary["crops"].values() for n, v in c["present_voxels"].items() if v > 0}
    assert shown == set(TESTED_CLASSES)
    name = next(n for n, c in summary["crops"].items() if c["mode"] == "full")
    crop = _crop(out, summary, name)
    for cls in ("np", "mt_in", "eres_lum", "mito_ribo", "hchrom"):
        assert np.count_nonzero(crop[f"{cls}/s0"][:]) == summary["crops"][name]["present_voxels"][cls]


def test_partial_annotation(tree):
    out, summary = tree
    partial = [n for n, c in summary["crops"].items() if c["mode"] == "partial"]
    assert partial
    for name in partial:
        rec, crop = summary["crops"][name], _crop(out, summary, name)
        assert rec["listed_unannotated"] and set(rec["annotated"]).isdisjoint(rec["listed_unannotated"])
        n = int(np.prod(rec["shape"]))
        for cls in rec["listed_unannotated"]:
            arr = crop[f"{cls}/s0"]
            assert arr.nchunks_initialized == 0 and arr.fill_value == 255
            assert arr.attrs["cellmap"]["annotation"]["complement_counts"] == {"unknown": n}
        for cls in rec["annotated"]:
            arr = crop[f"{cls}/s0"]
            assert arr.nchunks_initialized == arr.nchunks
            absent = arr.attrs["cellmap"]["annotation"]["complement_counts"]["absent"]
            assert absent == n - rec["present_voxels"][cls]
        names = crop.attrs["cellmap"]["annotation"]["class_names"]
        assert sorted(names) == sorted(["all", *rec["annotated"], *rec["listed_unannotated"]])


def _expected_all(crop: zarr.Group, annotated: list[str]) -> np.ndarray:
    """Most specific annotated class per voxel, from the class arrays (groups broad first)."""
    classes = sorted((CELLMAP_CLASSES[n] for n in annotated), key=lambda c: (not c.parts, -len(c.parts)))
    out = None
    for c in classes:
        data = crop[f"{c.name}/s0"][:] > 0
        out = np.zeros(data.shape, np.uint8) if out is None else out
        out[data] = c.cellmap_id
    return out


def test_all_is_consistent_with_the_class_arrays(tree):
    out, summary = tree
    modes = {}
    for name, c in summary["crops"].items():
        modes.setdefault(c["mode"], name)
    assert set(modes) == {"full", "partial", "group_only"}
    for mode, name in modes.items():
        crop = _crop(out, summary, name)
        annotated = summary["crops"][name]["annotated"]
        all_ = crop["all/s0"][:]
        np.testing.assert_array_equal(all_, _expected_all(crop, annotated), err_msg=name)
        if mode == "group_only":  # group ids where their parts were not annotated
            groups = {CELLMAP_CLASSES[n].cellmap_id for n in annotated}
            assert set(np.unique(all_).tolist()) - {0} <= groups
            assert all(CELLMAP_CLASSES[n].parts for n in annotated)


def test_instance_arrays(tree):
    out, summary = tree
    name = next(n for n, c in summary["crops"].items() if c["mode"] == "full")
    crop = _crop(out, summary, name)
    for cls in ("mito", "ves", "np", "mt", "nuc", "cell", "endo", "lyso", "ld", "perox"):
        arr = crop[f"{cls}/s0"]
        assert arr.dtype in (np.uint16, np.uint32)
        ids = arr[:]
        parts = np.zeros(ids.shape, bool)
        for p in CELLMAP_CLASSES[cls].parts:  # the instance mask is exactly the group's parts
            part = next(c.name for c in CELLMAP_CLASSES.values() if c.cellmap_id == p)
            if part in TESTED_CLASSES:
                parts |= crop[f"{part}/s0"][:] > 0
        np.testing.assert_array_equal(ids > 0, parts, err_msg=cls)
    ves = crop["ves/s0"][:]
    comps, n = ndimage.label(ves > 0)
    assert n >= 2 and len(np.unique(ves[ves > 0])) >= 2
    for k in range(1, n + 1):  # one id per separate vesicle
        assert len(np.unique(ves[comps == k])) == 1


# ------------------------------------------------------------------------------ test crops
def test_manifest_truth_and_em_coverage(tree):
    out, summary = tree
    rows = list(csv.DictReader((out / "test_crop_manifest.csv").read_text().splitlines()))
    assert {r["class_label"] for r in rows} == set(TESTED_CLASSES)
    assert len({r["voxel_size"] for r in rows}) >= 2
    truth = zarr.open_group(str(out / "test_truth.zarr"), mode="r")
    boxes: dict[str, set] = {}
    for r in rows:
        vs, tr, shape = _vec(r["voxel_size"]), _vec(r["translation"]), _vec(r["shape"], int)
        a = truth[f"crop{r['crop_name']}/{r['class_label']}"]
        assert list(a.shape) == shape and a.attrs["voxel_size"] == vs and a.attrs["translation"] == tr
        assert a.dtype == (np.uint32 if CELLMAP_CLASSES[r["class_label"]].instance else np.uint8)
        reported = next(lab["present_voxels"] for lab in summary["test_crops"][f"crop{r['crop_name']}"]["labels"]
                        if lab["label"] == r["class_label"])
        assert np.count_nonzero(a[:]) == reported
        lo, hi = _box(vs, tr, shape)
        boxes.setdefault(r["crop_name"], set()).add((tuple(lo), tuple(hi)))
        em = _store(out, r["dataset"])[EM]
        s0 = em.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
        em_lo, em_hi = _box(s0[0]["scale"], s0[1]["translation"], em["s0"].shape)
        assert np.all(lo >= em_lo) and np.all(hi <= em_hi), r
        assert not (out / r["dataset"] / f"{r['dataset']}.zarr" / GT / f"crop{r['crop_name']}").exists()
    assert all(len(v) == 1 for v in boxes.values())  # one physical ROI per crop
    empty = sum(lab["present_voxels"] == 0 for t in summary["test_crops"].values() for lab in t["labels"])
    assert empty == summary["totals"]["empty_test_labels"]  # many at this scale: tiny ROIs


def test_offgrid_crops(tree):
    out, summary = tree
    plan = plan_tree(SCALE, seed=0)
    assert any(summary["crops"][c.name]["off_grid"] for c in plan.crops)
    for c in plan.crops:
        e = summary["datasets"][c.dataset]["em_voxel_nm"]
        level_trans = (c.voxel_size[0] - e) / 2.0
        on = all(((t - level_trans) / c.voxel_size[0]).is_integer() for t in c.translation)
        assert on != summary["crops"][c.name]["off_grid"], c.name


# ------------------------------------------------------------------------------ the converter
def test_converter_accepts_the_tree(tree, tmp_path):
    from converters.cellmap.convert import main as convert

    out, summary = tree
    dst = tmp_path / "nifti"
    rc = convert(["--datasplit", str(out / "datasplit.csv"), "--test_manifest", str(out / "test_crop_manifest.csv"),
                  "--output_dir", str(dst), "--num_folds", "2", "--workers", "1", "--no_progress"])
    assert rc == 0
    report = json.loads((dst / "conversion_report.json").read_text())
    assert report["summary"]["failed"] == 0
    assert report["summary"]["converted"] == len(summary["crops"]) + len(summary["test_crops"])
    table = json.loads((dst / "datalist.json").read_text())["class_table"]
    assert {c["name"] for c in table} == set(TESTED_CLASSES)


def test_every_annotated_class_is_in_its_training_channel(tmp_path, capsys):
    """On the scale-2 tree (seed 0), 3133 of 7244 `er` voxels of a crop were stored as `er_mem_all`
    and trained as "not er", and a group-only crop's nucleus was stored as `er` where the two
    overlap (3617 of 4721 voxels), without a word (probe C2). Every class's truth must now be in
    its channel, and nothing outside it, wherever a crop's labels can be compared voxel by voxel."""
    import nibabel as nib

    from auto3dseg.engine.transforms import channel_members
    from converters.cellmap.convert import main as convert

    tree, nifti = tmp_path / "tree", tmp_path / "nifti"
    S.generate_synthetic_cellmap(tree, seed=0, scale=2.0)
    assert convert(["--datasplit", str(tree / "datasplit.csv"), "--output_dir", str(nifti), "--num_folds", "2",
                    "--workers", "0", "--no_progress"]) == 0
    assert " are both annotated and share " not in capsys.readouterr().err  # resolved, not only warned
    table = json.loads((nifti / "datalist.json").read_text())["class_table"]
    members = dict(zip([c["name"] for c in table], channel_members(table)))
    checked = 0
    for rec in json.loads((nifti / "conversion_report.json").read_text())["crops"]:
        grid = rec["output_grid"]
        if len(rec["items"]) != 1 or grid["shape"] != rec["gt_shape"] or grid["spacing"] != rec["gt_voxel_size"]:
            continue  # resampled: voxels cannot be compared one to one
        label = np.asarray(nib.load(str(nifti / rec["items"][0]["label"])).dataobj).T
        crop = zarr.open_group(rec["gt_zarr"], mode="r")[rec["gt_group"]]
        for name in rec["annotated"]:
            if name not in crop:
                continue
            values = crop[name]["s0"][:]
            truth = (values > 0) & (values != 255) if CELLMAP_CLASSES[name].instance else values == 1
            channel = np.isin(label, members[name]) & (label != 255)
            assert not (truth & ~channel).any() and not (channel & ~truth).any(), (rec["name"], name)
            checked += 1
        if rec["name"] == "synth-1_crop3":  # group-only: nuc and er overlap, read from the class arrays
            assert any("the voxels in both take the class of what they share" in w for w in rec["warnings"])
    assert checked > 60

    # a conversion by an older version (label_rules 1) is named by the datalist's check, and the
    # crops it labelled otherwise convert again when the converter runs again; the others resume
    from datalists.validate import validate_datalist

    dl_path, record = nifti / "datalist.json", nifti / "records" / "synth-1_crop3.json"
    assert json.loads(dl_path.read_text())["label_rules"] == 2
    dl = json.loads(dl_path.read_text())
    del dl["label_rules"]
    said = [w for w in validate_datalist(dl, nifti)["warnings"] if "label_rules" in w]
    assert len(said) == 1 and "nuc and er" in said[0], said
    rec = json.loads(record.read_text())
    record.write_text(json.dumps({k: v for k, v in rec.items() if k != "label_rules"}))
    capsys.readouterr()
    assert convert(["--datasplit", str(tree / "datasplit.csv"), "--output_dir", str(nifti), "--num_folds", "2",
                    "--workers", "0", "--no_progress"]) == 0
    assert "synth-1_crop3: converted by an older version" in capsys.readouterr().err
    again = {r["name"]: r.get("resumed") for r in json.loads((nifti / "conversion_report.json").read_text())["crops"]}
    assert not again["synth-1_crop3"] and sum(bool(v) for v in again.values()) == len(again) - 1, again


def test_a_crop_read_from_class_arrays_says_why_when_the_overlapping_classes_are_not_selected(tmp_path):
    """crop3 annotates nuc and er (overlapping groups) and has an 'all' array: it is read from its
    class arrays even when neither is selected, and its warning said '(no all array with data)'."""
    from converters.cellmap.convert import main as convert

    tree, nifti = tmp_path / "tree", tmp_path / "nifti"
    S.generate_synthetic_cellmap(tree, seed=0, scale=2.0)
    assert convert(["--datasplit", str(tree / "datasplit.csv"), "--output_dir", str(nifti), "--num_folds", "2",
                    "--workers", "0", "--no_progress", "--classes", "endo"]) == 0
    rec = json.loads((nifti / "records" / "synth-1_crop3.json").read_text())
    assert "all" in zarr.open_group(rec["gt_zarr"], mode="r")[rec["gt_group"]]
    composed = [w for w in rec["warnings"] if w.startswith("labels composed from")]
    assert len(composed) == 1 and "er and nuc" in composed[0] and "no 'all' array" not in composed[0], composed
