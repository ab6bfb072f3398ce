"""Bad 2-D cell input, round 3: blank images, misnamed and orphan labels, binary masks, resume, exit codes.

Each test builds a tiny CellSeg tree from two pairs and one testing image of the built-in
synthetic cells and adds one kind of bad input.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from faults import run_faulty

import run_auto3dseg
from auto3dseg.submission.cells import write_cell_submission
from converters.cells import convert as cc
from datalists.cell_classes import CELL_CLASS_TABLE

PAIRS = ("cell_00_fluo16", "cell_08_sparse")
TEST = "cell_10_test_fluo16"


@pytest.fixture()
def tree(synthetic_cells, tmp_path) -> Path:
    """``images/`` with two labelled images and one testing image, ``labels/`` with their masks."""
    root = tmp_path / "in"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem in PAIRS:
        shutil.copy(synthetic_cells / "images" / f"{stem}.tif", root / "images")
        shutil.copy(synthetic_cells / "labels" / f"{stem}_label.tiff", root / "labels")
    shutil.copy(synthetic_cells / "images" / f"{TEST}.tif", root / "images")
    return root


def _convert(root: Path, out: Path, capsys) -> tuple[int, str, dict]:
    rc = cc.main(["--images", str(root / "images"), "--labels", str(root / "labels"), "--output_dir", str(out),
                  "--num_folds", "2", "--no_progress"])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err, json.loads((out / "conversion_report.json").read_text())


def _records(report: dict) -> dict[str, dict]:
    return {r["stem"]: r for r in report["images"]}


def _fake_ensemble(out: Path, work: Path, skip: tuple[str, ...] = ()) -> Path:
    """An ``ensemble.json`` with an all-background target map for every testing image of ``out``
    (those named in ``skip`` left out), as if the networks had predicted them."""
    dl = json.loads((out / "datalist.json").read_text())
    items = []
    maps = work / "ensemble_output"  # a manifest's maps are read from its own folder
    maps.mkdir(parents=True, exist_ok=True)
    for entry in dl["testing"]:
        stem = Path(entry["image"]).name[: -len(".nii.gz")]
        if stem in skip:
            continue
        img = nib.load(str(out / entry["image"]))  # x, y, 1, channel
        target = maps / f"{stem}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros(img.shape[:3], np.uint8), img.affine), str(target))
        items.append({"image": str(out / entry["image"]), "probabilities": str(target)})
    manifest = maps / "ensemble.json"
    manifest.write_text(json.dumps({"channels": [r["name"] for r in CELL_CLASS_TABLE], "items": items}))
    return manifest


# ----------------------------------------------------------------------------- case 1: blank testing image
def test_blank_testing_image_is_converted_and_gets_its_label_file(tree, tmp_path, capsys):
    tifffile.imwrite(tree / "images" / "blank.tif", np.zeros((96, 80), np.uint16))
    out = tmp_path / "out"
    rc, printed, report = _convert(tree, out, capsys)
    rec = _records(report)["blank"]
    assert rc == 0 and rec["verdict"] == "converted" and rec["kind"] == "test" and rec["blank"]
    assert any("blank image (0 everywhere)" in n for n in rec["notes"]) and "blank" in printed
    dl = json.loads((out / "datalist.json").read_text())
    assert {"image": "images/blank.nii.gz"} in dl["testing"]
    assert json.loads((out / "datalist_items.json").read_text())["images/blank.nii.gz"]["blank"] is True

    folder, rows = write_cell_submission(_fake_ensemble(out, tmp_path / "work"), out / "datalist.json",
                                         tmp_path / "work" / "submission", log=lambda *_: None)
    assert sorted(p.name for p in folder.glob("*_label.tiff")) == ["blank_label.tiff", f"{TEST}_label.tiff"]
    assert all(r["status"] == "written" for r in rows)
    assert tifffile.imread(folder / "blank_label.tiff").shape == (96, 80)


def test_submit_names_every_testing_image_without_a_label_file_and_fails(tree, tmp_path, capsys):
    (tree / "images" / "garbage.tif").write_bytes(b"this is not a tiff")  # a testing image that cannot be read
    shutil.copy(tree / "images" / f"{TEST}.tif", tree / "images" / "second_test.tif")
    out = tmp_path / "out"
    rc, _, report = _convert(tree, out, capsys)
    assert rc == 1 and _records(report)["garbage"]["verdict"] == "failed"
    work = tmp_path / "work"
    _fake_ensemble(out, work, skip=("second_test",))  # and one testing image the ensemble lost
    rc = run_auto3dseg.main(["--mode", "submit", "--datalist", str(out / "datalist.json"), "--work_dir", str(work)])
    printed = capsys.readouterr()
    rows = {Path(r["output"]).name: r for r in json.loads((work / "submission" / "submission_report.json").read_text())}
    assert rc == 1 and "2 failed" in printed.out
    assert rows[f"{TEST}_label.tiff"]["status"] == "written"
    assert rows["garbage_label.tiff"]["status"] == "missing" and "unreadable" in rows["garbage_label.tiff"]["error"]
    assert rows["second_test_label.tiff"]["status"] == "missing"
    assert "second_test.tif" in rows["second_test_label.tiff"]["error"]
    assert "missing" in (work / "submission" / "submission_report.md").read_text()


# ----------------------------------------------------------------------------- case 2: blank training image
def test_constant_training_image_fails_with_its_value(tree, tmp_path, capsys):
    lab = tifffile.imread(tree / "labels" / "cell_00_fluo16_label.tiff")
    tifffile.imwrite(tree / "images" / "flat.tif", np.full(lab.shape, 7, np.uint16))
    tifffile.imwrite(tree / "labels" / "flat_label.tiff", lab)
    out = tmp_path / "out"
    rc, printed, report = _convert(tree, out, capsys)
    rec = _records(report)["flat"]
    assert rc == 1 and (rec["verdict"], rec["reason"]) == ("failed", "constant_image")
    assert "7 everywhere" in rec["detail"] and "flat.tif" in printed
    dl = json.loads((out / "datalist.json").read_text())
    assert len(dl["training"]) == 2 and not any("flat" in it["image"] for it in dl["training"] + dl["testing"])
    assert report["summary"]["failed_by_reason"] == {"constant_image": 1}


# ----------------------------------------------------------------------------- case 3: labels without an image
@pytest.mark.parametrize("name", ["cell_08_sparse_labels.tiff", "cell_08_sparse_mask.png", "CELL_08_sparse_Label.tif",
                                  "cell_08_sparse_label.jpg", "cell_08_sparse.tiff"])
def test_misnamed_label_fails_its_image_instead_of_making_it_a_testing_image(tree, tmp_path, capsys, name):
    (tree / "labels" / "cell_08_sparse_label.tiff").rename(tree / "labels" / name)
    out = tmp_path / "out"
    rc, printed, report = _convert(tree, out, capsys)
    rec = _records(report)["cell_08_sparse"]
    assert rc == 1 and (rec["verdict"], rec["reason"]) == ("failed", "misnamed_label")
    assert name in rec["detail"] and "cell_08_sparse_label.tiff" in rec["detail"] and name in printed
    # one labelled image is left for 2 folds: no completion marker, the datalist is there to be read
    assert not (out / "datalist.json").exists() and "No datalist.json was written" in printed
    dl = json.loads((out / "datalist.invalid.json").read_text())
    assert not any("cell_08_sparse" in it["image"] for it in dl["testing"] + dl["training"])
    assert report["unmatched_labels"] == []  # named once, as its image's failure


def test_images_and_labels_in_one_folder_never_make_masks_testing_images(tree, tmp_path, capsys):
    for f in (tree / "labels").iterdir():
        shutil.move(str(f), tree / "images" / f.name)
    out = tmp_path / "out"
    rc = cc.main(["--images", str(tree / "images"), "--labels", str(tree / "images"), "--output_dir", str(out),
                  "--num_folds", "2", "--no_progress"])
    assert rc == 0, capsys.readouterr()
    dl = json.loads((out / "datalist.json").read_text())
    assert not any("_label" in it["image"] for it in dl["training"] + dl["testing"])
    assert len(dl["training"]) == 2 and [Path(it["image"]).name.startswith(TEST) for it in dl["testing"]] == [True]


def test_a_labels_folder_given_as_images_is_refused(tree, tmp_path, capsys):
    for images, labels in ((tree / "labels", tree / "images"), (tree / "labels", None)):
        out = tmp_path / f"out_{labels is None}"
        rc = cc.main(["--images", str(images), *(["--labels", str(labels)] if labels else []), "--output_dir",
                      str(out), "--no_progress"])
        err = capsys.readouterr().err
        assert rc == 2 and str(images) in err and "swapped" in err and "_label" in err, err
        assert not (out / "datalist.json").exists()


def test_a_labels_folder_matching_no_image_and_an_image_file_as_images_are_refused(tree, tmp_path, capsys):
    """--labels given the images folder made every image a testing item, with a note only; --images
    given a file said "no such folder" (probe X8, X12)."""
    out = tmp_path / "out"
    rc = cc.main(["--images", str(tree / "images"), "--labels", str(tree / "images"), "--output_dir", str(out),
                  "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "no <stem>_label.tiff there matches an image" in err and "(it is the --images folder)" in err
    assert not out.exists()
    image = next((tree / "images").iterdir())
    rc = cc.main(["--images", str(image), "--output_dir", str(out), "--no_progress"])
    assert rc == 2 and "a file, not a folder: give the folder that holds the images" in capsys.readouterr().err
    assert cc.main(["--images", str(tree / "images"), "--output_dir", str(out), "--no_progress"]) == 0  # test-only


def test_label_without_an_image_is_a_warning_naming_the_closest_stems(tree, tmp_path, capsys):
    shutil.copy(tree / "labels" / "cell_08_sparse_label.tiff", tree / "labels" / "cell_8_sparse_label.tiff")
    shutil.copy(tree / "labels" / "cell_08_sparse_label.tiff", tree / "labels" / "zzz_label.tiff")
    (tree / "labels" / "notes.txt").write_text("not a label")
    out = tmp_path / "out"
    rc, printed, report = _convert(tree, out, capsys)
    orphans = {Path(u["label"]).name: u for u in report["unmatched_labels"]}
    assert rc == 0 and set(orphans) == {"cell_8_sparse_label.tiff", "zzz_label.tiff"}
    assert orphans["cell_8_sparse_label.tiff"]["could_match"][0] == "cell_08_sparse"
    assert orphans["zzz_label.tiff"]["could_match"] == []
    assert report["summary"]["unmatched_labels"] == 2
    assert "warning:" in printed and "cell_8_sparse_label.tiff" in printed and "cell_08_sparse" in printed
    assert "cell_8_sparse_label.tiff" in (out / "conversion_report.md").read_text()
    assert _records(report)["cell_08_sparse"]["verdict"] == "converted"


# ----------------------------------------------------------------------------- case 4: binary masks
@pytest.mark.parametrize("value", [255, 1])
def test_binary_mask_given_as_label_fails_with_what_to_do(tree, tmp_path, capsys, value):
    lab = tifffile.imread(tree / "labels" / "cell_00_fluo16_label.tiff")
    tifffile.imwrite(tree / "labels" / "cell_00_fluo16_label.tiff", np.where(lab > 0, value, 0).astype(np.uint8))
    out = tmp_path / "out"
    rc, printed, report = _convert(tree, out, capsys)
    rec = _records(report)["cell_00_fluo16"]
    assert rc == 1 and (rec["verdict"], rec["reason"]) == ("failed", "binary_mask")
    assert "binary mask" in rec["detail"] and "skimage.measure.label" in rec["detail"] and "binary" in printed
    assert not (out / "instances" / "cell_00_fluo16_label.tiff").exists()


def test_a_foreground_mask_of_touching_cells_is_a_binary_mask_too(tree, tmp_path, capsys):
    lab = tifffile.imread(tree / "labels" / "cell_08_sparse_label.tiff")
    fg = np.zeros(lab.shape, np.uint8)
    fg[20:100, 30:140] = 255  # every cell touching the next: one blob of 255
    tifffile.imwrite(tree / "labels" / "cell_08_sparse_label.tiff", fg)
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["cell_08_sparse"]
    assert rc == 1 and rec["reason"] == "binary_mask" and "largest a uint8 pixel holds" in rec["detail"], rec


def test_one_cell_alone_is_not_a_binary_mask(tree, tmp_path, capsys):
    lab = np.zeros((128, 160), np.uint16)
    lab[40:70, 50:90] = 1  # one cell, one blob: a valid instance mask
    tifffile.imwrite(tree / "labels" / "cell_08_sparse_label.tiff", lab)
    rc, _, report = _convert(tree, tmp_path / "out", capsys)
    assert rc == 0 and _records(report)["cell_08_sparse"]["cells"] == 1


def test_a_copy_of_the_image_given_as_its_label_fails_naming_both(tree, tmp_path, capsys):
    # what following the misnamed-label advice with the wrong file gives: <stem>_label.tiff is the image itself
    shutil.copy(tree / "images" / "cell_00_fluo16.tif", tree / "labels" / "cell_00_fluo16_label.tiff")
    out = tmp_path / "out"
    rc, printed, report = _convert(tree, out, capsys)
    rec = _records(report)["cell_00_fluo16"]
    assert rc == 1 and (rec["verdict"], rec["reason"]) == ("failed", "label_is_image"), rec
    assert "cell_00_fluo16_label.tiff" in rec["detail"] and "cell_00_fluo16.tif" in rec["detail"]
    assert "copy of the image" in printed
    assert not (out / "instances" / "cell_00_fluo16_label.tiff").exists()
    assert _records(report)["cell_08_sparse"]["verdict"] == "converted"


def test_an_8_bit_rescaled_copy_of_the_image_given_as_its_label_fails_too(tree, tmp_path, capsys):
    image = tifffile.imread(tree / "images" / "cell_00_fluo16.tif")  # 16-bit: its copy saved as 8 bits
    tifffile.imwrite(tree / "labels" / "cell_00_fluo16_label.tiff", (image // 256).astype(np.uint8))
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["cell_00_fluo16"]
    assert rc == 1 and rec["reason"] == "label_is_image" and "rescaled" in rec["detail"], rec
    assert "IndexError" not in printed


def test_uint8_instance_ids_without_an_interior_are_seeded_not_a_crash(tree):
    from converters.cells.targets import CELL_INTERIOR, cell_targets

    # ids up to 255, many of them thin: scipy computed max + 1 in uint8 (0) and indexed past its result
    lab = (tifffile.imread(tree / "images" / "cell_00_fluo16.tif") // 256).astype(np.uint8)
    assert lab.max() == 255
    out = cell_targets(lab)
    for i in np.unique(lab[lab > 0]):
        assert (out[lab == i] == CELL_INTERIOR).any(), i


# ----------------------------------------------------------------------------- case 5: resume checks every output
def test_resume_redoes_an_image_whose_instances_file_was_deleted(tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert _convert(tree, out, capsys)[0] == 0
    inst = out / "instances" / "cell_00_fluo16_label.tiff"
    kept = (out / "images" / "cell_08_sparse.nii.gz").stat().st_mtime_ns
    inst.unlink()
    rc, _, report = _convert(tree, out, capsys)
    recs = _records(report)
    assert rc == 0 and inst.is_file() and not recs["cell_00_fluo16"].get("resumed")
    assert recs["cell_08_sparse"]["resumed"] and (out / "images" / "cell_08_sparse.nii.gz").stat().st_mtime_ns == kept
    assert np.array_equal(tifffile.imread(inst), tifffile.imread(tree / "labels" / "cell_00_fluo16_label.tiff"))


def test_resume_converts_again_an_image_or_label_edited_since(tree, tmp_path, capsys):
    """A label corrected after the conversion was "resumed": the old target stayed, without a word."""
    out = tmp_path / "out"
    assert _convert(tree, out, capsys)[0] == 0
    label = tree / "labels" / "cell_00_fluo16_label.tiff"
    fixed = tifffile.imread(label)[::-1].copy()
    tifffile.imwrite(label, fixed)
    rc, printed, report = _convert(tree, out, capsys)
    recs = _records(report)
    assert rc == 0 and not recs["cell_00_fluo16"].get("resumed") and recs["cell_08_sparse"]["resumed"]
    assert "cell_00_fluo16: its image or label changed since it was converted" in printed
    assert np.array_equal(tifffile.imread(out / "instances" / "cell_00_fluo16_label.tiff"), fixed)


def test_a_training_image_whose_label_went_missing_is_said_to_become_testing(tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert _convert(tree, out, capsys)[0] == 0
    shutil.move(tree / "labels" / "cell_00_fluo16_label.tiff", tmp_path / "misplaced_label.tiff")
    rc, printed, report = _convert(tree, out, capsys)
    assert "cell_00_fluo16 was a training image" in printed and "it becomes a testing image" in printed, printed
    assert _records(report)["cell_00_fluo16"]["kind"] == "test"


# ----------------------------------------------------------------------------- case 6: exit codes
def test_unreadable_image_is_a_failure_with_exit_1_and_the_others_converted(tree, tmp_path, capsys):
    (tree / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    shutil.copy(tree / "labels" / "cell_08_sparse_label.tiff", tree / "labels" / "broken_label.tiff")
    out = tmp_path / "out"
    rc, printed, report = _convert(tree, out, capsys)
    rec = _records(report)["broken"]
    assert rc == 1 and (rec["verdict"], rec["reason"]) == ("failed", "unreadable")
    assert "broken.png" in printed and "1 image(s) failed" in printed
    assert json.loads((out / "datalist.json").read_text())["training"]  # the good images are still usable
    # a re-run tries the failed image again (and fails again) rather than resuming a failure
    rc, _, report = _convert(tree, out, capsys)
    assert rc == 1 and not _records(report)["broken"].get("resumed")


def test_killed_worker_writes_no_datalist_and_rerun_resumes(tree, tmp_path):
    out = tmp_path / "out"
    cli = ["-m", "converters.cells.convert", "--images", str(tree / "images"), "--labels", str(tree / "labels"),
           "--output_dir", str(out), "--num_folds", "2", "--no_progress", "--workers", "2"]
    # the worker converting cell_08_sparse kills itself (SIGKILL) as it renames that image into place
    proc = run_faulty(cli, kill_at="cell_08_sparse.nii.gz")
    assert proc.returncode == 1, proc.stderr
    (err,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert err.startswith("error: a worker process was killed") and "out-of-memory" in err
    assert "--workers 1" in err and "cell_08_sparse" in err and "no datalist was written" in err
    assert "BrokenProcessPool" not in proc.stdout + proc.stderr
    assert not (out / "datalist.json").exists()
    rerun = run_faulty(cli)
    assert rerun.returncode == 0, rerun.stderr
    recs = _records(json.loads((out / "conversion_report.json").read_text()))
    assert all(r["verdict"] == "converted" for r in recs.values()) and len(recs) == 3
    assert (out / "datalist.json").exists()


def test_help_states_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cc.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0" in text and "1 when any image failed" in text and "2 for usage errors" in text
    assert "worker process was killed" in text


def test_a_reconversion_with_other_images_keeps_the_previous_datalist(tree, tmp_path, capsys):
    out = tmp_path / "out"
    assert _convert(tree, out, capsys)[0] == 0
    first = json.loads((out / "datalist.json").read_text())
    shutil.copy(tree / "images" / f"{TEST}.tif", tree / "images" / "another_test.tif")  # one testing image more
    rc, printed, _ = _convert(tree, out, capsys)
    (kept,) = (out / "replaced").glob("datalist-*")
    assert rc == 0 and json.loads((kept / "datalist.json").read_text()) == first and str(kept) in printed
    assert len(json.loads((out / "datalist.json").read_text())["testing"]) == len(first["testing"]) + 1


# ----------------------------------------------------------------------------- round 4: probe findings
def test_swapped_folders_with_a_stray_file_among_the_masks_are_refused(tree, tmp_path, capsys):
    masks = tmp_path / "masks"  # the labels, plus one file not named <stem>_label.* (an old copy)
    shutil.copytree(tree / "labels", masks)
    shutil.copy(masks / "cell_00_fluo16_label.tiff", masks / "cell_00_fluo16_label_old.tiff")
    out = tmp_path / "out"
    rc = cc.main(["--images", str(masks), "--labels", str(tree / "images"), "--output_dir", str(out),
                  "--num_folds", "2", "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "2 of its 3 files" in err and "swapped" in err and "cell_00_fluo16_label_old.tiff" in err, err
    assert not (out / "datalist.json").exists()


@pytest.mark.parametrize("background", [65535, 1])
def test_a_label_whose_background_is_not_0_fails_naming_the_value(tree, tmp_path, capsys, background):
    path = tree / "labels" / "cell_00_fluo16_label.tiff"
    lab = tifffile.imread(path).astype(np.uint16)
    tifffile.imwrite(path, np.where(lab > 0, lab + (background == 1), background).astype(np.uint16))
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["cell_00_fluo16"]
    assert rc == 1 and (rec["verdict"], rec["reason"]) == ("failed", "background_not_zero")
    assert f"labels[labels == {background}] = 0" in printed and "cell_00_fluo16_label.tiff" in rec["detail"]
    assert ("largest value a uint16" in rec["detail"]) == (background == 65535)
    assert _records(report)["cell_08_sparse"]["verdict"] == "converted"


def test_one_large_cell_of_a_confluent_mask_converts_with_a_warning(tree, tmp_path, capsys):
    """No 0 anywhere and cell 1 over 41% of the image, enclosing no other cell: a real cell of dense
    tissue, not a background (a background surrounds cells). It was refused with a fix that would
    have erased it."""
    path = tree / "labels" / "cell_00_fluo16_label.tiff"
    h, w = tifffile.imread(path).shape[:2]
    lab = np.ones((h, w), np.uint16)
    lab[:, int(w * 0.7):] = 2
    lab[int(h * 0.8):, :int(w * 0.7)] = 3
    lab[:h // 4, :w // 4] = 4
    lab[h // 4:int(h * 0.8), :w // 6] = 5
    tifffile.imwrite(path, lab)
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["cell_00_fluo16"]
    assert rc == 0 and rec["verdict"] == "converted", rec
    assert any("the cell with id 1 covers" in w and "check that 1 is a cell" in w for w in rec["warnings"])


def _grid_label(shape: tuple[int, int], cells: int) -> np.ndarray:
    """``cells`` 6 x 6 cells with ids 1..cells on a 10-pixel grid (far apart from each other)."""
    lab = np.zeros(shape, np.int32)
    per_row = (shape[1] - 4) // 10
    for i in range(cells):
        y, x = 2 + 10 * (i // per_row), 2 + 10 * (i % per_row)
        lab[y:y + 6, x:x + 6] = i + 1
    return lab


def test_8_bit_label_with_wrapped_ids_fails_naming_the_cause(tree, tmp_path, capsys):
    path = tree / "labels" / "cell_00_fluo16_label.tiff"  # 192 x 192: room for 18 x 18 cells
    tifffile.imwrite(path, (_grid_label((192, 192), 310) % 256).astype(np.uint8))  # 310 cells -> ids mod 256
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["cell_00_fluo16"]
    assert rc == 1 and (rec["verdict"], rec["reason"]) == ("failed", "ids_wrapped")
    assert "54 of its 255 ids" in rec["detail"] and "8-bit" in rec["detail"] and "uint16" in printed


def test_wider_label_with_ids_shared_by_distant_cells_converts_with_a_warning(tree, tmp_path, capsys):
    path = tree / "labels" / "cell_00_fluo16_label.tiff"
    lab = _grid_label((192, 192), 300)
    tifffile.imwrite(path, np.where(lab > 0, (lab - 1) % 200 + 1, 0).astype(np.uint16))  # ids 1..100 twice
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["cell_00_fluo16"]
    assert rc == 0 and rec["verdict"] == "converted" and len(rec["warnings"]) == 1
    assert "100 of its 200 ids" in rec["warnings"][0] and "cell_00_fluo16: warning:" in printed
    assert report["summary"]["warnings"] == 1
    assert "**Warnings**" in (tmp_path / "out" / "conversion_report.md").read_text()
    assert not _records(report)["cell_08_sparse"]["warnings"]  # real masks: no warning


def test_a_training_image_too_small_to_train_on_gets_a_warning(tree, tmp_path, capsys):
    tifffile.imwrite(tree / "images" / "tiny.tif", np.array([[10, 200], [300, 4000]], np.uint16))
    tifffile.imwrite(tree / "labels" / "tiny_label.tiff", np.array([[0, 1], [1, 1]], np.uint16))
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["tiny"]
    assert rc == 0 and rec["verdict"] == "converted"
    assert "tiny.tif is only 2 x 2 pixels: too small to train on" in rec["warnings"][0]
    assert "tiny: warning:" in printed and "tiny.tif" in printed


def test_a_png_label_read_read_only_is_checked_without_error(tree, tmp_path, capsys):
    from PIL import Image

    path = tree / "labels" / "cell_00_fluo16_label.tiff"
    Image.fromarray(tifffile.imread(path).astype(np.uint16)).save(tree / "labels" / "cell_00_fluo16_label.png")
    path.unlink()  # the PNG is its label now (PIL gives a read-only array, which cc3d refused)
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["cell_00_fluo16"]
    assert rc == 0 and rec["verdict"] == "converted" and not rec["warnings"], printed


@pytest.mark.parametrize("flags, words", [
    (["--max_pixels", "100"], "--max_pixels 100: tiles of at most 100 pixels are too small"),
    (["--max_pixels", "0"], "--max_pixels 0: tiles of at most 0 pixels"),
    (["--max_pixels", "40000", "--tile_overlap", "190"], "--tile_overlap 190: tiles of --max_pixels 40000 are about 200"),
    (["--tile_overlap", "-1"], "--tile_overlap -1: give 0 or more"),
    (["--workers", "-1"], "--workers -1: give 1 or more"),
])
def test_tiling_flags_that_would_run_away_are_refused(synthetic_cells, tmp_path, capsys, flags, words):
    """--max_pixels 100 wrote 240,000 tiles of one image before it was stopped; an overlap of most
    of a tile stepped one pixel at a time."""
    from converters.cells import convert as cc

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        cc.main(["--images", str(synthetic_cells / "images"), "--labels", str(synthetic_cells / "labels"),
                 "--output_dir", str(out), *flags])
    assert exc.value.code == 2 and words in capsys.readouterr().err
    assert not out.exists()


def test_an_output_dir_that_holds_the_input_folders_is_refused(synthetic_cells, tmp_path, capsys):
    """--output_dir set to the CellSeg layout's root wrote the NIfTI images among the user's images."""
    import shutil

    from converters.cells import convert as cc

    data = tmp_path / "data"
    shutil.copytree(synthetic_cells / "images", data / "images")
    shutil.copytree(synthetic_cells / "labels", data / "labels")
    before = sorted(p.name for p in data.rglob("*"))
    for out in (data, data / "images", data / "labels" / "sub"):
        rc = cc.main(["--images", str(data / "images"), "--labels", str(data / "labels"), "--output_dir", str(out),
                      "--no_progress"])
        assert rc == 2 and "would write into the input folder" in capsys.readouterr().err
    assert sorted(p.name for p in data.rglob("*")) == before


# ----------------------------------------------------------------------------- files in subfolders
def test_files_in_subfolders_are_named_and_a_label_there_names_its_testing_image(tree, tmp_path, capsys):
    """An image in images/sub/ was dropped and a label in labels/sub/ made its image a testing image,
    both without a word ("Converted 2 of 2 images"). Subfolders are still not read, but named."""
    (tree / "images" / "sub").mkdir()
    shutil.copy(tree / "images" / "cell_08_sparse.tif", tree / "images" / "sub" / "extra.tif")
    (tree / "labels" / "sub").mkdir()  # the label of the top-level TEST image, one folder too deep
    shutil.copy(tree / "labels" / "cell_08_sparse_label.tiff", tree / "labels" / "sub" / f"{TEST}_label.tiff")
    (tree / "labels" / ".cache").mkdir()  # hidden: not named
    shutil.copy(tree / "labels" / "cell_00_fluo16_label.tiff", tree / "labels" / ".cache")
    out = tmp_path / "out"
    rc, printed, report = _convert(tree, out, capsys)
    unread = {u["flag"]: u for u in report["unread_subfolders"]}
    assert rc == 0 and unread["--images"]["files"] == ["sub/extra.tif"] and not unread["--images"]["testing_images"]
    assert unread["--labels"]["files"] == [f"sub/{TEST}_label.tiff"] and unread["--labels"]["testing_images"] == [TEST]
    assert report["summary"]["unread_subfolder_files"] == 2 and report["summary"]["images"] == 3
    assert (f"--labels {tree / 'labels'}: 1 file in subfolders is not read (sub/{TEST}_label.tiff); move it "
            f"into {tree / 'labels'} itself") in printed
    assert f"the image {TEST} therefore becomes a testing image" in printed and "warning:" in printed
    assert "sub/extra.tif" in printed and ".cache" not in printed
    assert f"sub/{TEST}_label.tiff" in (out / "conversion_report.md").read_text()
    assert _records(report)[TEST]["kind"] == "test"  # still not read: the behaviour is kept


def test_images_only_in_subfolders_are_refused_naming_them(tree, tmp_path, capsys):
    (tree / "images" / "train").mkdir()
    for f in list((tree / "images").glob("*.tif")):
        shutil.move(str(f), tree / "images" / "train")
    rc = cc.main(["--images", str(tree / "images"), "--labels", str(tree / "labels"), "--output_dir",
                  str(tmp_path / "out"), "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "3 in subfolders, e.g. train/cell_00_fluo16.tif" in err, err


def test_labels_inside_the_images_folder_are_not_named_as_unread(tree, tmp_path, capsys):
    shutil.move(str(tree / "labels"), tree / "images" / "labels")  # --labels images/labels: read, not unread
    rc = cc.main(["--images", str(tree / "images"), "--labels", str(tree / "images" / "labels"), "--output_dir",
                  str(tmp_path / "out"), "--num_folds", "2", "--no_progress"])
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert rc == 0 and report["unread_subfolders"] == [] and "not read" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- background with a little 0 left
def _rare_zero(lab: np.ndarray, how: str) -> np.ndarray:
    """``lab`` with its background relabelled (1, cells 2..N; or 65535) and a little 0 left in it."""
    out = np.where(lab > 0, lab + 1, 65535 if how == "65535_and_a_row" else 1).astype(np.uint16)
    if how == "scattered":
        spots = np.random.default_rng(0).random(lab.shape) < 0.004
        out[spots & (lab == 0)] = 0
    else:
        out[0] = 0
    return out


@pytest.mark.parametrize("how", ["a_row", "scattered", "65535_and_a_row"])
def test_a_non_zero_background_with_a_little_0_left_still_fails(tree, tmp_path, capsys, how):
    """A row of 0 (under 1% of the pixels) beside a background of 1 made the check look at 0 as the
    largest "cell" (unsigned counts: -1 wrapped to 2**64 - 1): converted as one huge cell, no word."""
    path = tree / "labels" / "cell_00_fluo16_label.tiff"
    lab = _rare_zero(tifffile.imread(path).astype(np.uint16), how)
    assert 0 < np.mean(lab == 0) < 0.01
    tifffile.imwrite(path, lab)
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["cell_00_fluo16"]
    value = 65535 if how == "65535_and_a_row" else 1
    assert rc == 1 and (rec["verdict"], rec["reason"]) == ("failed", "background_not_zero"), rec
    assert "covers only" in rec["detail"] and f"labels[labels == {value}] = 0" in printed


def test_one_large_cell_beside_a_little_0_converts_with_a_warning(tree, tmp_path, capsys):
    path = tree / "labels" / "cell_00_fluo16_label.tiff"
    h, w = tifffile.imread(path).shape[:2]
    lab = np.ones((h, w), np.uint16)
    lab[:, int(w * 0.52):] = 2  # two confluent cells, the first over 52% of the image, enclosing none
    lab[0, :3] = 0
    tifffile.imwrite(path, lab)
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["cell_00_fluo16"]
    assert rc == 0 and rec["verdict"] == "converted", rec
    assert any("the cell with id 1 covers" in w for w in rec["warnings"])


# ----------------------------------------------------------------------------- 32-bit images, unique grey levels
def _unique_grey_levels(dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """A 256 x 256 image with (nearly) every pixel a grey level of its own, and its 20-cell label."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:256, :256]
    lab = np.zeros((256, 256), np.uint16)
    for i in range(20):
        c = rng.integers(10, 246, 2)
        lab[(y - c[0]) ** 2 + (x - c[1]) ** 2 < 64] = i + 1
    return (((lab > 0) * 3 + rng.random(lab.shape)) * 1e8).astype(dtype), lab


@pytest.mark.parametrize("dtype", [np.uint32, np.int32, np.float32])
def test_a_real_label_of_an_image_with_unique_grey_levels_converts(tree, tmp_path, capsys, dtype):
    """With nearly every pixel a grey level of its own (uint32), any label is a function of the image:
    a correct label was refused as label_is_image ("its grey levels rescaled")."""
    image, lab = _unique_grey_levels(dtype)
    tifffile.imwrite(tree / "images" / "u32.tif", image)
    tifffile.imwrite(tree / "labels" / "u32_label.tiff", lab)
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["u32"]
    assert rc == 0 and (rec["verdict"], rec["cells"]) == ("converted", 20), rec


@pytest.mark.parametrize("invert", [False, True])
def test_an_8_bit_copy_of_an_image_with_unique_grey_levels_still_fails(tree, tmp_path, capsys, invert):
    image, _ = _unique_grey_levels(np.uint32)
    copy = (image.astype(np.float64) / image.max() * 255).astype(np.uint8)
    tifffile.imwrite(tree / "images" / "u32.tif", image)
    tifffile.imwrite(tree / "labels" / "u32_label.tiff", 255 - copy if invert else copy)
    rc, printed, report = _convert(tree, tmp_path / "out", capsys)
    rec = _records(report)["u32"]
    assert rc == 1 and rec["reason"] == "label_is_image" and "rescaled" in rec["detail"], rec
