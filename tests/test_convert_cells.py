"""The 2-D cell converter (converters.cells.convert) on the built-in synthetic cells."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from auto3dseg.evaluation.cellseg import score_image
from auto3dseg.postprocess.cells import postprocess_cells
from converters.cells import convert as cc
from converters.cells.images import normalise_image, read_cell_image
from datalists.validate import validate_datalist

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cells2d"


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_datalist_is_valid_2d_and_complete(converted_cells, synthetic_cells):
    out, report = converted_cells
    dl = json.loads((out / "datalist.json").read_text())
    summary = validate_datalist(out / "datalist.json")
    cases = json.loads((synthetic_cells / "cases.json").read_text())["cases"]
    labelled = [s for s, c in cases.items() if c["labelled"]]
    tests = [s for s, c in cases.items() if not c["labelled"]]
    assert dl["kind"] == "cells2d" and dl["spatial_dims"] == 2 and summary["num_folds"] == 2
    assert [r["name"] for r in dl["class_table"]] == ["cell_interior", "cell_contact", "cell"]
    assert sorted(Path(t["image"]).name for t in dl["testing"]) == sorted(f"{s}.nii.gz" for s in tests)
    assert report["summary"]["converted"] == len(cases) and report["summary"]["skipped"] == 0
    assert all(it["annotated_mask"] == 0b111 for it in dl["training"])
    items = json.loads((out / "datalist_items.json").read_text())
    assert {m["stem"] for m in items.values() if m["usage"] == "train"} == set(labelled)


def test_large_image_is_tiled_with_overlap_in_one_fold(converted_cells):
    out, _ = converted_cells
    dl = json.loads((out / "datalist.json").read_text())
    items = json.loads((out / "datalist_items.json").read_text())
    tiles = [it for it in dl["training"] if "cell_09_large_t" in it["image"]]
    assert len(tiles) > 1 and len({t["fold"] for t in tiles}) == 1
    boxes = [(items[t["image"]]["tile_start"], items[t["image"]]["tile_stop"]) for t in tiles]
    covered = np.zeros(items[tiles[0]["image"]]["original_shape"], bool)
    for (y0, x0), (y1, x1) in boxes:
        assert (y1 - y0) * (x1 - x0) <= 300_000
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert boxes[1][0][1] < boxes[0][1][1], "neighbouring tiles overlap"


def test_nifti_layout_is_x_y_1_channel_and_matches_the_normalised_image(converted_cells, synthetic_cells):
    out, _ = converted_cells
    cases = json.loads((synthetic_cells / "cases.json").read_text())["cases"]
    case = cases["cell_04_4ch"]  # channel-first, 4 channels, uint16
    img = nib.load(str(out / "images" / "cell_04_4ch.nii.gz"))
    data = np.asarray(img.dataobj)
    h, w = case["height"], case["width"]
    assert data.shape == (w, h, 1, 3) and data.dtype == np.uint8
    expected, _ = normalise_image(read_cell_image(synthetic_cells / "images" / case["file"])[0])
    assert np.array_equal(data[:, :, 0, :], np.transpose(expected, (1, 0, 2)))  # x = column, y = row
    lab = np.asarray(nib.load(str(out / "labels" / "cell_04_4ch.nii.gz")).dataobj)
    assert lab.shape == (w, h, 1) and set(np.unique(lab)) <= {0, 1, 2}


def test_monai_loader_reads_three_channel_2d_images(converted_cells):
    from auto3dseg.engine.transforms import validation_transforms

    out, _ = converted_cells
    cfg = {"spatial_dims": 2, "intensity": {"mode": "range", "a_min": 0, "a_max": 255}, "class_ids": [1, 2, 3]}
    d = validation_transforms(cfg)({"image": str(out / "images" / "cell_02_he.nii.gz"),
                                    "label": str(out / "labels" / "cell_02_he.nii.gz"), "annotated_mask": 7})
    assert tuple(d["image"].shape) == (3, 224, 224) and tuple(d["label"].shape) == (1, 224, 224)
    assert 0.0 <= float(d["image"].min()) and float(d["image"].max()) <= 1.0


def test_instances_kept_for_scoring_equal_the_input_masks(converted_cells, synthetic_cells):
    out, _ = converted_cells
    for f in sorted((synthetic_cells / "labels").glob("*_label.tiff")):
        assert np.array_equal(tifffile.imread(out / "instances" / f.name), tifffile.imread(f)), f.name


def test_targets_round_trip_to_the_instances(converted_cells, tmp_path):
    out, _ = converted_cells
    report = postprocess_cells([out / "labels"], tmp_path, progress=False)
    assert not report.failed
    scored = 0
    for f in sorted((out / "instances").glob("*_label.tiff")):
        pred = tmp_path / f.name
        if not pred.is_file():  # tiled: scored through its tiles elsewhere
            continue
        assert score_image(tifffile.imread(f), tifffile.imread(pred))["f1"] >= 0.98, f.name
        scored += 1
    assert scored >= 8


def test_report_says_what_was_done_to_each_image(converted_cells):
    out, report = converted_cells
    rows = {r["stem"]: r for r in report["images"]}
    assert any("first 3 of 4" in n for n in rows["cell_04_4ch"]["notes"])
    assert any("grayscale repeated" in n for n in rows["cell_00_fluo16"]["notes"])
    assert rows["cell_04_4ch"]["original_shape"] == [4, 192, 160] and rows["cell_04_4ch"]["shape"] == [192, 160]
    md = (out / "conversion_report.md").read_text()
    assert "cell_09_large" in md and "tiles" in md


@pytest.fixture()
def bad_tree(synthetic_cells, tmp_path) -> Path:
    """A copy of a few good pairs plus one image for every way an input can be bad."""
    src = synthetic_cells
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem in ("cell_00_fluo16", "cell_08_sparse"):
        shutil.copy(src / "images" / f"{stem}.tif", root / "images")
        shutil.copy(src / "labels" / f"{stem}_label.tiff", root / "labels")
    img = tifffile.imread(src / "images" / "cell_00_fluo16.tif")
    lab = tifffile.imread(src / "labels" / "cell_00_fluo16_label.tiff")
    tifffile.imwrite(root / "images" / "shape_mismatch.tif", img)
    tifffile.imwrite(root / "labels" / "shape_mismatch_label.tiff", lab[:-5])
    tifffile.imwrite(root / "images" / "empty_label.tif", img)
    tifffile.imwrite(root / "labels" / "empty_label_label.tiff", np.zeros_like(lab))
    tifffile.imwrite(root / "images" / "constant.tif", np.full_like(img, 1000))
    tifffile.imwrite(root / "labels" / "constant_label.tiff", lab)
    tifffile.imwrite(root / "images" / "rgb_label.tif", img)
    tifffile.imwrite(root / "labels" / "rgb_label_label.tiff", np.stack([lab.astype(np.uint8)] * 3, -1),
                     photometric="rgb")
    (root / "images" / "garbage.tif").write_bytes(b"this is not a tiff")
    tifffile.imwrite(root / "images" / "twice.tif", img)
    shutil.copy(src / "images" / "cell_05_phase8.png", root / "images" / "twice.png")
    return root


def test_bad_images_fail_with_their_reason_and_the_rest_converted(bad_tree, tmp_path, capsys):
    before = _tree_digest(bad_tree)
    out = tmp_path / "out"
    rc = cc.main(["--images", str(bad_tree / "images"), "--labels", str(bad_tree / "labels"), "--output_dir",
                  str(out), "--num_folds", "2", "--no_progress"])
    printed = capsys.readouterr().out
    report = json.loads((out / "conversion_report.json").read_text())
    failed = {r["stem"]: r["reason"] for r in report["images"] if r["verdict"] == "failed"}
    skipped = {r["stem"]: r["reason"] for r in report["images"] if r["verdict"] == "skipped"}
    assert failed == {"shape_mismatch": "label_shape_mismatch", "constant": "constant_image",
                      "rgb_label": "multi_channel_label", "garbage": "unreadable", "twice": "duplicate_stem"}
    assert skipped == {"empty_label": "empty_label"}  # nothing annotated: no defect
    assert sum(r["verdict"] == "failed" for r in report["images"]) == 6  # both files named 'twice'
    assert {r["stem"] for r in report["images"] if r["verdict"] == "converted"} == {"cell_00_fluo16", "cell_08_sparse"}
    assert rc == 1 and "garbage.tif" in printed and "shape_mismatch" in printed
    assert _tree_digest(bad_tree) == before, "inputs must never be written"
    assert validate_datalist(out / "datalist.json")["n_training"] == 2


def test_rerun_resumes_and_other_settings_are_refused(synthetic_cells, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--images", str(synthetic_cells / "images"), "--output_dir", str(out), "--no_progress"]
    assert cc.main(args) == 0  # no --labels: every image is a testing image
    dl = json.loads((out / "datalist.json").read_text())
    assert len(dl["testing"]) == 13 and dl["training"] == []
    stamp = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert cc.main(args) == 0
    assert "13 resumed" in capsys.readouterr().out
    assert stamp == {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert cc.main([*args, "--max_pixels", "20000"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_dry_run_shows_pairs_tiles_and_folds_and_writes_nothing(synthetic_cells, tmp_path, capsys):
    out = tmp_path / "never"
    rc = cc.main(["--images", str(synthetic_cells / "images"), "--labels", str(synthetic_cells / "labels"),
                  "--output_dir", str(out), "--max_pixels", "300000", "--num_folds", "3", "--dry_run"])
    plan = json.loads(capsys.readouterr().out)
    assert rc == 0 and not out.exists()
    rows = {r["stem"]: r for r in plan["images"]}
    assert rows["cell_09_large"]["tiles"] == 4 and rows["cell_00_fluo16"]["tiles"] == 1
    assert rows["cell_10_test_fluo16"]["kind"] == "test" and rows["cell_10_test_fluo16"]["fold"] is None
    assert {r["fold"] for r in rows.values() if r["kind"] == "train"} == {0, 1, 2}


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        cc.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--images", "--labels", "--output_dir", "--num_folds", "--workers", "--max_pixels", "--tile_overlap",
                 "--force", "--dry_run", "--no_progress"):
        assert flag in text


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/cells2d is not present (it is not part of the project)")
def test_real_pairs_convert_and_round_trip(tmp_path):
    out = tmp_path / "real"
    report = cc.convert_cells(out, REAL / "images", REAL / "labels", num_folds=2, progress=False)
    assert report["summary"]["converted"] == 2
    postprocess_cells([out / "labels"], tmp_path / "rt", progress=False)
    for f in sorted((REAL / "labels").glob("*_label.tiff")):
        assert score_image(tifffile.imread(f), tifffile.imread(tmp_path / "rt" / f.name))["f1"] >= 0.98
