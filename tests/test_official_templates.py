"""MONAI's official algorithm templates through ``--templates``, unedited.

The end-to-end test runs the official segresnet (``../shared/monai_official_templates``, an
unmodified copy of MONAI's release) through generate → train → ensemble → submit on the
built-in CellMap data and checks that the submission holds labels; it is skipped with a reason
when ``../shared`` is absent. The other tests need no training: the classes and settings
written for official templates, the checks that stop a template this machine cannot run,
``ckpt_path`` expressions, and submit refusing an ensemble whose channels map to no label.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

import run_auto3dseg
from auto3dseg.bundles.generate import generate, official_class_config, official_settings, template_problems

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "monai_official_templates"
needs_official = pytest.mark.skipif(not (OFFICIAL / "segresnet" / "scripts" / "algo.py").is_file(),
                                    reason=f"MONAI's official templates not found at {OFFICIAL} (../shared absent)")

# tiny, CPU-sized: one fold, one epoch, 32³ patches; the overrides reach the bundle's YAML through the
# template's own config_save_updated, so its inference builds the same network
OFFICIAL_ARGS = ["--algos", "segresnet", "--num_fold", "1", "--num_epochs", "1", "--patch_size", "32",
                 "--override", "num_workers=0", "--override", "network#init_filters=8",
                 "--override", "network#blocks_down=[1,1,1,1,1]", "--override", "validate_final_original_res=false"]


@pytest.fixture(scope="module")
def official_run(converted, tmp_path_factory):
    """``--mode full --templates <official>`` once, from a clean working directory."""
    out, _ = converted
    base = tmp_path_factory.mktemp("official")
    cwd, work = base / "cwd", base / "work"
    cwd.mkdir()
    old = os.getcwd()
    os.chdir(cwd)  # official segresnet writes runner.log into the current directory: it must not land here
    try:
        rc = run_auto3dseg.main(["--mode", "full", "--datalist", str(out / "datalist.json"), "--work_dir", str(work),
                                 "--workers", "0", "--templates", str(OFFICIAL), *OFFICIAL_ARGS])
    finally:
        os.chdir(old)
    return rc, work, cwd


@needs_official
def test_official_segresnet_end_to_end_submits_labels(official_run, converted, synthetic):
    import zarr

    from converters.cellmap.zarr_tree import read_test_manifest_rows

    rc, work, cwd = official_run
    assert rc == 0
    assert not (cwd / "runner.log").exists()
    bundle = work / "segresnet_0"
    assert (bundle / "scripts" / "segmenter.py").is_file()  # MONAI's template, not the project's same-named one
    # input.yaml: what the official templates read about the classes
    src = yaml.safe_load((work / "input.yaml").read_text())
    table = json.loads((converted[0] / "datalist.json").read_text())["class_table"]
    assert src["modality"] == "mri" and src["sigmoid"] is True
    assert [c["name"] for c in src["class_names"]] == [r["name"] for r in table]
    assert {"name": "mito", "index": [3, 4, 11]} in src["class_names"] and {"name": "ecs", "index": [1]} in \
        src["class_names"]
    # the bundle: one sigmoid output per class, the patch and epochs asked for, under the template's keys
    hp = yaml.safe_load((bundle / "configs" / "hyper_parameters.yaml").read_text())
    assert hp["output_classes"] == len(table) and hp["sigmoid"] is True
    assert hp["roi_size"] == [32, 32, 32] and hp["num_epochs"] == 1 and hp["auto_scale_batch"] is False
    assert hp["ckpt_path"].startswith("$@bundle_root")
    # the score behind ckpt_path's expression
    progress = yaml.safe_load((bundle / "model" / "progress.yaml").read_text())
    done = json.loads((bundle / "training_done.json").read_text())
    assert done["best_avg_dice_score"] == pytest.approx(progress[-1]["best_avg_dice_score"])
    # the ensemble: channels named from the class table, activation from the bundle's config
    manifest = json.loads((work / "ensemble_output" / "ensemble.json").read_text())
    assert manifest["channels"] == [r["name"] for r in table]
    assert manifest["activation"] == "sigmoid" and manifest["activation_source"] == "config"
    assert len(manifest["items"]) == 2
    # the submission: every requested label written, predicted, and not all empty
    rows = json.loads((work / "submission" / "submission_report.json").read_text())
    assert rows and all(r["status"] == "predicted" for r in rows)
    store = zarr.open_group(str(work / "submission" / "submission.zarr"), mode="r")
    written = {(c, lab["label"]): np.count_nonzero(store[f"crop{c}/{lab['label']}"][:])
               for (_, c), labels in read_test_manifest_rows(synthetic / "test_crop_manifest.csv").items()
               for lab in labels}
    assert written and sum(n > 0 for n in written.values()) >= len(written) // 2, written


def test_class_names_for_official_templates():
    groups = [{"id": 1, "name": "mito_mem", "parts": []}, {"id": 2, "name": "mito_lum", "parts": []},
              {"id": 3, "name": "mito", "parts": [1, 2]}]
    cfg, n = official_class_config({"class_table": groups, "training": [{"annotated_mask": 7}]})
    assert cfg == {"class_names": [{"name": "mito_mem", "index": [1]}, {"name": "mito_lum", "index": [2]},
                                   {"name": "mito", "index": [1, 2, 3]}], "sigmoid": True} and n is None
    leaves = [{"id": 2, "name": "er", "parts": []}, {"id": 1, "name": "pm", "parts": []}]
    full = {"class_table": leaves, "training": [{"annotated_mask": 3}]}
    assert official_class_config(full) == ({"class_names": ["pm", "er"], "sigmoid": False}, 3)  # softmax by value
    partial = {"class_table": leaves, "training": [{"annotated_mask": 1}]}
    assert official_class_config(partial)[0]["sigmoid"] is True  # the engine would use sigmoid: so do they


@needs_official
def test_patch_and_epochs_reach_official_templates_under_their_keys():
    kw, notes = official_settings("segresnet", OFFICIAL / "segresnet", num_epochs=7, patch_size=20)
    assert kw["num_epochs"] == 7 and kw["roi_size"] == [32, 32, 32] and kw["auto_scale_batch"] is False
    assert kw["network#blocks_down"] == [1, 2, 2, 4, 4] and any("rounded up to 32" in n for n in notes)
    assert official_settings("segresnet", OFFICIAL / "segresnet", patch_size=16)[0]["network#blocks_down"] == \
        [1, 2, 2, 4]  # the deepest level keeps 2 voxels
    kw, _ = official_settings("dints", OFFICIAL / "dints", num_epochs=7, patch_size=64, output_classes=4)
    assert kw == {"training#num_epochs": 7, "training#auto_scale_allowed": False, "training#roi_size": [64] * 3,
                  "training#roi_size_valid": [64] * 3, "training#output_classes": 4}
    kw, _ = official_settings("swinunetr", OFFICIAL / "swinunetr", num_epochs=7)
    assert kw == {"num_epochs": 7, "auto_scale_allowed": False}
    with pytest.raises(ValueError, match="--patch_size 32: template segresnet2d"):
        official_settings("segresnet2d", OFFICIAL / "segresnet2d", patch_size=32)


@needs_official
def test_templates_needing_a_gpu_or_mlflow_are_named_with_the_fix():
    import importlib.util

    errors, _ = template_problems("swinunetr", OFFICIAL / "swinunetr", cuda=False, environ={})
    assert errors[0].startswith("swinunetr's generation needs a GPU") and "--algos segresnet" in errors[0]
    errors, _ = template_problems("dints", OFFICIAL / "dints", cuda=False, environ={})
    assert any(e.startswith("dints's training needs a GPU") and "run on a GPU machine" in e for e in errors)
    if importlib.util.find_spec("mlflow") is None:
        assert any("dints's training imports mlflow" in e and "pip install mlflow" in e for e in errors)
    # in a SLURM job generation runs on a CPU node and training on GPU nodes: a note, not an error
    errors, notes = template_problems("dints", OFFICIAL / "dints", cuda=False, environ={"SLURM_JOB_ID": "1"})
    assert not any("needs a GPU" in e for e in errors) and any("cuda:0" in n for n in notes)
    assert template_problems("segresnet", OFFICIAL / "segresnet", cuda=False, environ={}) == ([], [])


@needs_official
def test_generate_stops_before_writing_a_bundle_this_machine_cannot_train(converted, tmp_path, capsys):
    import importlib.util

    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("mlflow") is not None:
        pytest.skip("this machine has a GPU and mlflow: official dints can be generated here")
    out, _ = converted
    work = tmp_path / "work"
    work.mkdir()
    (work / "datastats.yaml").write_text("{}\n")  # the check comes before the template reads any statistics
    with pytest.raises(RuntimeError, match="dints's training") as err:
        generate(work, out / "datalist.json", out, algos=["dints"], templates=str(OFFICIAL))
    assert "--algos segresnet" in str(err.value) and not (work / "dints_0").exists()
    rc = run_auto3dseg.main(["--mode", "generate", "--datalist", str(out / "datalist.json"), "--work_dir", str(work),
                             "--algos", "dints", "--templates", str(OFFICIAL)])
    assert rc == 2 and "dints's training" in capsys.readouterr().err


def test_score_evaluates_ckpt_path_expressions(tmp_path):
    """Official templates write ``ckpt_path: $@bundle_root + '/model'``: the score is read
    where it points, also in a moved bundle (bundle_root is where the bundle is now)."""
    from auto3dseg.orchestration.train_bundles import _score

    bundle = tmp_path / "dints_0"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "hyper_parameters.yaml").write_text(
        "bundle_root: /somewhere/else/dints_0\nfold: 0\nckpt_path: \"$@bundle_root + '/model_fold' + str(@fold)\"\n")
    (bundle / "model_fold0").mkdir()
    (bundle / "model_fold0" / "progress.yaml").write_text(yaml.safe_dump([{"best_avg_dice_score": 0.42}]))
    assert _score(bundle) == pytest.approx(0.42)
    (bundle / "model_fold0" / "progress.yaml").unlink()
    assert _score(bundle) is None


def test_submit_refuses_channels_that_map_to_no_label(converted, tmp_path, capsys):
    out, _ = converted
    work = tmp_path / "work"
    (work / "ensemble_output").mkdir(parents=True)
    testing = json.loads((out / "datalist.json").read_text())["testing"]
    items = [{"image": str(out / t["image"]), "probabilities": str(work / "ensemble_output" / f"{i}_prob.zarr")}
             for i, t in enumerate(testing)]  # a map of each testing image (never read: refused before)
    for it in items:
        Path(it["probabilities"]).mkdir()
    (work / "ensemble_output" / "ensemble.json").write_text(json.dumps(
        {"signature": "x", "channels": ["channel_0", "channel_1"], "activation": "sigmoid", "items": items}))
    (work / "input.yaml").write_text(yaml.safe_dump({"datalist": str(out / "datalist.json"), "dataroot": str(out)}))
    rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(work)])
    err = capsys.readouterr().err
    assert rc == 2 and "no requested label maps to a channel" in err
    assert "mito" in err and "channel_0" in err  # names the labels and the channels
    assert not (work / "submission" / "submission.zip").exists()
