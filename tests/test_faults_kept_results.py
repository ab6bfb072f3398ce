"""Results kept only while what made them is unchanged: maps, submissions and scores of a work_dir
copied, moved, re-trained or re-pointed are re-used when they still hold, and made again (or named)
when their bundles, images, training files or truth changed since.

Each test copies the tiny trained work_dir of ``tests/pipeline_work.py`` before changing it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from faults import retrain_weights
from pipeline_work import SCRIPT, TINY, copy_work, nan_copy, run_work, zip_arrays

import run_auto3dseg


def test_a_copied_work_dir_reads_its_own_maps(trained_work, tmp_path):
    first = copy_work(trained_work, tmp_path)
    second = tmp_path / "second"
    shutil.copytree(first, second, symlinks=True)  # its ensemble.json names first's maps
    shutil.move(str(first / "ensemble_output"), str(tmp_path / "moved_away"))
    proc = run_work(second, "--mode", "submit", "--force")
    assert proc.returncode == 0, proc.stderr
    got = zip_arrays(second / "submission" / "submission.zip", tmp_path / "got")
    want = zip_arrays(trained_work / "submission" / "submission.zip", tmp_path / "want")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


def test_an_ensemble_of_bundles_trained_again_is_not_up_to_date(trained_work, tmp_path):
    work = copy_work(trained_work, tmp_path)
    manifest = work / "ensemble_output" / "ensemble.json"
    manifest.write_text(manifest.read_text().replace(str(trained_work), str(work)))  # the copy's own maps
    assert "up to date" in run_work(work, "--mode", "ensemble", "--algos", "segresnet").stdout
    retrain_weights(work / "segresnet_0" / "model" / "model.pt")
    proc = run_work(work, "--mode", "ensemble", "--algos", "segresnet")
    assert proc.returncode == 0 and "up to date" not in proc.stdout, proc.stdout
    assert "0 already there" in proc.stdout, proc.stdout
    # the earlier, finished maps were written over without a word (probe F5), then with a note only (probe F9):
    # they are moved to replaced/, whole, and said
    assert "note: 2 earlier map(s) (made by other weights of segresnet_0) moved to" in proc.stdout, proc.stdout
    kept = list((work / "ensemble_output" / "replaced").glob("ensemble-*"))
    assert len(kept) == 1 and (kept[0] / "ensemble.json").is_file()
    old_maps = sorted(p.name for p in kept[0].glob("*_prob.zarr"))
    assert old_maps and old_maps == sorted(p.name for p in (trained_work / "ensemble_output").glob("*_prob.zarr"))
    before = zarr.open_array(str(trained_work / "ensemble_output" / old_maps[0]), mode="r")[:]
    assert np.array_equal(zarr.open_array(str(kept[0] / old_maps[0]), mode="r")[:], before)
    # --force with the same weights: predicted again in place (the same bundles make the same maps)
    proc = run_work(work, "--mode", "ensemble", "--algos", "segresnet", "--force")
    assert proc.returncode == 0 and "predicted again with the same bundles" in proc.stdout, proc.stdout
    assert len(list((work / "ensemble_output" / "replaced").glob("ensemble-*"))) == 1


def test_a_copy_with_new_file_times_keeps_its_maps(trained_work, tmp_path):
    """cp -r gives every file a new time: the weights' bytes, not their times, say whether maps are current."""
    work = tmp_path / "copied"
    subprocess.run(["cp", "-r", str(trained_work), str(work)], check=True)  # no -a: new times
    (work / "segresnet_0" / ".weights_digest.json").unlink(missing_ok=True)  # read the bytes, not the cache
    maps = sorted((work / "ensemble_output").glob("*_prob.zarr"))
    before = {m.name: m.stat().st_mtime_ns for m in maps}
    proc = run_work(work, "--mode", "ensemble", "--algos", "segresnet")
    assert proc.returncode == 0 and "up to date" in proc.stdout, proc.stdout
    assert {m.name: m.stat().st_mtime_ns for m in maps} == before
    proc = run_work(work, "--mode", "submit")
    assert proc.returncode == 0 and "changed since" not in proc.stderr, proc.stderr


def test_an_ensemble_written_before_digests_is_still_current(trained_work, tmp_path):
    """Manifests that stamped weights by size and time (before digests) are still recognised."""
    from monai.utils.enums import AlgoKeys

    from auto3dseg.ensembling.weights_stamp import bundles_signature, weights_stamp

    work = copy_work(trained_work, tmp_path)
    manifest = work / "ensemble_output" / "ensemble.json"
    data = json.loads(manifest.read_text().replace(str(trained_work), str(work)))
    algo = {AlgoKeys.ID: "segresnet_0", AlgoKeys.SCORE: data["bundles"][0]["best_avg_dice_score"]}
    assert data["signature"] == bundles_signature([algo], work)
    data["signature"] = bundles_signature([algo], work, legacy=True)
    data["bundles"][0]["weights"] = weights_stamp(work / "segresnet_0", legacy=True)
    manifest.write_text(json.dumps(data))
    proc = run_work(work, "--mode", "ensemble", "--algos", "segresnet")
    assert proc.returncode == 0 and "up to date" in proc.stdout, proc.stdout
    weights = work / "segresnet_0" / "model" / "model.pt"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    proc = run_work(work, "--mode", "submit", "--force")
    assert proc.returncode == 0 and "segresnet_0's weights have new file times" in proc.stderr, proc.stderr


def test_submit_from_maps_of_bundles_trained_again_or_gone_says_so(trained_work, tmp_path):
    work = copy_work(trained_work, tmp_path)
    proc = run_work(work, "--mode", "submit", "--force")
    assert proc.returncode == 0 and "changed since" not in proc.stderr, proc.stderr
    weights = work / "segresnet_0" / "model" / "model.pt"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # as cp -r leaves it
    proc = run_work(work, "--mode", "submit", "--force")
    assert proc.returncode == 0 and "changed since" not in proc.stderr, proc.stderr
    with open(weights, "ab") as fh:  # trained again: other bytes
        fh.write(b"\0")
    proc = run_work(work, "--mode", "submit", "--force")
    assert proc.returncode == 0 and "changed since (segresnet_0 was trained again)" in proc.stderr, proc.stderr
    (work / "segresnet_0" / "model" / "model.pt").unlink()
    proc = run_work(work, "--mode", "submit", "--force")
    assert proc.returncode == 0 and "segresnet_0's model/model.pt is gone" in proc.stderr, proc.stderr
    shutil.rmtree(work / "segresnet_0" / "model")
    proc = run_work(work, "--mode", "submit", "--force")
    assert proc.returncode == 0 and "segresnet_0's weights are gone" in proc.stderr and "--mode ensemble" in proc.stderr
    assert (work / "submission" / "submission.zip").is_file()


def test_a_dataset_moved_after_the_ensemble_still_gets_its_maps(trained_work, converted, tmp_path):
    """The dataset moved and the work_dir re-pointed (--force_new_datalist): the ensemble's maps
    name the old image paths, and every crop was written empty, "up to date" from then on."""
    out, _ = converted
    work, moved = copy_work(trained_work, tmp_path), tmp_path / "moved"
    shutil.copytree(out, moved)
    proc = run_work(work, "--mode", "submit", "--datalist", str(moved / "datalist.json"), "--force_new_datalist",
                "--force")
    assert proc.returncode == 0 and "written empty" not in proc.stdout, proc.stdout + proc.stderr
    got = zip_arrays(work / "submission" / "submission.zip", tmp_path / "got")
    want = zip_arrays(trained_work / "submission" / "submission.zip", tmp_path / "want")
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    manifest = work / "ensemble_output" / "ensemble.json"
    ens = json.loads(manifest.read_text())
    lost = ens["items"].pop(0)  # a test crop of the datalist without a map: refused, nothing moved
    manifest.write_text(json.dumps(ens))
    before = (work / "submission" / "submission.zip").read_bytes()
    proc = run_work(work, "--mode", "submit", "--force")
    crop_id = Path(lost["image"]).name.split("crop")[1].split(".")[0]
    assert proc.returncode == 2 and f"no probability map of the converted test crop(s) crop{crop_id}" in proc.stderr
    assert (work / "submission" / "submission.zip").read_bytes() == before


def test_an_untrained_network_asked_for_is_named_when_left_out(trained_work, tmp_path):
    """`--algos segresnet dints` with dints generated but never trained ensembled segresnet alone, without a word."""
    work = copy_work(trained_work, tmp_path)
    assert run_work(work, "--mode", "generate", "--algos", "dints", "--num_fold", "1").returncode == 0
    proc = run_work(work, "--mode", "ensemble", "--algos", "segresnet", "dints")
    assert proc.returncode == 0, proc.stderr
    assert "note: dints_0 is not trained: left out" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_one_bad_image_does_not_stop_the_others(trained_work, tmp_path, converted, capsys):
    """A NaN image first in --images stopped the batch: the good image after it got no map."""
    image = converted[0] / json.loads((converted[0] / "datalist.json").read_text())["testing"][0]["image"]
    bad = nan_copy(image, tmp_path / "nan_image.nii.gz")
    out = tmp_path / "out"
    args = ["--mode", "predict", "--work_dir", str(trained_work), "--algos", "segresnet", "--output_dir", str(out)]
    rc = run_auto3dseg.main([*args, "--images", str(bad), str(image)])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "not finite" in err, err
    assert "1 of 2 image(s) could not be predicted" in err and "other 1 map(s) are written and kept" in err, err
    assert "labels are made once every image has its map" in err and "from the datalist" not in err, err
    assert not (out / "ensemble.json").exists()  # no completion marker for an incomplete set
    rc = run_auto3dseg.main([*args, "--images", str(image)])  # the bad one removed: the good map is resumed
    said = capsys.readouterr()
    assert rc == 0 and "0 probability maps written, 1 already there" in said.out, said.out + said.err


def test_a_blank_image_is_predicted_and_named(trained_work, tmp_path, converted, capsys):
    """An all-zero image given to predict gave a map of ~0.5 everywhere, and labels, without a word."""
    image = converted[0] / json.loads((converted[0] / "datalist.json").read_text())["testing"][0]["image"]
    img = nib.load(image)
    blank = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(img.shape, img.get_data_dtype()), img.affine, img.header), blank)
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(trained_work), "--algos", "segresnet",
                             "--output_dir", str(tmp_path / "out"), "--images", str(blank), str(image)])
    said = capsys.readouterr()
    assert rc == 0 and f"note: {blank} is constant (0 everywhere: blank?)" in said.out, said.out + said.err
    assert str(image) + " is constant" not in said.out and (tmp_path / "out" / "ensemble.json").is_file()


def test_ensemble_reuses_maps_of_moved_images_and_redoes_rewritten_ones(trained_work, converted, tmp_path):
    """Maps were keyed by image path only: a moved dataset re-predicted every map, and an image
    re-converted in place kept its old map as "up to date"."""
    out, _ = converted
    work, data = copy_work(trained_work, tmp_path), tmp_path / "moved"
    shutil.copytree(out, data)  # copy2 keeps the times: the same images at another place
    proc = run_work(work, "--mode", "ensemble", "--datalist", str(data / "datalist.json"), "--force_new_datalist")
    n = len(json.loads((data / "datalist.json").read_text())["testing"])
    assert proc.returncode == 0 and f"0 probability maps written, {n} already there" in proc.stdout, proc.stdout
    assert "up to date" in run_work(work, "--mode", "ensemble").stdout
    assert "is up to date" in run_work(work, "--mode", "submit").stdout  # the same maps: the submission stands
    image = data / json.loads((data / "datalist.json").read_text())["testing"][0]["image"]
    img = nib.load(image)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine, img.header), image)  # re-converted
    proc = run_work(work, "--mode", "ensemble")
    assert proc.returncode == 0 and f"{image} changed since its map was written" in proc.stdout, proc.stdout
    assert f"1 probability maps written, {n - 1} already there" in proc.stdout, proc.stdout
    proc = run_work(work, "--mode", "submit")  # a map written again: the submission is made again, not "up to date"
    assert proc.returncode == 0 and "is up to date" not in proc.stdout, proc.stdout


def test_bundles_trained_before_their_training_files_changed_are_named(trained_work, converted, tmp_path):
    """A training label fixed after training: --mode full re-analysed, then called the bundles
    trained on the old label "already trained" without a word."""
    out, _ = converted
    work, data = copy_work(trained_work, tmp_path), tmp_path / "data"
    shutil.copytree(out, data)  # the same files (times kept) at another place
    proc = run_work(work, "--mode", "train", *TINY, "--datalist", str(data / "datalist.json"), "--force_new_datalist")
    assert proc.returncode == 0 and "was trained before" not in proc.stdout, proc.stdout
    label = data / json.loads((data / "datalist.json").read_text())["training"][0]["label"]
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[::-1].copy(), img.affine, img.header), label)  # fixed
    proc = run_work(work, "--mode", "train", *TINY)
    assert proc.returncode == 0, proc.stderr
    rel = label.relative_to(data)
    assert f"segresnet_0 was trained before 1 of its training file(s) changed ({rel})" in proc.stdout, proc.stdout
    for mode, then in (("ensemble", "maps made with them show what was learnt from the old files"),
                       ("submit", "this submission is built from their maps")):  # not only train says so
        proc = run_work(work, "--mode", mode)
        assert proc.returncode == 0, proc.stderr
        assert f"segresnet_0 was trained before 1 of its training file(s) changed ({rel}): {then}" in proc.stdout, (
            proc.stdout)


def test_training_files_dropped_from_the_datalist_are_named_as_such(trained_work, tmp_path):
    """An item removed from the datalist was named as a file that "changed"."""
    from auto3dseg.orchestration.train_bundles import stale_bundles_note
    from auto3dseg.orchestration.workdir import list_bundles

    work = copy_work(trained_work, tmp_path)
    marker = work / "segresnet_0" / "training_done.json"
    record = json.loads(marker.read_text())
    record["training_files"]["images/gone_crop9.nii.gz"] = [10, 20]
    marker.write_text(json.dumps(record))
    note = stale_bundles_note(list_bundles(work), "so what")
    assert note and "1 of its training file(s) changed (images/gone_crop9.nii.gz (no longer in the datalist))" in note


def test_train_force_with_a_missing_training_file_moves_nothing(trained_work, converted, tmp_path):
    """train --force moved the trained model/ aside, then failed on a label deleted from the data."""
    out, _ = converted
    work, data = copy_work(trained_work, tmp_path), tmp_path / "data"
    shutil.copytree(out, data)
    assert run_work(work, "--mode", "ensemble", "--datalist", str(data / "datalist.json"),
                "--force_new_datalist").returncode == 0
    label = data / json.loads((data / "datalist.json").read_text())["training"][0]["label"]
    label.unlink()
    weights = (work / "segresnet_0" / "model" / "model.pt").read_bytes()
    proc = run_work(work, "--mode", "train", *TINY, "--force")
    assert proc.returncode != 0 and f"are not there ({label}" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "nothing of it was moved or trained" in proc.stdout + proc.stderr
    assert (work / "segresnet_0" / "model" / "model.pt").read_bytes() == weights
    assert (work / "segresnet_0" / "training_done.json").is_file()


def test_a_testing_image_listed_twice_is_predicted_once(trained_work, converted, tmp_path):
    out, _ = converted
    work, data = copy_work(trained_work, tmp_path), tmp_path / "data"
    shutil.copytree(out, data)
    dl = json.loads((data / "datalist.json").read_text())
    dl["testing"].append(dict(dl["testing"][0]))
    (data / "datalist.json").write_text(json.dumps(dl))
    proc = run_work(work, "--mode", "ensemble", "--datalist", str(data / "datalist.json"), "--force_new_datalist")
    n = len(dl["testing"]) - 1
    assert proc.returncode == 0 and "1 image(s) are listed more than once; each is predicted once" in proc.stdout
    assert f"0 probability maps written, {n} already there" in proc.stdout, proc.stdout


def test_scores_against_a_truth_corrected_since_are_computed_again(trained_work, synthetic, tmp_path):
    """The truth store edited in place (an annotation corrected): submit kept the old scores as up to date."""
    import zarr

    work, truth = copy_work(trained_work, tmp_path), tmp_path / "truth.zarr"
    shutil.copytree(synthetic / "test_truth.zarr", truth)
    assert run_work(work, "--mode", "submit", "--truth", str(truth)).returncode == 0
    scores = work / "submission" / "scores.json"
    first = json.loads(scores.read_text())
    assert first["truth_stamp"] and run_work(work, "--mode", "submit", "--truth", str(truth)).returncode == 0
    assert json.loads(scores.read_text()) == first  # the same truth: the cached scores stand
    crop = next(p for p in truth.iterdir() if p.name.startswith("crop"))
    label = next(p for p in crop.iterdir() if p.is_dir())
    arr = zarr.open(str(label), mode="r+")
    arr[...] = 0  # the annotation corrected in place
    assert run_work(work, "--mode", "submit", "--truth", str(truth)).returncode == 0
    again = json.loads(scores.read_text())
    assert again["truth_stamp"] != first["truth_stamp"] and again["labels"] != first["labels"]


def test_a_converted_crop_left_out_of_the_testing_list_is_named_as_such(trained_work, converted, tmp_path):
    """A crop taken out of the testing list was written empty as "crop not converted"."""
    out, _ = converted
    work, data = copy_work(trained_work, tmp_path), tmp_path / "data"
    shutil.copytree(out, data)
    dl = json.loads((data / "datalist.json").read_text())
    dropped = dl["testing"].pop(0)
    (data / "datalist.json").write_text(json.dumps(dl))
    assert run_work(work, "--mode", "ensemble", "--datalist", str(data / "datalist.json"),
                "--force_new_datalist").returncode == 0
    crop_id = json.loads((data / "datalist_items.json").read_text())[dropped["image"]]["crop_id"]
    proc = run_work(work, "--mode", "submit")
    assert proc.returncode == 0, proc.stderr
    assert f"crop{crop_id}/" in proc.stdout and "its image is not in the datalist's testing list" in proc.stdout, (
        proc.stdout)


def test_a_copied_work_dirs_kept_scores_name_its_own_submission(trained_work, synthetic, tmp_path):
    """cp -a of a scored work_dir: the scores kept as up to date named the original's submission.zip."""
    first = copy_work(trained_work, tmp_path)
    truth = str(synthetic / "test_truth.zarr")
    assert run_work(first, "--mode", "submit", "--truth", truth).returncode == 0
    second = tmp_path / "second"
    subprocess.run(["cp", "-a", str(first), str(second)], check=True)
    proc = run_work(second, "--mode", "submit", "--truth", truth)
    assert proc.returncode == 0 and "is up to date" in proc.stdout, proc.stdout
    scores = json.loads((second / "submission" / "scores.json").read_text())
    own = second / "submission" / "submission.zip"
    assert scores["submission"] == str(own) and str(own) in (second / "submission" / "scores.md").read_text()
    assert scores["labels"] == json.loads((first / "submission" / "scores.json").read_text())["labels"]


def test_predict_into_a_folder_holding_another_images_map_keeps_it(trained_work, converted, tmp_path):
    """Another image of the same file name predicted into the same --output_dir overwrote the
    first one's map without a word."""
    out, _ = converted
    images = [out / t["image"] for t in json.loads((out / "datalist.json").read_text())["testing"][:2]]
    dest = tmp_path / "preds"
    for folder, image in zip(("a", "b"), images):
        (tmp_path / folder).mkdir()
        shutil.copy2(image, tmp_path / folder / "x.nii.gz")
        proc = run_work(trained_work, "--mode", "predict", "--images", str(tmp_path / folder),
                        "--output_dir", str(dest))
        assert proc.returncode == 0, proc.stderr
    assert f"x_prob.zarr in {dest} held the map of another image of the same file name ({tmp_path / 'a'}" in (
        proc.stdout), proc.stdout
    (kept,) = (dest / "replaced").glob("x_prob.zarr-*")
    from auto3dseg.ensembling.probability_maps import open_probability_map

    first, second = (open_probability_map(p).probabilities() for p in (kept, dest / "x_prob.zarr"))
    assert first.shape != second.shape or not np.array_equal(first, second)


def test_a_bundle_config_that_cannot_be_read_gives_no_stale_bundle_note(trained_work, tmp_path):
    """A hyper_parameters.yaml that is no valid YAML made ensemble say the bundle was trained
    before every training file changed, then name the YAML error."""
    work = copy_work(trained_work, tmp_path)
    config = work / "segresnet_0" / "configs" / "hyper_parameters.yaml"
    config.write_text(config.read_text() + "bad: [unclosed\n")
    proc = run_work(work, "--mode", "ensemble", "--force")
    assert proc.returncode == 2 and str(config) in proc.stderr, proc.stderr
    assert "was trained before" not in proc.stdout + proc.stderr, proc.stdout


def test_a_truth_whose_crops_link_into_the_own_submission_is_refused(trained_work, synthetic, tmp_path):
    """--truth a store whose crop folders are links into submission.zarr scored 1.0 (only the
    --truth path itself was compared with the submission)."""
    work, truth = copy_work(trained_work, tmp_path), tmp_path / "truth.zarr"
    store = work / "submission" / "submission.zarr"
    truth.mkdir()
    shutil.copy2(synthetic / "test_truth.zarr" / ".zgroup", truth / ".zgroup")
    for crop in sorted(p for p in store.iterdir() if p.name.startswith("crop")):
        (truth / crop.name).symlink_to(crop)
    proc = run_work(work, "--mode", "submit", "--truth", str(truth))
    assert proc.returncode == 2 and "links into this work_dir's own submission" in proc.stderr, proc.stderr
    assert not (work / "submission" / "scores.json").exists()


def test_channel_names_edited_in_the_ensemble_manifest_are_refused(trained_work, tmp_path):
    """Two channel names swapped by hand in ensemble.json built each class from the other's channel."""
    work = copy_work(trained_work, tmp_path)
    manifest = work / "ensemble_output" / "ensemble.json"
    ens = json.loads(manifest.read_text())
    ens["channels"][-1], ens["channels"][-2] = ens["channels"][-2], ens["channels"][-1]
    manifest.write_text(json.dumps(ens))
    before = (work / "submission" / "submission.zip").read_bytes()
    proc = run_work(work, "--mode", "submit", "--force")
    assert proc.returncode == 2 and "the manifest was edited or mixed up" in proc.stderr, proc.stderr
    assert "--mode ensemble --force" in proc.stderr
    assert (work / "submission" / "submission.zip").read_bytes() == before


def test_maps_kept_after_an_inference_setting_was_edited_are_named(trained_work, converted, tmp_path):
    """sw_overlap edited in a bundle's config: ensemble kept the maps made with the old value without a word."""
    out, _ = converted
    work, data = copy_work(trained_work, tmp_path), tmp_path / "moved"
    shutil.copytree(out, data)  # a moved dataset re-points the configs: that alone is no edit
    proc = run_work(work, "--mode", "ensemble", "--datalist", str(data / "datalist.json"), "--force_new_datalist")
    assert proc.returncode == 0 and "configs of" not in proc.stdout, proc.stdout
    config = work / "segresnet_0" / "configs" / "hyper_parameters.yaml"
    config.write_text(config.read_text().replace("sw_overlap: 0.25", "sw_overlap: 0.5"))
    proc = run_work(work, "--mode", "ensemble")
    assert proc.returncode == 0 and "the configs of segresnet_0 changed since the maps" in proc.stdout, proc.stdout
    assert "--force predicts every map again" in proc.stdout


def test_training_files_written_again_with_the_same_sizes_are_not_called_changed(trained_work, converted, tmp_path):
    """The same data converted again (byte-identical files, new times) was reported as 20 changed files
    to retrain for."""
    import os

    from auto3dseg.orchestration.train_bundles import stale_bundles_note
    from auto3dseg.orchestration.workdir import list_bundles

    out, _ = converted
    work, data = copy_work(trained_work, tmp_path), tmp_path / "data"
    shutil.copytree(out, data)
    proc = run_work(work, "--mode", "train", *TINY, "--datalist", str(data / "datalist.json"), "--force_new_datalist")
    assert proc.returncode == 0, proc.stderr
    item = json.loads((data / "datalist.json").read_text())["training"][0]
    for key in ("image", "label"):  # written again, the same bytes
        f = data / item[key]
        os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    note = stale_bundles_note(list_bundles(work), "maps show what was learnt from the old files")
    assert note and "were written again since it was trained, with the same sizes" in note, note
    assert f"({item['image']}, {item['label']})" in note and "if they were only re-converted or copied" in note
    assert "changed (" not in note
    second = json.loads((data / "datalist.json").read_text())["training"][1]["label"]  # one now changed in size
    with open(data / second, "ab") as f:
        f.write(b"\0")
    note = stale_bundles_note(list_bundles(work), "maps show what was learnt")
    assert f"before 1 of its training file(s) changed ({second}); 2 more were written again with the same sizes" \
        in note, note
    assert item["image"] not in note
    # and the datalist re-converted in place, then analysed again: "not its training items or files: the
    # bundles stand" contradicted the note naming the changed file (probe round 23, N12)
    from auto3dseg.orchestration.workdir import datalist_changed

    (data / "datalist.json").write_text((data / "datalist.json").read_text() + "\n")
    proc = run_work(work, "--mode", "analyze", "--workers", "0", "--datalist", str(data / "datalist.json"))
    assert proc.returncode == 0 and "analysing again" in proc.stdout + proc.stderr, proc.stderr
    said = datalist_changed(work)
    assert said and "the bundles stand" not in said and "its analysis was made again" in said, said
    assert "segresnet_0" in said and "trained on earlier ones: --mode train --force retrains" in said, said


def test_a_map_made_from_an_image_of_another_voxel_size_says_so_whenever_it_is_kept(trained_work, tmp_path,
                                                                                     converted, capsys):
    """The voxel-size warning was printed once, by the run that wrote the map: a re-run (or
    --postprocess) used the map with no word and nothing recorded it (probe B4)."""
    image = converted[0] / json.loads((converted[0] / "datalist.json").read_text())["testing"][0]["image"]
    nii = nib.load(str(image))
    half = tmp_path / "half_spacing.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(nii.dataobj), nii.affine @ np.diag([0.5, 0.5, 0.5, 1.0])), str(half))
    out = tmp_path / "out"
    args = ["--mode", "predict", "--work_dir", str(trained_work), "--algos", "segresnet", "--output_dir", str(out),
            "--images", str(half)]
    assert run_auto3dseg.main(args) == 0
    err = capsys.readouterr().err  # a line of its own in a log, not after the bar's text (probe round 24, A-bar)
    assert any(line.startswith("warning: ") and "the model was trained at" in line for line in err.split("\n")), err
    (item,) = json.loads((out / "ensemble.json").read_text())["items"]
    assert any("the model was trained at" in w for w in item["warnings"]), item
    assert run_auto3dseg.main(args) == 0  # kept: said again
    said = capsys.readouterr()
    assert "up to date" in said.out and "the kept map of half_spacing.nii.gz was made with it" in said.out, said


def test_maps_no_manifest_lists_are_kept_not_written_over(trained_work, tmp_path):
    """A map dropped from ensemble.json (a later run on fewer images) was written over by the next run
    of other bundles, kept nowhere (probe round 21, G20)."""
    work = copy_work(trained_work, tmp_path)
    out = work / "ensemble_output"
    manifest = json.loads((out / "ensemble.json").read_text().replace(str(trained_work), str(work)))
    dropped = Path(manifest["items"].pop()["probabilities"]).name
    (out / "ensemble.json").write_text(json.dumps(manifest))
    before = zarr.open_array(str(out / dropped), mode="r")[:]
    proc = subprocess.run([sys.executable, SCRIPT, "--work_dir", str(work), "--mode", "ensemble", "--algos",
                           "segresnet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # as a log file
    assert proc.returncode == 0, proc.stdout  # the same bundles: the dropped map is redone
    # said on a line of its own: not after the progress bar's text (a `grep -v` of the bar hid it)
    assert any(line.startswith(f"note: 1 earlier map(s) ({dropped}, which no manifest lists")
               for line in proc.stdout.split("\n")), proc.stdout
    kept = list((out / "replaced").glob("unlisted-map-*"))
    assert len(kept) == 1 and np.array_equal(zarr.open_array(str(kept[0] / dropped), mode="r")[:], before)
    assert (out / dropped).is_dir()  # and predicted again in its place


def test_a_move_to_replaced_cut_short_leaves_the_manifest_to_finish_it(tmp_path, monkeypatch):
    """Killed between the moves, the manifest went first and the maps left behind were written over
    by the re-run, which found no manifest (probe round 21, G6): the maps move first now."""
    from auto3dseg.ensembling import kept_maps

    for name in ("a_prob.zarr", "b_prob.zarr"):
        (tmp_path / name).mkdir()
    (tmp_path / "ensemble.json").write_text("{}")
    real, calls = os.replace, []

    def killed_after_one(src, dst):
        if calls:
            raise KeyboardInterrupt  # the kill
        calls.append(src)
        real(src, dst)

    monkeypatch.setattr(kept_maps.os, "replace", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        kept_maps.keep_maps(tmp_path, ["a_prob.zarr", "b_prob.zarr"], what="ensemble", why="x",
                            manifests=["ensemble.json"], log=lambda m: None)
    assert (tmp_path / "ensemble.json").is_file() and (tmp_path / "b_prob.zarr").is_dir()  # still there to finish
    monkeypatch.undo()
    notes = []
    dest = kept_maps.keep_maps(tmp_path, kept_maps.maps_in(tmp_path), what="ensemble", why="x",
                               manifests=["ensemble.json"], log=notes.append)
    # into the folder the cut-short move began, not a second one (probe rounds 22-23 notes: the old ensemble
    # was split over two folders, the note naming only the second)
    assert sorted(p.name for p in dest.iterdir()) == ["a_prob.zarr", "b_prob.zarr", "ensemble.json"], notes
    assert len(list((tmp_path / "replaced").iterdir())) == 1 and "beside those a move cut short had put" in notes[0]
    (tmp_path / "c_prob.zarr").mkdir()  # a later, whole move gets a folder of its own
    later = kept_maps.keep_maps(tmp_path, ["c_prob.zarr"], what="ensemble", why="x", log=notes.append)
    assert later != dest and [p.name for p in later.iterdir()] == ["c_prob.zarr"] and "cut short" not in notes[-1]
    assert kept_maps.maps_in(tmp_path) == []


def test_out_of_fold_maps_of_bundles_trained_again_are_kept(trained_work, tmp_path):
    """--mode oof after train --force wrote over the fold's maps with no word (probe round 21, G12)."""
    work = copy_work(trained_work, tmp_path)
    proc = run_work(work, "--mode", "oof", "--algos", "segresnet")
    assert proc.returncode == 0, proc.stderr
    oof = json.loads((work / "oof" / "oof.json").read_text())
    fold0 = sorted(Path(it["probabilities"]).name for it in oof["items"] if it["fold"] == 0)
    before = {n: zarr.open_array(str(work / "oof" / n), mode="r")[:] for n in fold0}
    retrain_weights(work / "segresnet_0" / "model" / "model.pt")
    proc = run_work(work, "--mode", "oof", "--algos", "segresnet")
    assert proc.returncode == 0, proc.stderr
    assert f"{len(fold0)} earlier map(s) (made by the bundles of fold(s) 0 before they were trained again)" \
        in proc.stdout, proc.stdout
    kept = list((work / "oof" / "replaced").glob("oof-*"))
    assert len(kept) == 1 and (kept[0] / "oof.json").is_file()
    assert sorted(p.name for p in kept[0].glob("*_prob.zarr")) == fold0
    assert all(np.array_equal(zarr.open_array(str(kept[0] / n), mode="r")[:], a) for n, a in before.items())
    proc = run_work(work, "--mode", "oof", "--algos", "segresnet", "--force")  # the same weights: redone in place
    assert proc.returncode == 0 and len(list((work / "oof" / "replaced").glob("oof-*"))) == 1, proc.stdout


def test_a_map_that_cannot_be_moved_aside_says_what_was_moved_and_how_to_finish(tmp_path, monkeypatch):
    """An immovable map gave a bare "Operation not permitted" and the advice to choose another folder,
    which would leave the old maps half moved (probe round 22, N4)."""
    import errno

    from auto3dseg.ensembling import kept_maps

    for name in ("a_prob.zarr", "b_prob.zarr"):
        (tmp_path / name).mkdir()
    real = os.replace

    def refuse_b(src, dst):
        if Path(src).name == "b_prob.zarr":
            raise OSError(errno.EPERM, os.strerror(errno.EPERM), str(src))
        real(src, dst)

    monkeypatch.setattr(kept_maps.os, "replace", refuse_b)
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(RuntimeError) as err:
        kept_maps.keep_maps(tmp_path, ["a_prob.zarr", "b_prob.zarr"], what="ensemble", why="x", manifests=["run.json"],
                            log=lambda m: None)
    text = str(err.value)
    # the count is of files, the manifest among them (it said "1 of 3 moved" of "the earlier maps": 2 maps)
    assert text.startswith(f"{tmp_path / 'b_prob.zarr'}: Operation not permitted"), text
    assert "1 of 3 files (maps, then the manifest) moved" in text and (tmp_path / "run.json").is_file(), text
    assert "nothing was written over" in text and "run the same command again" in text
    assert (tmp_path / "b_prob.zarr").is_dir() and kept_maps.maps_in(tmp_path) == ["b_prob.zarr"]


def test_ensemble_and_oof_refuse_a_bundle_another_run_is_training(trained_work, tmp_path, monkeypatch):
    """An ensemble during another run's training called the bundle "not trained: left out" and
    ensembled without it (probe round 23, H16); generate already refused such a bundle."""
    from auto3dseg.ensembling.ensemble import run_ensemble
    from auto3dseg.ensembling.oof import run_oof
    from auto3dseg.orchestration.locks import LockBusy, bundle_lock

    monkeypatch.delenv("AUTO3DSEG_LOCK_WAIT", raising=False)
    work = copy_work(trained_work, tmp_path)
    before = sorted(p.name for p in (work / "ensemble_output").iterdir())
    with bundle_lock(work / "segresnet_0", log=lambda *_: None):  # as a running --mode train holds it
        for run in (run_ensemble, run_oof):
            with pytest.raises(LockBusy, match=r"segresnet_0 is busy: the training of segresnet_0 is running in "
                                               r"another process .*--wait_lock"):
                run(work, force=True, log=lambda *_: None)
    assert sorted(p.name for p in (work / "ensemble_output").iterdir()) == before  # nothing moved or written
    said: list[str] = []
    with bundle_lock(work / "segresnet_0", log=lambda *_: None) as lock:
        lock.release()  # ended: free again, and the ensemble runs
    assert run_ensemble(work, algos=["segresnet"], log=said.append).is_file()


def test_a_submit_failing_part_way_leaves_the_earlier_submission_whole(trained_work, tmp_path):
    """A submit that failed while writing crops had already moved the earlier zip and reports to
    replaced/, leaving submission/ half there and a .tmp store behind (probe round 23, H40)."""
    import yaml

    from auto3dseg.postprocess import load_postprocess_params
    from auto3dseg.submission.cellmap import write_submission

    work = copy_work(trained_work, tmp_path)
    out = work / "submission"
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    manifest = work / "ensemble_output" / "ensemble.json"
    manifest.write_text(manifest.read_text().replace(str(trained_work), str(work)))
    datalist = yaml.safe_load((work / "input.yaml").read_text())["datalist"]
    params = load_postprocess_params(overrides={"default": {"connectivity": 4}})  # the labelling library refuses it
    with pytest.raises(Exception, match="connectivit"):
        write_submission(manifest, datalist, out, params=params, force=True, log=lambda *_: None)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before and not list(out.glob(".tmp-*")) and not (out / "replaced").exists()
    said: list[str] = []
    write_submission(manifest, datalist, out, force=True, log=said.append)  # --force, same maps and parameters
    assert any("previous submission (the same maps and parameters: --force made it again) moved to" in m
               for m in said), said


def test_a_testing_image_moved_away_is_named_and_its_kept_maps_are_reused_once_back(trained_work, converted,
                                                                                    tmp_path):
    """A missing testing image was also said to have "changed since its map was written", and the
    manifest went with the failed run: every kept map was predicted again once the image was back
    (probe round 24, J19)."""
    out, _ = converted
    work, data = copy_work(trained_work, tmp_path), tmp_path / "moved"
    shutil.copytree(out, data)
    proc = run_work(work, "--mode", "ensemble", "--datalist", str(data / "datalist.json"), "--force_new_datalist")
    n = len(json.loads((data / "datalist.json").read_text())["testing"])
    assert proc.returncode == 0 and f"0 probability maps written, {n} already there" in proc.stdout, proc.stdout
    image = data / json.loads((data / "datalist.json").read_text())["testing"][0]["image"]
    shutil.move(str(image), str(tmp_path / "away.nii.gz"))
    proc = run_work(work, "--mode", "ensemble")
    assert proc.returncode != 0 and "changed since its map" not in proc.stdout + proc.stderr, proc.stdout
    assert str(image) in proc.stderr and f"1 of {n} image(s) could not be predicted" in proc.stderr, proc.stderr
    shutil.move(str(tmp_path / "away.nii.gz"), str(image))  # back, unchanged: every map is still current
    proc = run_work(work, "--mode", "ensemble")
    assert proc.returncode == 0 and f"0 probability maps written, {n} already there" in proc.stdout, proc.stdout
    assert not (work / "ensemble_output" / "replaced").exists()
