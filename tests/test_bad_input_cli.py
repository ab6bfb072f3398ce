"""Bad command-line input: settings given at training, counts of 0, overrides of the wrong type,
flags of another mode, raw images given to predict (a work_dir's own bad input: test_bad_input_workdir.py).
Each is either applied (and said) or refused with one line before anything runs."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import yaml

import run_auto3dseg
from auto3dseg.bundles.checks import check_overrides
from auto3dseg.bundles.config import load_bundle_config, settings_overrides
from auto3dseg.orchestration import slurm as slurm_mod
from auto3dseg.orchestration.train_bundles import overrides_for, training_command
from auto3dseg.orchestration.workdir import list_bundles
from pipeline_work import TINY_NET, bundle_hp, file_times


# ----------------------------------------------------------------------------- 1. --num_epochs/--patch_size at train
def test_train_settings_reach_the_existing_bundles_config(generated, capsys):
    work = generated
    bundles = list_bundles(work)
    assert [bundle_hp(work, b.name)["num_epochs"] for b in bundles] == [1, 1]
    extra, lines = settings_overrides(bundles, work, num_epochs=3, patch_size=32, overrides={})
    assert extra == {"segresnet:num_epochs": 3, "segresnet:patch_size": [32, 32, 32]}
    assert [line.split(":")[0] for line in lines] == ["segresnet_0", "segresnet_1"]
    assert "num_epochs 1 -> 3" in lines[0] and "patch_size [16, 16, 16] -> [32, 32, 32]" in lines[0]
    for b in bundles:  # the config each training loads, as train_bundles passes the overrides
        cmd = training_command(b.path, overrides_for(b.algo, extra))
        assert "--num_epochs=3" in cmd and "--patch_size=[32,32,32]" in cmd
        files = sorted(str(f) for f in (b.path / "configs").glob("*.yaml"))
        cfg = load_bundle_config(files, overrides_for(b.algo, extra))
        assert cfg["num_epochs"] == 3 and cfg["patch_size"] == [32, 32, 32]
    # an explicit --override of the same key wins; values the bundles already hold change nothing
    extra, lines = settings_overrides(bundles, work, num_epochs=3, overrides={"num_epochs": "5"})
    assert extra == {} and lines == []
    assert settings_overrides(bundles, work, num_epochs=1, patch_size=16, overrides={}) == ({}, [])


def test_train_with_another_num_epochs_trains_that_many(generated, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(generated, work, ignore=shutil.ignore_patterns("segresnet_1"))
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--algos", "segresnet", "--gpus", "cpu",
                             "--num_epochs", "2", *TINY_NET])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "segresnet_0: num_epochs 1 -> 2" in out
    used = yaml.safe_load((work / "segresnet_0" / "model" / "effective_config.yaml").read_text())
    assert used["num_epochs"] == 2
    state = yaml.safe_load((work / "segresnet_0" / "model" / "training_state.yaml").read_text())
    assert state["epochs_done"] == 2
    # trained now: a later --num_epochs is not silently dropped either
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--num_epochs", "4", *TINY_NET])
    assert rc == 0 and "note: segresnet_0 is trained already: not retrained with num_epochs 1 -> 4" in \
        capsys.readouterr().out


def test_iteration_budget_of_a_bundle_gives_way_to_num_epochs(generated, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(generated, work, ignore=shutil.ignore_patterns("segresnet_1"))
    hp = work / "segresnet_0" / "configs" / "hyper_parameters.yaml"
    hp.write_text(hp.read_text().replace("budget: null", "budget: '5000'"))
    extra, lines = settings_overrides(list_bundles(work), work, num_epochs=2, overrides={})
    assert extra == {"segresnet:num_epochs": 2, "segresnet:budget": None} and "budget 5000 -> none" in lines[0]
    check_overrides(list_bundles(work), extra)  # what training then receives passes the override checks


def test_other_templates_name_the_override_instead(tmp_path):
    bundle = tmp_path / "dints_0"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "algo_object.json").write_text("{}")
    (bundle / "configs" / "hyper_parameters.yaml").write_text(
        "training:\n  num_epochs: 5\n  roi_size: [96, 96, 96]\n  roi_size_valid: [96, 96, 96]\n")
    with pytest.raises(ValueError, match=r"--num_epochs 3: dints_0 .*training#num_epochs=5.*"
                                         r"--override dints:training#num_epochs=3"):
        settings_overrides(list_bundles(tmp_path), tmp_path, num_epochs=3)
    assert settings_overrides(list_bundles(tmp_path), tmp_path, num_epochs=5, patch_size=96) == ({}, [])


# ----------------------------------------------------------------------------- 2. counts of 0 or less
@pytest.mark.parametrize("flag,value,floor", [("--slurm_cpus", "0", 1), ("--slurm_cpus", "-2", 1),
                                              ("--slurm_gpus", "-1", 0), ("--workers", "-1", 0),
                                              ("--n_best", "0", 1), ("--fold", "-1", 0), ("--task_index", "-1", 0),
                                              ("--num_epochs", "0", 1)])
def test_counts_that_make_no_sense_are_refused_at_parsing(flag, value, floor, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_auto3dseg.main(["--mode", "slurm", "--datalist", str(tmp_path / "d.json"), "--work_dir",
                            str(tmp_path / "w"), "--dry_run", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: {value} is not allowed: give a whole number >= {floor}" in err
    assert not (tmp_path / "w").exists()


def test_gpus_and_slurm_environment_counts_are_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_auto3dseg.main(["--mode", "train", "--work_dir", str(tmp_path), "--gpus", "-1"])
    assert "argument --gpus: '-1' is not allowed" in capsys.readouterr().err
    assert run_auto3dseg.build_parser().parse_args(["--mode", "train", "--gpus", "0,1"]).gpus == "0,1"
    assert run_auto3dseg.build_parser().parse_args(["--mode", "slurm", "--slurm_gpus", "0"]).slurm_gpus == 0
    cluster = slurm_mod.ClusterInfo(max_cpus=4, max_mem_mb=16000, max_gpus=0)
    for env in ({"AUTO3DSEG_SLURM_CPUS": "0"}, {"AUTO3DSEG_SLURM_CPUS": "two"}, {"AUTO3DSEG_SLURM_GPUS": "-1"}):
        with pytest.raises(slurm_mod.SlurmError, match=r"AUTO3DSEG_SLURM_(CPUS|GPUS) .*give a whole number >= "):
            slurm_mod.resolve_resources({}, cluster, environ=env)
    assert slurm_mod.resolve_resources({}, cluster, environ={"AUTO3DSEG_SLURM_GPUS": "0"}).gpus_per_task == 0


# ----------------------------------------------------------------------------- 3. overrides of the wrong type
@pytest.mark.parametrize("override,expected", [
    ("num_iterations_per_epoch=abc", "expected a whole number >= 1 (segresnet_0 has 250), "
                                     "e.g. --override num_iterations_per_epoch=250"),
    ("learning_rate=fast", "expected a number"),
    ("num_epochs=-3", "expected a whole number >= 1"),
    ("num_iterations_per_epoch=0", "expected a whole number >= 1"),
    ("learning_rate=0", "expected a number > 0"),
    ("num_workers=-1", "expected a whole number >= 0"),
    ("amp=maybe", "expected true or false (segresnet_0 has true), e.g. --override amp=true"),
    ("patch_size=[32,32]", "expected a list of 3 whole numbers or one number"),
    ("segresnet:network#blocks_down=4", "expected a list of whole numbers >= 1"),
    ("budget=lots", "expected iterations or a time per bundle"),
    ("num_epochs_per_validation=often", "expected auto or a whole number >= 1"),
])
def test_override_of_the_wrong_type_is_one_line_before_training(generated, override, expected, capsys):
    before = file_times(generated)
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(generated), "--override", override])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --override {override}: {expected}")
    assert "nothing was trained" in lines[0]
    assert file_times(generated) == before and not (generated / "segresnet_0" / "training.log").exists()


def test_overrides_of_the_right_type_and_unknown_keys(generated):
    bundles = list_bundles(generated)
    check_overrides(bundles, {"learning_rate": "1e-4", "num_epochs": "3", "patch_size": "[32,32,32]",
                              "segresnet:patch_size": "32", "amp": "false", "budget": "2h", "device": "cpu",
                              "num_epochs_per_validation": "auto", "cache_dir": "/tmp/x", "sw_memory_gb": "2"})
    with pytest.raises(ValueError, match=r"(?s)unknown training override.*no key 'num_epoch'.*did you mean num_epochs"):
        check_overrides(bundles, {"num_epoch": "3"})


def test_override_counts_are_checked_before_the_analysis_of_full(converted, tmp_path, capsys):
    rc = run_auto3dseg.main(["--mode", "full", "--datalist", str(converted[0] / "datalist.json"), "--work_dir",
                             str(tmp_path / "w"), "--override", "num_epochs=0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--override num_epochs=0: expected a whole number >= 1" in err and not (tmp_path / "w").exists()


@pytest.mark.parametrize("text, words", [
    ("mito:\n  threshold: abc\n", "mito.threshold = 'abc' has the wrong type: expected a number"),
    ("mito:\n  watershed: 1\n", "mito.watershed = 1 has the wrong type: expected true or false"),
    # accepted, these keys changed nothing: cyto is never split into objects
    ("cyto:\n  watershed: true\n  min_distance_nm: 50\n", "cyto is a semantic class (scored as a mask, never "
     "split into objects): watershed, min_distance_nm apply to instance classes only"),
    (None, "not found"),
    # a key given twice: YAML keeps the last one (0.3) without a word
    ("mito:\n  threshold: 0.5\n  threshold: 0.3\n", ":3:3: not valid YAML (key 'threshold' given twice (also on line 2)"),
    ("ves:\n  threshold: 0.4\nves:\n  min_size_nm3: 9\n", "key 'ves' given twice (also on line 1)"),
])
def test_a_bad_postprocess_params_file_is_one_line_before_any_step(generated, tmp_path, capsys, text, words):
    params = tmp_path / "pp.yaml"
    if text is not None:
        params.write_text(text)
    before = file_times(generated)
    rc = run_auto3dseg.main(["--mode", "full", "--work_dir", str(generated), "--datalist",
                             yaml.safe_load((generated / "input.yaml").read_text())["datalist"],
                             "--postprocess_params", str(params), "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(params) in err and words in err, err
    assert file_times(generated) == before


def test_wrong_typed_cell_parameters_are_a_value_error_naming_the_type(tmp_path):
    from auto3dseg.postprocess.cells import load_cell_params

    params = tmp_path / "cells.yaml"
    params.write_text("min_cell_px: 1.5\n")
    with pytest.raises(ValueError, match=r"min_cell_px = 1.5 has the wrong type: expected a whole number"):
        load_cell_params(str(params))


def test_algos_matching_no_bundle_lists_the_bundles(generated, capsys):
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(generated), "--algos", "segresnt"])
    err = capsys.readouterr().err
    assert rc == 2 and "--algos segresnt matches no bundle" in err and "segresnet_0" in err, err


@pytest.mark.parametrize("flags", [["--mode", "submit", "--tta"], ["--mode", "oof", "--tune_budget", "8"],
                                   ["--mode", "submit", "--tune_min_gain", "0.1"],
                                   ["--mode", "ensemble", "--truth", "t.zarr"],
                                   ["--mode", "tune_postprocess", "--truth", "t.zarr"],
                                   ["--mode", "train", "--test_manifest", "m.csv"],
                                   ["--mode", "predict", "--postprocess_params", "p.yaml", "--images", "a.nii.gz"],
                                   ["--mode", "full", "--force", "--datalist", "d.json"],
                                   ["--mode", "ensemble", "--n_best", "3"],
                                   ["--mode", "slurm", "--gpus", "2", "--datalist", "d.json"],
                                   ["--mode", "train", "--slurm_cpus", "4"],
                                   ["--mode", "submit", "--algos", "dints"],
                                   ["--mode", "tune_postprocess", "--algos", "dints"],
                                   ["--mode", "analyze", "--algos", "dints", "--datalist", "d.json"]])
def test_flags_of_another_mode_are_refused_not_ignored(generated, capsys, flags):
    before = file_times(generated)
    with pytest.raises(SystemExit) as exc:
        run_auto3dseg.main([*flags, "--work_dir", str(generated)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"error: {flags[2]}" in err, err
    assert file_times(generated) == before


@pytest.mark.parametrize("flags, said", [
    (["--mode", "analyze", "--work_dir", ""], "--work_dir is empty (an unset shell variable?)"),
    (["--mode", "predict", "--output_dir", " ", "--images", "a.nii.gz"], "--output_dir is empty"),
    (["--mode", "train", "--fold", "1", "--task_index", "0"], "--fold and --task_index both choose the bundle"),
    (["--mode", "generate", "--num_epochs", "2", "--budget", "100"], "--num_epochs and --budget both set"),
    (["--mode", "submit", "--test_manifest", "nope.csv"], "--test_manifest nope.csv: no such file"),
    (["--mode", "predict", "--images", ""], "--images is empty"),
    (["--mode", "submit", "--postprocess_params", "."], "--postprocess_params . is a folder: give the file"),
])
def test_flags_that_cannot_mean_what_they_say_are_refused(generated, tmp_path, monkeypatch, capsys, flags, said):
    """An empty --work_dir wrote the analysis into the current folder; --fold beside --task_index,
    and --num_epochs beside --budget, were ignored without a word (probe C13, C7, C4)."""
    monkeypatch.chdir(tmp_path)
    if "--work_dir" not in flags:
        flags = [*flags, "--work_dir", str(generated)]
    with pytest.raises(SystemExit) as exc:
        run_auto3dseg.main(flags)
    assert exc.value.code == 2 and said in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_an_output_folder_that_is_a_file_or_cannot_be_made_is_named(converted, tmp_path, capsys):
    """'File exists' read as if an earlier output were in the way; a folder that cannot be made
    gave a bare '[Errno 2]' (probe P7, P8)."""
    blocker = tmp_path / "isfile"
    blocker.write_text("")
    datalist = str(converted[0] / "datalist.json")
    for work, said in ((blocker, f"{blocker} is a file, not a folder: give a folder as --work_dir"),
                       (blocker / "sub", f"{blocker} is a file, not a folder")):
        rc = run_auto3dseg.main(["--mode", "analyze", "--datalist", datalist, "--work_dir", str(work)])
        err = capsys.readouterr().err
        assert rc == 2 and said in err and "Traceback" not in err, err
    from converters.outputs import os_error_message

    text = os_error_message(FileNotFoundError(2, "No such file or directory", "/proc/foo"), "--output_dir")
    assert text.startswith("/proc/foo: No such file or directory. It is not there, or a folder cannot be made")
    assert blocker.read_text() == ""


@pytest.mark.parametrize("convert, flags, said", [
    ("cellmap", ["--output_dir", ""], "--output_dir is empty (an unset shell variable?)"),
    ("cellmap", ["--output_dir", "{file}"], "is a file, not a folder"),
    ("cellmap", ["--output_dir", "{file}", "--dry_run"], "is a file, not a folder"),
    ("cellmap", ["--output_dir", "{tmp}/o", "--test_manifest", "{tmp}"], "is a folder: give the file"),
    ("cellmap", ["--output_dir", "/proc/no_such_folder"], "a folder cannot be made there"),
    ("cells", ["--images", "", "--output_dir", "{tmp}/o"], "--images is empty"),
    ("cells", ["--images", "{tmp}", "--output_dir", "/proc/no_such_folder"], "a folder cannot be made there"),
])
def test_converters_name_a_path_flag_that_cannot_be_what_it_is_for(synthetic, tmp_path, capsys, convert, flags, said):
    """An empty --output_dir wrote a whole conversion into the current folder; a folder given as
    --datasplit or --test_manifest, or a folder that cannot be made, was a bare '[Errno ...]'; the
    dry run took a file as --output_dir (probe round 19: N1, N6, N9-N11)."""
    from converters.cellmap.convert import main as cellmap_main
    from converters.cells.convert import main as cells_main

    blocker = tmp_path / "isfile"
    blocker.write_text("")
    (tmp_path / "x.tif").write_bytes(b"")
    flags = [f.format(file=blocker, tmp=tmp_path) for f in flags]
    if convert == "cellmap":
        argv, main = ["--datasplit", str(synthetic / "datasplit.csv"), *flags, "--no_progress"], cellmap_main
    else:
        argv, main = [*flags, "--no_progress"], cells_main
    try:
        rc = main(argv)
    except SystemExit as exc:  # a usage error
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and said in err and "Errno" not in err and "Traceback" not in err, err
    assert blocker.read_text() == ""


def test_every_flag_a_mode_reads_is_accepted(generated, capsys):
    # the flags the SLURM jobs pass to each step are among those the step reads (the final job's oof and tuning
    # get the scoring flags, not --truth or --test_manifest)
    p = run_auto3dseg.build_parser()
    from auto3dseg.orchestration.flags import ignored_flags

    for argv in (["--mode", "oof", "--require_trained", "--ensemble_method", "best_n", "--n_best", "3",
                  "--score_rules", "strict", "--postprocess_params", "p.yaml", "--tta"],
                 ["--mode", "tune_postprocess", "--score_rules", "strict", "--postprocess_params", "p.yaml"],
                 ["--mode", "submit", "--require_trained", "--truth", "t", "--test_manifest", "m", "--force"],
                 ["--mode", "predict", "--images", "a", "--postprocess", "--postprocess_params", "p", "--tta"],
                 ["--mode", "train", "--task_index", "0", "--gpus", "cpu", "--num_epochs", "2", "--override", "a=1"],
                 ["--mode", "submit", "--datalist", "d.json", "--dataroot", "r", "--force_new_datalist"]):
        assert ignored_flags(p.parse_args(argv), p) == [], argv


def test_cellmap_only_flags_are_refused_for_cells(converted_cells, tmp_path, capsys):
    cells = converted_cells[0] / "datalist.json"
    for flags in (["--score_rules", "strict"], ["--test_manifest", "m.csv"], ["--tune_min_objects", "3"]):
        mode = "tune_postprocess" if flags[0].startswith("--tune") else "submit"
        with pytest.raises(SystemExit) as exc:
            run_auto3dseg.main(["--mode", mode, "--datalist", str(cells), "--work_dir", str(tmp_path / "w"), *flags])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and f"{flags[0]} {flags[1]} does nothing for 2-D cells" in err, err
    assert not (tmp_path / "w").exists()


def test_a_target_spacing_that_is_no_size_is_refused(tmp_path, capsys):
    from converters.cellmap import convert as cc

    for bad in ("nan", "0", "-8", "inf"):
        with pytest.raises(SystemExit):
            cc.main(["--data_root", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--target_spacing", bad, "8",
                     "8"])
        err = capsys.readouterr().err
        assert "--target_spacing" in err and "finite number of nm greater than 0" in err, err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- 5. raw images given to predict
def test_predict_on_raw_images_says_how_to_convert(generated, converted_cells, tmp_path, capsys):
    raw = tmp_path / "cell_01.tif"
    raw.write_bytes(b"II*\x00")
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(generated), "--images", str(raw)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"{raw}: a raw TIF image" in err and "needs the converted image" in err
    assert "python -m converters.cellmap.convert" in err and "converters.cells" not in err
    assert not (generated / "predictions").exists()

    cells_work = tmp_path / "cells_work"  # a 2-D cells work_dir: the cells converter, with the image's folder
    cells_work.mkdir()
    cells = converted_cells[0]
    (cells_work / "input.yaml").write_text(yaml.safe_dump({"datalist": str(cells / "datalist.json"),
                                                           "dataroot": str(cells)}))
    zarr = tmp_path / "jrc_new.zarr"
    (zarr / "recon-1").mkdir(parents=True)
    for images in ([str(raw)], [str(zarr / "recon-1"), str(raw)]):
        rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(cells_work), "--images", *images])
        err = capsys.readouterr().err
        assert rc == 2 and "needs the converted image" in err
        assert f"python -m converters.cells.convert --images {tmp_path}" in err
    assert "a Zarr store (and 1 more raw image(s))" in err


def test_predict_on_a_converted_dataset_folder_names_its_images_folder(generated, converted, capsys):
    """--images <converted dataset>: each JSON file there was told to be "converted first"."""
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(generated), "--images", str(converted[0])])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert f"give --images {converted[0] / 'images'}" in err and "convert it first" not in err
    assert not (generated / "predictions").exists()


def test_predict_into_a_folder_of_the_work_dir_is_refused(generated, capsys):
    before = file_times(generated)
    for sub in ("ensemble_output", "segresnet_0/model", "submission", ".", "preprocessed", "review"):
        rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(generated), "--images", "a.nii.gz",
                                 "--output_dir", str(generated / sub)])
        err = capsys.readouterr().err
        assert rc == 2 and "--output_dir" in err and "predictions" in err, err
    assert file_times(generated) == before


def test_predict_into_a_converted_dataset_or_a_store_is_refused(generated, converted, tmp_path, capsys):
    """The converter's output folder is a natural place for "predictions next to the data": its
    labels/ were moved aside as "previous labels" (the datalist then lost every training label)."""
    data = tmp_path / "data"
    shutil.copytree(converted[0], data)
    store = tmp_path / "truth.zarr"
    (store / "crop1").mkdir(parents=True)
    (store / ".zgroup").write_text('{"zarr_format": 2}')
    foreign = tmp_path / "mine"
    (foreign / "labels").mkdir(parents=True)
    (foreign / "labels" / "a.nii.gz").write_bytes(b"x")
    truth = tmp_path / "test_truth"  # the cells' ground truth
    truth.mkdir()
    (truth / "a_label.tiff").write_bytes(b"x")
    loose = tmp_path / "to_predict"  # a folder of images, not a converted dataset (probe B32)
    loose.mkdir()
    shutil.copy(next((data / "images").glob("*.nii.gz")), loose / "new.nii.gz")
    before = file_times(tmp_path)
    image = next((data / "images").glob("*.nii.gz"))
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(generated), "--images", str(loose),
                             "--output_dir", str(loose)])
    err = capsys.readouterr().err
    assert rc == 2 and "is the folder of the images to predict (new.nii.gz)" in err, err
    for out, words in ((data, "a converted dataset"), (data / "images", "a folder of a converted dataset"),
                       (data / "labels", "a folder of a converted dataset"), (store / "crop1", "Zarr store"),
                       (data / "labels" / "preds", "a converted dataset"),
                       (foreign, "which --mode predict did not write"),
                       (truth, "holds 1 image or label file(s) predict did not write (e.g. a_label.tiff)")):
        rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(generated), "--images", str(image),
                                 "--output_dir", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and "predictions" in err, err
    assert file_times(tmp_path) == before
    # the library function refuses too (whoever calls it): a labels/ predict did not write is never moved
    from auto3dseg.ensembling.predict_labels import retire_stale_labels

    (foreign / "ensemble.json").write_text(json.dumps({"items": []}))
    with pytest.raises(ValueError, match="not written by --mode predict"):
        retire_stale_labels(foreign / "ensemble.json")
    assert (foreign / "labels" / "a.nii.gz").is_file()


# ----------------------------------------------------------------------------- probe round 6: smaller messages
@pytest.mark.parametrize("flags, words", [
    (["--mode", "submit", "--wait_lock", "-3"], "argument --wait_lock: -3 is not allowed"),
    (["--mode", "slurm", "--datalist", "d.json", "--slurm_time", "abc"], "'abc' is not a Slurm time"),
    (["--mode", "slurm", "--datalist", "d.json", "--slurm_mem", "64X"], "'64X' is not a Slurm memory size"),
    # probe round 17: ranges of a time, a name with a space, a device torch does not know (after the work began)
    (["--mode", "slurm", "--datalist", "d.json", "--slurm_time", "99:99"], "'99:99' is not a Slurm time: minutes"),
    (["--mode", "slurm", "--datalist", "d.json", "--slurm_time", "1-25:00:00"], "hours after days up to 23"),
    (["--mode", "slurm", "--datalist", "d.json", "--slurm_partition", "gpu a100"], "'gpu a100' is not a Slurm name"),
    (["--mode", "analyze", "--datalist", "d.json", "--device", "gpu"], "'gpu' is not a device: give cpu, cuda"),
    (["--mode", "validate", "--datalist", "d.json", "--force_new_datalist"],
     "--force_new_datalist does nothing with --mode validate"),
])
def test_malformed_or_unread_flags_are_refused_at_parsing(generated, capsys, flags, words):
    with pytest.raises(SystemExit) as exc:
        run_auto3dseg.main([*flags, "--work_dir", str(generated)])
    assert exc.value.code == 2 and words in capsys.readouterr().err


def test_a_missing_truth_is_named_before_the_submission_is_made(generated, capsys):
    before = file_times(generated)
    rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(generated), "--truth", "/no/such/truth.zarr"])
    assert rc == 2 and "--truth /no/such/truth.zarr: no such file or folder" in capsys.readouterr().err
    assert file_times(generated) == before


def test_images_may_be_a_folder_of_nifti(tmp_path, capsys):
    from auto3dseg.orchestration.cli_checks import expand_predict_images

    (tmp_path / "b.nii.gz").write_bytes(b"")
    (tmp_path / "a.nii").write_bytes(b"")
    (tmp_path / ".hidden.nii.gz").write_bytes(b"")
    assert expand_predict_images([str(tmp_path), "x.nii.gz"]) == [str(tmp_path / "a.nii"), str(tmp_path / "b.nii.gz"),
                                                                  "x.nii.gz"]
    (tmp_path / "c.tif").write_bytes(b"")  # beside NIfTI: left out, and said
    assert expand_predict_images([str(tmp_path)]) == [str(tmp_path / "a.nii"), str(tmp_path / "b.nii.gz")]
    assert "1 file(s) that are not NIfTI left out (c.tif)" in capsys.readouterr().err
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "c.tif").write_bytes(b"")
    assert expand_predict_images([str(raw)]) == [str(raw / "c.tif")]  # the raw-image check then says how to convert
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="the folder is empty"):
        expand_predict_images([str(tmp_path / "empty")])


def test_override_typos_are_named_when_every_bundle_is_trained(generated, tmp_path, capsys, monkeypatch):
    from auto3dseg.orchestration.workdir import Bundle

    work = tmp_path / "work"
    shutil.copytree(generated, work)
    monkeypatch.setattr(Bundle, "done", property(lambda self: {"finished": True}))  # every bundle trained
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--override", "num_epoch=5"])
    err = capsys.readouterr().err
    assert rc == 2 and "no key 'num_epoch'" in err and "did you mean num_epochs" in err
    marker = work / "segresnet_1" / "training_done.json"
    marker.write_text(json.dumps({"command": ["train.py", "--learning_rate=0.01"]}))
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--override", "learning_rate=0.01"])
    out = capsys.readouterr().out
    assert rc == 0 and "segresnet_0 is trained already: not retrained with learning_rate=0.01" in out, out
    assert "segresnet_1 is trained" not in out  # trained with that value: nothing to say


def test_submit_names_an_ensemble_that_is_running(generated, tmp_path, capsys):
    from auto3dseg.orchestration.locks import step_lock

    work = tmp_path / "work"
    shutil.copytree(generated, work)
    with step_lock(work / "ensemble_output", "ensemble"):
        rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(work)])
    err = capsys.readouterr().err
    assert rc != 0 and "ensemble.json is not written yet" in err and "running in another process" in err


def test_submit_wait_lock_waits_for_a_running_ensemble(generated, tmp_path, capsys, monkeypatch):
    """--wait_lock was named in submit's message but submit refused at once all the same."""
    import threading

    from auto3dseg.orchestration.locks import step_lock

    monkeypatch.setenv("AUTO3DSEG_LOCK_WAIT", "0")  # main sets it from --wait_lock: restored after the test
    work = tmp_path / "work"
    shutil.copytree(generated, work)
    held, release = threading.Event(), threading.Event()

    def ensemble_running():
        with step_lock(work / "ensemble_output", "ensemble", log=lambda m: None):
            held.set()
            release.wait(30)

    t = threading.Thread(target=ensemble_running)
    t.start()
    held.wait(10)
    threading.Timer(1.5, release.set).start()
    rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(work), "--wait_lock", "60"])
    t.join()
    said = capsys.readouterr()
    assert "waiting for --mode ensemble" in said.out + said.err
    # it waited for the ensemble to end, then found no ensemble.json (this one wrote none)
    assert rc != 0 and "ensemble.json not found" in said.err and "not written yet" not in said.err, said.err


def test_ctrl_c_is_one_line(monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_auto3dseg, "main", interrupted)
    assert run_auto3dseg.cli() == 130
    err = capsys.readouterr().err
    assert "interrupted: finished work is kept" in err and "Traceback" not in err
    assert "without --force" not in err
    monkeypatch.setattr(sys, "argv", ["run_auto3dseg.py", "--mode", "train", "--force"])
    assert run_auto3dseg.cli() == 130  # the same command again would start over: say to leave --force out
    assert "run the same command again without --force to go on" in capsys.readouterr().err


def test_ctrl_c_of_a_converter_is_one_line(capsys):
    from converters.cli import run_reported

    def interrupted():
        raise KeyboardInterrupt

    assert run_reported(interrupted, (ValueError,)) == (None, 130)
    err = capsys.readouterr().err
    assert "interrupted: finished work is kept" in err and "Traceback" not in err


def test_train_of_a_fold_no_bundle_has_names_the_folds_there(generated, capsys):
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(generated), "--fold", "7"])
    err = capsys.readouterr().err
    assert rc == 2 and "--fold 7" in err and "segresnet_0, segresnet_1 (folds 0, 1)" in err, err
    assert "run --mode generate first" not in err


def test_submit_truth_that_is_the_own_submission_is_refused(generated, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(generated, work)
    (work / "submission" / "labels").mkdir(parents=True)
    rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(work), "--truth", str(work / "submission" / "labels")])
    err = capsys.readouterr().err
    assert rc == 2 and "is this work_dir's own submission: scored against itself it is 1.0" in err, err




def test_a_quoted_pattern_in_images_is_expanded_or_named_before_any_model_loads(tmp_path):
    """`--images "dir/*.nii.gz"` (quoted in a SLURM script) was reported per image only after every
    bundle had loaded, as one image that does not exist."""
    from auto3dseg.orchestration.cli_checks import expand_predict_images

    for name in ("b_0000.nii.gz", "a_0000.nii.gz", "c.tif"):
        (tmp_path / name).write_bytes(b"")
    assert expand_predict_images([str(tmp_path / "*_0000.nii.gz")]) == [str(tmp_path / "a_0000.nii.gz"),
                                                                       str(tmp_path / "b_0000.nii.gz")]
    with pytest.raises(ValueError, match=r"--images .*\*\.nii: no file matches this pattern"):
        expand_predict_images([str(tmp_path / "*.nii")])
    assert expand_predict_images([str(tmp_path / "missing.nii.gz")]) == [str(tmp_path / "missing.nii.gz")]


def test_one_image_under_two_names_is_named(tmp_path):
    """A symlink given beside its target made one map, and the second name had none, without a word."""
    from auto3dseg.orchestration.cli_checks import same_name_problem

    (tmp_path / "ok.nii.gz").write_bytes(b"x")
    (tmp_path / "oklink.nii.gz").symlink_to(tmp_path / "ok.nii.gz")
    problem = same_name_problem([str(tmp_path / "ok.nii.gz"), str(tmp_path / "oklink.nii.gz")])
    assert problem is not None and "are the same file (one links to the other)" in problem
    (tmp_path / "other.nii.gz").write_bytes(b"x")
    assert same_name_problem([str(tmp_path / "ok.nii.gz"), str(tmp_path / "other.nii.gz")]) is None
