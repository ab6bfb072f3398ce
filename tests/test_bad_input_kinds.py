"""The wrong kind of thing given, or a setting not applied (probe round 20): each named with the fix.

A datalist that is an image, a templates path that is a file, probability maps given to the scorer,
a 2-D image in a 3-D datalist, an EM level missing some chunks, a truncated label TIFF, an output
folder that cannot be made, --gpus 0, and --patch_size given to generate over kept bundles."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_bad_input_cellmap import cli, make_tree, store

import run_auto3dseg
from converters.cellmap.convert import main as cellmap_main
from converters.cells import convert as cc
from datalists.validate import DatalistError, validate_datalist


def test_a_datalist_that_is_an_image_is_named_as_such(tmp_path, capsys):
    image = tmp_path / "crop1.nii.gz"
    image.write_bytes(gzip.compress(b"\x5c\x01" + bytes(400)))
    with pytest.raises(DatalistError) as err:
        validate_datalist(image, tmp_path)
    text = str(err.value)
    assert "gzip file (a NIfTI image" in text and "give the converter's datalist.json" in text
    assert "codec" not in text


def test_templates_given_a_file_say_it_is_a_file(tmp_path):
    from auto3dseg.bundles.template_checks import check_templates

    f = tmp_path / "datasplit.csv"
    f.write_text("x\n")
    with pytest.raises(ValueError, match="a file, not a folder"):
        check_templates(str(f), ["segresnet"])
    with pytest.raises(ValueError, match="no such folder"):
        check_templates(str(tmp_path / "nothing"), ["segresnet"])


def test_the_scorer_names_probability_maps_given_as_the_submission(tmp_path):
    from auto3dseg.ensembling.probability_maps import write_probability_map
    from auto3dseg.evaluation.stores import ScoringInputError, open_submission

    out = tmp_path / "ensemble_output"
    out.mkdir()
    one = write_probability_map(np.full((1, 4, 4, 4), 0.5, np.float32), np.eye(4), out / "synth-1_crop101_prob.zarr")
    for given, what in ((out, "a folder of probability maps"), (Path(one), "a probability map")):
        with pytest.raises(ScoringInputError, match=f"is {what} .* not a submission: run run_auto3dseg.py --mode "
                                                    "submit"):
            with open_submission(given):
                pass


def test_validate_names_a_2d_image_in_a_3d_datalist(converted, tmp_path):
    out, _ = converted
    data = tmp_path / "data"
    shutil.copytree(out, data)
    nib.save(nib.Nifti1Image(np.zeros((40, 40), np.float32), np.eye(4)), str(data / "images" / "flat.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.float32), np.eye(4)), str(data / "images" / "two.nii.gz"))
    dl = json.loads((data / "datalist.json").read_text())
    dl["testing"] += [{"image": "images/flat.nii.gz"}, {"image": "images/two.nii.gz"}]
    (data / "datalist.json").write_text(json.dumps(dl))
    with pytest.raises(DatalistError) as err:
        validate_datalist(data / "datalist.json", data)
    problems = err.value.problems
    assert len(problems) == 2, problems
    assert f"testing[{len(dl['testing']) - 2}]" in problems[0] and "is 2-D (40, 40)" in problems[0] and "are 3-D" in \
        problems[0]
    assert f"testing[{len(dl['testing']) - 1}]" in problems[1] and "has 2 channel(s)" in problems[1] and \
        "the training images have 1" in problems[1]


def test_an_em_level_missing_some_chunks_is_warned_and_converted_again_once_fetched(synthetic, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path, ("crop1",))
    chunk = store(ds) / "recon-1/em/fibsem-uint8/s0/0.1.2"
    shutil.move(str(chunk), str(tmp_path / "kept_chunk"))
    out = tmp_path / "out"
    assert cellmap_main(cli(ds, out)) == 0
    err = capsys.readouterr().err
    assert "synth-1_crop1: EM level s0 lacks" in err and "incomplete download" in err and "used the coarser s1" in err
    rec = json.loads((out / "records" / "synth-1_crop1.json").read_text())
    assert rec["em_level"] == "s1" and list(rec["em_partial_stamps"]) == ["s0"]
    assert cellmap_main(cli(ds, out)) == 0 and "converting it again" not in capsys.readouterr().err  # resumed
    shutil.move(str(tmp_path / "kept_chunk"), str(chunk))  # fetched again
    assert cellmap_main(cli(ds, out)) == 0
    assert "EM level s0, incomplete here when it was converted, changed since" in capsys.readouterr().err
    rec = json.loads((out / "records" / "synth-1_crop1.json").read_text())
    assert rec["em_level"] == "s0" and "em_partial_stamps" not in rec


def test_a_truncated_label_tiff_is_named_and_nothing_converted_writes_no_datalist(synthetic_cells, tmp_path, capsys):
    stem = "cell_00_fluo16"
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    shutil.copy(synthetic_cells / "images" / f"{stem}.tif", tmp_path / "images")
    label = tmp_path / "labels" / f"{stem}_label.tiff"
    import tifffile

    tifffile.imwrite(label, tifffile.imread(synthetic_cells / "labels" / f"{stem}_label.tiff"), compression="zlib")
    label.write_bytes(label.read_bytes()[: label.stat().st_size // 2])
    out = tmp_path / "out"
    rc = cc.main(["--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"), "--output_dir",
                  str(out), "--num_folds", "2", "--no_progress"])
    text = capsys.readouterr()
    assert rc == 1
    assert f"failed (unreadable_label) {label}: cannot read TIFF" in text.out + text.err
    assert "check that the file is a complete TIFF" in text.out + text.err
    assert not (out / "datalist.json").exists() and (out / "datalist.invalid.json").is_file()
    assert "no image was converted" in text.err


def test_a_dry_run_fails_where_the_output_folder_cannot_be_made(synthetic, synthetic_cells, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path, ("crop1",))
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        cellmap_main(cli(ds, blocker / "out", "--dry_run"))
    assert exc.value.code == 2 and f"{blocker} is a file, so no folder can be made" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cc.main(["--images", str(synthetic_cells / "images"), "--output_dir", str(blocker / "o"), "--dry_run"])
    assert exc.value.code == 2
    assert cellmap_main(cli(ds, tmp_path / "new" / "out", "--dry_run")) == 0  # a folder that can be made: fine
    assert not (tmp_path / "new").exists()  # and the dry run made nothing


def test_gpus_0_says_it_means_the_cpu():
    from auto3dseg.orchestration.train_bundles import device_note, parse_gpus

    assert "--gpus 0 is a count: no GPU" in device_note("0") and "'--gpus 0,' with its comma" in device_note("0")
    assert parse_gpus("0,") == ("0", 1) and device_note("cpu") is None


def test_generate_names_settings_not_applied_to_kept_bundles(generated, tmp_path, capsys):
    from pipeline_work import copy_work

    work = copy_work(generated, tmp_path)
    rc = run_auto3dseg.main(["--mode", "generate", "--work_dir", str(work), "--algos", "segresnet",
                             "--patch_size", "48"])
    out = capsys.readouterr().out
    assert rc == 0 and "kept segresnet_0" in out
    assert "note: segresnet_0 was kept with its own settings, not those given (patch_size [16, 16, 16] -> " in out, out
    assert "--force generates it anew" in out
    rc = run_auto3dseg.main(["--mode", "generate", "--work_dir", str(work), "--algos", "segresnet"])
    assert rc == 0 and "was kept with its own settings" not in capsys.readouterr().out  # nothing given: no note


def test_classes_given_with_commas_say_to_use_spaces():
    from datalists.cellmap_classes import class_by_name

    with pytest.raises(KeyError, match="separated by spaces, not commas .--classes mito er."):
        class_by_name("mito,er")


def test_a_datalist_that_no_longer_validates_gets_its_error_not_a_note_that_all_stands(converted, tmp_path, capsys):
    """A class renamed in class_table only printed "… its analysis stands" just before the error
    refusing that datalist (probe round 20, D21 variant)."""
    out, _ = converted
    data, work = tmp_path / "data", tmp_path / "work"
    shutil.copytree(out, data)
    assert run_auto3dseg.main(["--mode", "analyze", "--datalist", str(data / "datalist.json"), "--work_dir",
                               str(work), "--workers", "0"]) == 0
    capsys.readouterr()
    dl = json.loads((data / "datalist.json").read_text())
    dl["class_table"][0]["name"] = "renamed"
    (data / "datalist.json").write_text(json.dumps(dl))
    assert run_auto3dseg.main(["--mode", "analyze", "--datalist", str(data / "datalist.json"), "--work_dir",
                               str(work), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "class_table" in err and "stands" not in err and "changed since" not in err, err


def test_a_label_volume_given_to_predict_as_an_image_is_warned(converted, tmp_path):
    """A label copied out of its dataset and given as --images was predicted with rc 0 and no word
    (probe round 21, G15)."""
    from auto3dseg.orchestration.cli_checks import label_like_images

    out, _ = converted
    dl = json.loads((out / "datalist.json").read_text())
    item = next(it for it in dl["training"] if "label" in it)
    copied = tmp_path / "x.nii.gz"
    shutil.copy(out / item["label"], copied)
    warnings = label_like_images([str(copied), str(out / item["image"])], str(out / "datalist.json"))
    assert len(warnings) == 1 and str(copied) in warnings[0] and "looks like a label volume" in warnings[0]


def test_each_scorer_names_the_other_for_the_other_kind_of_data(tmp_path):
    """Cell masks given to the CellMap scorer, or a Zarr submission to the cell scorer, were refused
    without naming the scorer they need (probe round 21, G9)."""
    from auto3dseg.evaluation.cellseg import score_folders
    from auto3dseg.evaluation.stores import ScoringInputError, open_submission

    masks = tmp_path / "labels"
    masks.mkdir()
    (masks / "cell_00_label.tiff").write_bytes(b"")
    with pytest.raises(ScoringInputError, match="2-D cell masks .* auto3dseg.evaluation.cellseg"):
        with open_submission(masks):
            pass
    store = tmp_path / "submission.zarr"
    store.mkdir()
    (store / ".zgroup").write_text('{"zarr_format": 2}')
    with pytest.raises(FileNotFoundError, match="Zarr store .* auto3dseg.evaluation.score"):
        score_folders(masks, store)


def test_a_probability_map_as_predict_image_and_a_manifest_as_params_are_named(tmp_path):
    """predict told to convert a *_prob.zarr (G14); --postprocess_params ensemble.json gave
    "unknown CellMap class 'signature'" (G23)."""
    from auto3dseg.bundles.checks import raw_image_problem
    from auto3dseg.orchestration.cli_checks import check_postprocess_params

    assert "a probability map (what --mode ensemble and predict write), not an image" in raw_image_problem(
        [str(tmp_path / "crop1_prob.zarr")], "cellmap")
    manifest = tmp_path / "ensemble.json"
    manifest.write_text(json.dumps({"signature": "x", "bundles": [], "items": []}))
    with pytest.raises(ValueError, match="is the ensemble's manifest .*not post-processing parameters"):
        check_postprocess_params(str(manifest), str(tmp_path / "datalist.json"))


def test_a_2d_connectivity_for_3d_volumes_is_refused_before_submit_starts(tmp_path):
    """``connectivity: 4`` passed the check, the old submission was moved aside, then cc3d failed
    naming no file or class (probe round 23, H40)."""
    from auto3dseg.orchestration.cli_checks import check_postprocess_params

    datalist, params = tmp_path / "datalist.json", tmp_path / "pp.yaml"
    datalist.write_text(json.dumps({"training": [], "testing": []}))
    params.write_text("mito: {connectivity: 4}\n")
    with pytest.raises(ValueError, match=r"pp\.yaml: mito\.connectivity = 4 is a 2-D connectivity, and these data "
                                         r"are 3-D volumes: give 6 \(faces\), 18 \(edges\) or 26"):
        check_postprocess_params(str(params), str(datalist))
    params.write_text("mito: {connectivity: 18}\n")
    check_postprocess_params(str(params), str(datalist))
    datalist.write_text(json.dumps({"training": [], "testing": [], "spatial_dims": 2}))  # 2-D data take it
    params.write_text("mito: {connectivity: 8}\n")
    check_postprocess_params(str(params), str(datalist))


def test_a_parameter_file_of_the_other_kind_of_data_is_named(tmp_path):
    """The cells parameter file given to a CellMap tune_postprocess said "unknown CellMap class
    'threshold'" (probe round 24, J1); and the other way round."""
    from auto3dseg.orchestration.cli_checks import check_postprocess_params

    cellmap_dl, params = tmp_path / "datalist.json", tmp_path / "pp.yaml"
    cellmap_dl.write_text(json.dumps({"training": [], "testing": []}))
    params.write_text("threshold: 0.5\nseed_threshold: 0.7\n")
    with pytest.raises(ValueError, match=r"holds the flat keys of a 2-D cells parameter file \(seed_threshold, "
                                         r"threshold\), while this work_dir holds CellMap volumes: .*mito: \{threshold"):
        check_postprocess_params(str(params), str(cellmap_dl))
    cells_dl = tmp_path / "cells.json"  # a cells datalist, as its converter marks it
    cells_dl.write_text(json.dumps({"kind": "cells2d", "training": [], "testing": [], "spatial_dims": 2}))
    check_postprocess_params(str(params), str(cells_dl))
    params.write_text("default: {threshold: 0.5}\nmito: {threshold: 0.4}\n")
    with pytest.raises(ValueError, match=r"holds per-class entries \(default, mito\): CellMap post-processing "
                                         r"parameters, while this work_dir holds 2-D cells"):
        check_postprocess_params(str(params), str(cells_dl))


def test_a_pipe_as_a_file_flag_is_named_not_called_a_folder_or_empty(tmp_path, capsys):
    """--test_manifest <(cat m.csv) was called "a folder", and --postprocess_params <(echo ...) "holds no
    setting": a check read the pipe first (probe round 24, J29)."""
    import os

    import run_auto3dseg

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for flag in ("--test_manifest", "--postprocess_params"):
        with pytest.raises(SystemExit) as exit_:
            run_auto3dseg.main(["--mode", "submit", "--work_dir", str(tmp_path / "w"), flag, str(fifo)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"{flag} {fifo} is a pipe" in err and "save it to a file" in err, err
        assert "is a folder" not in err and "holds no setting" not in err


def test_tuned_values_applied_to_maps_made_otherwise_than_the_tuned_on_ones_are_named(tmp_path):
    """Thresholds tuned on --tta out-of-fold maps were applied to ensemble maps made without it, with
    no word; the tuned values differ between the two kinds of map (probe round 24, J20)."""
    from auto3dseg.postprocess.in_force import TUNED_YAML, TUNING_DIR, postprocess_params_for

    (tmp_path / TUNING_DIR).mkdir()
    (tmp_path / TUNING_DIR / "report.json").write_text(json.dumps({"oof_signatures": {"0": "ab-tta", "1": "cd-tta"}}))
    (tmp_path / TUNED_YAML).write_text("mito: {threshold: 0.7}\n")
    maps = tmp_path / "ensemble.json"
    maps.write_text(json.dumps({"tta": False, "items": []}))
    said: list[str] = []
    params = postprocess_params_for(tmp_path, None, cells=False, log=said.append, maps=maps)
    assert params["mito"]["threshold"] == 0.7
    assert any(f"tuned on out-of-fold maps made with --tta, the maps of {maps} without it" in m for m in said), said
    maps.write_text(json.dumps({"tta": True, "items": []}))  # alike: no note
    said.clear()
    postprocess_params_for(tmp_path, None, cells=False, log=said.append, maps=maps)
    assert not any("--tta" in m for m in said), said
