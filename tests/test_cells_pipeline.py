"""2-D cells through the one engine: analyze, generate, train, ensemble, submit, score."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import yaml

import run_auto3dseg
from auto3dseg.bundles.config import apply_overrides, derive_hyper_parameters
from auto3dseg.engine import training
from auto3dseg.engine.networks import NETWORKS

TINY = ["--override", "num_workers=0", "--override", "num_iterations_per_epoch=2", "--override", "segresnet:network#init_filters=8",
        "--override", "segresnet:network#dsdepth=2", "--override", "sw_batch_size=4"]
TINY_NET = {"segresnet": {"init_filters": 8, "dsdepth": 2}, "dints": {"num_blocks": 2, "num_depths": 2},
            "swinunetr": {"feature_size": 12}}


@pytest.fixture(scope="module")
def cell_run(converted_cells, synthetic_cells, tmp_path_factory):
    """``--mode full`` on the converted synthetic cells: segresnet, 2 folds, one epoch."""
    out, _ = converted_cells
    work = tmp_path_factory.mktemp("cells_full") / "work"
    args = ["--mode", "full", "--datalist", str(out / "datalist.json"), "--work_dir", str(work), "--workers", "0",
            "--algos", "segresnet", "--num_epochs", "1", "--patch_size", "32", *TINY,
            "--truth", str(synthetic_cells / "test_truth")]
    assert run_auto3dseg.main(args) == 0
    return work, args


def test_bundles_are_2d(cell_run):
    work, _ = cell_run
    cfg = yaml.safe_load((work / "segresnet_0" / "configs" / "hyper_parameters.yaml").read_text())
    assert cfg["spatial_dims"] == 2 and cfg["patch_size"] == [32, 32] and cfg["input_channels"] == 3
    assert cfg["intensity"] == {"mode": "range", "a_min": 0.0, "a_max": 255.0}
    assert cfg["output_activation"] == "sigmoid" and cfg["class_names"] == ["cell_interior", "cell_contact", "cell"]
    for fold in (0, 1):
        assert (work / f"segresnet_{fold}" / "model" / "model.pt").is_file()


def test_probability_maps_are_class_rows_columns(cell_run, converted_cells):
    from auto3dseg.ensembling.probability_maps import open_probability_map

    work, _ = cell_run
    out, _ = converted_cells
    ens = json.loads((work / "ensemble_output" / "ensemble.json").read_text())
    assert ens["channels"] == ["cell_interior", "cell_contact", "cell"] and len(ens["items"]) == 3
    for it in ens["items"]:
        img = nib.load(str(out / "images" / Path(it["image"]).name))  # x, y, 1, channel
        prob = open_probability_map(it["probabilities"])
        assert prob.shape == img.shape[:2][::-1] and prob.n_channels == 3 and prob.channels == ens["channels"]


def test_submit_writes_one_label_tiff_per_test_image_and_scores_it(cell_run, synthetic_cells):
    work, _ = cell_run
    cases = json.loads((synthetic_cells / "cases.json").read_text())["cases"]
    tests = {s: c for s, c in cases.items() if not c["labelled"]}
    labels = work / "submission" / "labels"
    assert sorted(p.name for p in labels.glob("*_label.tiff")) == sorted(f"{s}_label.tiff" for s in tests)
    for stem, case in tests.items():
        pred = tifffile.imread(labels / f"{stem}_label.tiff")
        assert pred.shape == (case["height"], case["width"]) and pred.dtype in (np.uint16, np.uint32)
    scores = json.loads((work / "submission" / "scores.json").read_text())
    assert scores["n_images"] == 3 and scores["missing"] == [] and 0.0 <= scores["mean_f1"] <= 1.0
    assert (work / "submission" / "scores.md").is_file() and (work / "submission" / "scores.csv").is_file()


def test_submit_truth_of_other_images_is_refused_and_other_scores_are_kept(cell_run, synthetic_cells, tmp_path,
                                                                           capsys):
    """--truth at the training labels scored mean F1 0 with exit 0 (no image matched) and
    overwrote the scores against the real truth."""
    work, _ = cell_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    first = (copy / "submission" / "scores.json").read_text()
    capsys.readouterr()
    rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(copy), "--truth", str(synthetic_cells / "labels")])
    err = capsys.readouterr().err
    assert rc == 2 and "no truth file" in err and "matches a prediction" in err, err
    assert (copy / "submission" / "scores.json").read_text() == first
    other = tmp_path / "truth_copy"
    shutil.copytree(synthetic_cells / "test_truth", other)
    assert run_auto3dseg.main(["--mode", "submit", "--work_dir", str(copy), "--truth", str(other)]) == 0
    assert json.loads((copy / "submission" / "scores.json").read_text())["truth"] == str(other)
    kept = list((copy / "submission" / "replaced").glob("scores-*/scores.json"))
    assert len(kept) == 1 and kept[0].read_text() == first


def test_second_run_redoes_nothing(cell_run, capsys):
    work, args = cell_run
    files = [p for p in work.rglob("*")
             if p.is_file() and p.name != "input.yaml" and "algorithm_templates" not in p.parts
             and not p.name.endswith(".lock")]  # a lock records its last holder
    before = {p: p.stat().st_mtime_ns for p in files}
    assert run_auto3dseg.main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_submit_reports_a_missing_map_and_exits_nonzero(cell_run, tmp_path, capsys):
    import shutil

    work, _ = cell_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    ens = json.loads((copy / "ensemble_output" / "ensemble.json").read_text())
    for it in ens["items"]:
        it["probabilities"] = it["probabilities"].replace(str(work), str(copy))
    shutil.rmtree(ens["items"][0]["probabilities"])
    (copy / "ensemble_output" / "ensemble.json").write_text(json.dumps(ens))
    before = {p.name: p.read_bytes() for p in (copy / "submission" / "labels").glob("*_label.tiff")}
    capsys.readouterr()
    rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(copy), "--force"])
    said = capsys.readouterr()
    assert rc != 0 and Path(ens["items"][0]["probabilities"]).name in said.out + said.err
    assert "--mode ensemble" in said.out + said.err
    # refused before anything moved: the previous submission is still in place
    assert before and {p.name: p.read_bytes() for p in (copy / "submission" / "labels").glob("*_label.tiff")} == before


@pytest.mark.parametrize("by", ["converter", "hand"])
def test_submit_reports_testing_images_added_after_the_ensemble(cell_run, converted_cells, tmp_path, capsys, by):
    """A testing image added to the datalist after the ensemble ran was left out of an "up to
    date" submission without a word (by hand: datalist.json edited, datalist_items.json not)."""
    work, _ = cell_run
    out, _ = converted_cells
    data, copy = tmp_path / "nifti", tmp_path / "work"
    shutil.copytree(out, data)
    shutil.copytree(work, copy)
    src = yaml.safe_load((copy / "input.yaml").read_text())
    src.update(datalist=str(data / "datalist.json"), dataroot=str(data))
    dl = json.loads((data / "datalist.json").read_text())
    shutil.copy(data / dl["testing"][0]["image"], data / "images" / "cell_13_new.nii.gz")
    dl["testing"].append({"image": "images/cell_13_new.nii.gz"})
    (data / "datalist.json").write_text(json.dumps(dl))
    if by == "converter":  # as a conversion with the new image writes it
        items = json.loads((data / "datalist_items.json").read_text())
        items["images/cell_13_new.nii.gz"] = dict(items[dl["testing"][0]["image"]], stem="cell_13_new")
        (data / "datalist_items.json").write_text(json.dumps(items))
    src.pop("datalist_sha1", None)
    (copy / "input.yaml").write_text(yaml.safe_dump(src))
    capsys.readouterr()
    assert run_auto3dseg.main(["--mode", "submit", "--work_dir", str(copy)]) == 1
    said = capsys.readouterr()
    assert "cell_13_new.nii.gz" in said.err and "--mode ensemble" in said.err, said.err
    assert "is up to date" not in said.out and "1 failed" in said.out, said.out
    rows = {Path(r["output"]).name: r for r in json.loads((copy / "submission" / "submission_report.json").read_text())}
    assert rows["cell_13_new_label.tiff"]["status"] == "missing" and len(rows) == len(dl["testing"])


def test_a_copy_missing_a_map_never_reads_the_original_s(cell_run, tmp_path, capsys):
    """The manifest records the maps' absolute paths: a copied work_dir whose own map is gone must
    not read the original's map of that name (a silently foreign submission); re-running the
    ensemble writes only the missing map again."""
    import shutil

    work, _ = cell_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    ens = json.loads((copy / "ensemble_output" / "ensemble.json").read_text())
    gone = copy / "ensemble_output" / Path(ens["items"][0]["probabilities"]).name
    assert Path(ens["items"][0]["probabilities"]).exists() and not str(ens["items"][0]["probabilities"]).startswith(
        str(copy))  # the manifest names the original's map, which exists
    shutil.rmtree(gone)
    capsys.readouterr()
    assert run_auto3dseg.main(["--mode", "submit", "--work_dir", str(copy), "--force"]) != 0
    assert gone.name in capsys.readouterr().err
    assert run_auto3dseg.main(["--mode", "ensemble", "--work_dir", str(copy)]) == 0
    n = len(ens["items"])
    assert f"1 probability maps written, {n - 1} already there" in capsys.readouterr().out
    assert gone.exists()
    items = json.loads((copy / "ensemble_output" / "ensemble.json").read_text())["items"]
    assert all(Path(it["probabilities"]).parent == copy / "ensemble_output" for it in items)


def test_predict_refuses_two_images_of_one_name_and_a_label_as_image(cell_run, converted_cells, tmp_path, capsys):
    """Two images named x.nii.gz from two folders wrote one x_prob.zarr (the first overwritten) while
    reporting two; a converted label given as an image was predicted without a word."""
    work, _ = cell_run
    out, _ = converted_cells
    dl = json.loads((out / "datalist.json").read_text())
    for folder, item in (("a", dl["testing"][0]), ("b", dl["testing"][1])):
        (tmp_path / folder).mkdir()
        shutil.copy(out / item["image"], tmp_path / folder / "x.nii.gz")
    capsys.readouterr()
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(work), "--images", str(tmp_path / "a" / "x.nii.gz"),
                             str(tmp_path / "b" / "x.nii.gz"), "--output_dir", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and "would both write x_prob.zarr" in err and not (tmp_path / "p").exists(), err
    label = out / dl["training"][0]["label"]
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(work), "--images", str(label),
                             "--output_dir", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert rc == 2 and "a label of the converted dataset" in err and str(out / dl["training"][0]["image"]) in err, err


def test_predict_postprocess_writes_label_tiffs(cell_run, converted_cells, synthetic_cells, tmp_path):
    work, _ = cell_run
    out, _ = converted_cells
    cases = json.loads((synthetic_cells / "cases.json").read_text())["cases"]
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(work), "--images",
                             str(out / "images" / "cell_11_test_he.nii.gz"), "--output_dir", str(tmp_path / "p"),
                             "--postprocess"])
    assert rc == 0
    label = tifffile.imread(tmp_path / "p" / "labels" / "cell_11_test_he_label.tiff")
    assert label.shape == (cases["cell_11_test_he"]["height"], cases["cell_11_test_he"]["width"])


@pytest.mark.parametrize("algo", NETWORKS)
def test_one_2d_epoch_of_each_network(algo, cell_run, converted_cells, tmp_path):
    work, _ = cell_run
    out, _ = converted_cells
    dl = json.loads((out / "datalist.json").read_text())
    small = dict(dl, training=[it for it in dl["training"] if "large" not in it["image"]][:3])
    for i, it in enumerate(small["training"]):
        it["fold"] = int(i == 0)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(small))
    stats = yaml.safe_load((work / "datastats.yaml").read_text())
    cfg = derive_hyper_parameters(algo, stats, small, datalist_path=path, dataroot=out, fold=0,
                                  bundle_root=tmp_path / algo, num_epochs=1, patch_size=64)
    cfg = apply_overrides(cfg, {"num_workers": 0, "sw_batch_size": 4, "num_iterations_per_epoch": 2, **{f"network#{k}": v for k, v in
                                                                          TINY_NET[algo].items()}})
    assert cfg["spatial_dims"] == 2 and len(cfg["patch_size"]) == 2
    summary = training.train(cfg)
    assert summary["epochs"] == 1 and summary["finished"] == "completed"
    progress = yaml.safe_load((tmp_path / algo / "model" / "progress.yaml").read_text())
    assert 0.0 <= progress[-1]["best_avg_dice_score"] <= 1.0


def test_submit_with_other_parameters_keeps_the_previous_labels(cell_run, tmp_path):
    import shutil

    work, _ = cell_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    ens = json.loads((copy / "ensemble_output" / "ensemble.json").read_text())
    for it in ens["items"]:
        it["probabilities"] = it["probabilities"].replace(str(work), str(copy))
    (copy / "ensemble_output" / "ensemble.json").write_text(json.dumps(ens))
    before = {p.name: p.read_bytes() for p in (copy / "submission" / "labels").glob("*_label.tiff")}
    params = tmp_path / "pp.yaml"
    params.write_text("min_cell_px: 400\n")
    assert run_auto3dseg.main(["--mode", "submit", "--work_dir", str(copy), "--postprocess_params", str(params)]) == 0
    kept = list((copy / "submission" / "replaced").glob("submission-*"))
    assert len(kept) == 1 and before
    assert {p.name: p.read_bytes() for p in (kept[0] / "labels").glob("*_label.tiff")} == before
    assert (kept[0] / "submission_signature.txt").is_file()
    assert (copy / "submission" / "submission_signature.txt").is_file()


def test_oof_cross_validated_f1_equals_the_scorer_by_hand(cell_run, converted_cells, capsys):
    from auto3dseg.evaluation.cellseg import score_folders

    work, _ = cell_run
    out, _ = converted_cells
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(work)]) == 0
    printed = capsys.readouterr().out
    assert "Cross-validated mean F1 (out-of-fold, official rules)" in printed
    oof = json.loads((work / "oof" / "oof.json").read_text())
    dl = json.loads((out / "datalist.json").read_text())
    assert len(oof["items"]) == len(dl["training"]) and not oof["missing"]
    assert all(it["bundles"] == [f"segresnet_{it['fold']}"] and it["verified"] for it in oof["items"])
    cv = json.loads((work / "cv" / "scores.json").read_text())
    items = json.loads((out / "datalist_items.json").read_text())
    tiled = {m["stem"] for m in items.values() if m.get("tiled")}
    whole = {m["stem"] for m in items.values() if m.get("usage") == "train"}
    # every training image is scored, the tiled one from its tiles' maps joined on its own grid
    assert tiled and set(cv["cv"]["tiled"]) == tiled and not cv["cv"]["unscored"]
    assert set(cv["cv"]["scored"]) == whole
    for stem in tiled:
        assert tifffile.imread(work / "cv" / "labels" / f"{stem}_label.tiff").shape == tifffile.imread(
            out / "instances" / f"{stem}_label.tiff").shape
    # by hand: the truth instances of the scored images against cv/labels
    truth = work.parent / "truth_by_hand"
    truth.mkdir(exist_ok=True)
    for stem in whole:
        target = truth / f"{stem}_label.tiff"
        if not target.exists():
            target.symlink_to(out / "instances" / f"{stem}_label.tiff")
    by_hand = score_folders(truth, work / "cv" / "labels", progress=False)
    assert by_hand["mean_f1"] == cv["mean_f1"] and by_hand["n_scored"] == len(whole)


def test_cells_cv_lists_a_missing_or_unreadable_truth_and_leaves_it_out(cell_run, converted_cells, tmp_path):
    import shutil

    from auto3dseg.evaluation.cv import run_cv

    work, _ = cell_run
    out, _ = converted_cells
    if not (work / "oof" / "oof.json").is_file():
        assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(work)]) == 0
    data, copy = tmp_path / "data", tmp_path / "work"
    shutil.copytree(out, data)
    shutil.copytree(work, copy, symlinks=True)
    oof = json.loads((copy / "oof" / "oof.json").read_text())
    oof["items"] = [{**it, "image": it["image"].replace(str(out), str(data))} for it in oof["items"]]
    (copy / "oof" / "oof.json").write_text(json.dumps({**oof, "datalist": str(data / "datalist.json")}))
    full = json.loads((work / "cv" / "scores.json").read_text())
    whole = sorted(set(full["cv"]["scored"]) - set(full["cv"]["tiled"]))
    gone, broken = whole[0], whole[1]
    (data / "instances" / f"{gone}_label.tiff").unlink()
    (data / "instances" / f"{broken}_label.tiff").write_bytes(b"not a tiff")
    notes = []
    cv = json.loads(run_cv(copy, force=True, log=notes.append).read_text())
    reasons = {u["item"]: u["reason"] for u in cv["cv"]["unscored"]}
    assert "is not there" in reasons[gone] and "scoring failed" in reasons[broken]
    assert set(cv["cv"]["scored"]) == set(full["cv"]["scored"]) - {gone, broken}
    assert cv["n_images"] == len(cv["cv"]["scored"]) and not cv["failed"]  # the figure covers what it says
    assert any(gone in n for n in notes) and any(broken in n for n in notes)


def test_tuning_cells_evaluates_as_the_cv_scorer_and_keeps_defaults_on_few_images(cell_run, capsys):
    work, _ = cell_run
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(work)]) == 0  # kept when already there
    cv = json.loads((work / "cv" / "scores.json").read_text())
    rc = run_auto3dseg.main(["--mode", "tune_postprocess", "--work_dir", str(work), "--tune_min_crops", "99"])
    printed = capsys.readouterr().out
    report = json.loads((work / "tuning" / "report.json").read_text())
    (row,) = report["classes"]
    assert rc == 0 and row["kept"] and "fewer than 99" in row["reason"] and not (work / "postprocess_tuned.yaml").exists()
    # the tuning's objective at the defaults is the cross-validated mean F1 itself
    assert row["score_before"] == pytest.approx(cv["mean_f1"], abs=1e-12)
    assert "the defaults kept for every class" in printed


def test_tuning_cells_from_a_start_file_uses_the_packaged_values_when_they_score_higher(cell_run, tmp_path):
    from auto3dseg.postprocess.cells import load_cell_params
    from auto3dseg.postprocess.tune import TUNED_YAML, tune_postprocess

    work, _ = cell_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy)]) == 0
    packaged_f1 = json.loads((copy / "cv" / "scores.json").read_text())["mean_f1"]  # with the packaged values
    assert packaged_f1 > 0
    base = tmp_path / "base.yaml"
    base.write_text("min_cell_px: 100000000\n")  # every cell removed: F1 0
    notes = []
    report = tune_postprocess(copy, base=base, budget=0, log=notes.append)
    (row,) = report["classes"]
    assert row["score_before"] == 0 and row["score_after"] == pytest.approx(packaged_f1, abs=1e-12)
    assert not row["kept"] and row["source"] == "packaged defaults" and row["changed"]["min_cell_px"] != 100000000
    assert any("the packaged defaults score higher" in n for n in notes)
    assert load_cell_params(str(copy / TUNED_YAML)) == load_cell_params()


def test_predict_of_a_volume_with_a_2d_model_names_the_file(cell_run, converted, tmp_path, capsys):
    work, _ = cell_run
    out, _ = converted
    volume = out / json.loads((out / "datalist.json").read_text())["testing"][0]["image"]
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(work), "--images", str(volume),
                             "--output_dir", str(tmp_path / "p")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{volume}: shape" in err and "is not a 2-D image" in err and "converters.cells.convert" in err
    assert "applying transform" not in err


def test_cell_scores_against_a_truth_corrected_since_are_computed_again(cell_run, synthetic_cells, tmp_path):
    import tifffile

    work, _ = cell_run
    copy, truth = tmp_path / "work", tmp_path / "truth"
    shutil.copytree(work, copy)
    shutil.copytree(synthetic_cells / "test_truth", truth)
    args = ["--mode", "submit", "--work_dir", str(copy), "--truth", str(truth)]
    assert run_auto3dseg.main(args) == 0
    scores = copy / "submission" / "scores.json"
    first = json.loads(scores.read_text())
    assert run_auto3dseg.main(args) == 0 and json.loads(scores.read_text()) == first  # cached
    label = next(truth.glob("*_label.tiff"))
    tifffile.imwrite(label, np.zeros_like(tifffile.imread(label)))  # corrected in place
    assert run_auto3dseg.main(args) == 0
    assert json.loads(scores.read_text())["truth_stamp"] != first["truth_stamp"]


def test_submit_truth_of_links_to_its_own_labels_is_refused(cell_run, tmp_path, capsys):
    """--truth a folder of per-file links to the submission's own labels scored mean F1 1.0."""
    work, _ = cell_run
    copy, links = tmp_path / "work", tmp_path / "links"
    shutil.copytree(work, copy)
    links.mkdir()
    for f in (copy / "submission" / "labels").glob("*_label.tiff"):
        (links / f.name).symlink_to(f)
    before = (copy / "submission" / "scores.json").read_text()
    capsys.readouterr()
    rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(copy), "--truth", str(links)])
    err = capsys.readouterr().err
    assert rc == 2 and "are the truth files themselves" in err and "scored against itself" in err, err
    assert (copy / "submission" / "scores.json").read_text() == before


def test_cells_cv_ends_on_a_full_disk_and_keeps_no_score_over_fewer_images(cell_run, tmp_path, monkeypatch):
    """A full disk while one label was written made it an "unscored item": exit 0, a score over
    fewer images, kept as up to date once the disk was freed."""
    import errno

    from auto3dseg.evaluation.cv import run_cv
    from auto3dseg.postprocess import cells as cell_post

    work, _ = cell_run
    if not (work / "oof" / "oof.json").is_file():
        assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(work)]) == 0
    full = json.loads((work / "cv" / "scores.json").read_text())
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    real = cell_post.write_label_tiff
    victim = sorted(full["cv"]["scored"])[-1]

    def disk_full(cells, path, *args, **kwargs):
        if Path(path).name.startswith(victim):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(cells, path, *args, **kwargs)

    monkeypatch.setattr(cell_post, "write_label_tiff", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        run_cv(copy, force=True, log=lambda *_: None)
    assert not (copy / "cv" / "scores.json").exists()  # the previous scores moved aside, none over fewer images
    monkeypatch.setattr(cell_post, "write_label_tiff", real)
    again = json.loads(run_cv(copy, log=lambda *_: None).read_text())
    assert again["cv"]["scored"] == full["cv"]["scored"] and again["mean_f1"] == full["mean_f1"]
