"""Generation, training, ensembling through MONAI's Auto3DSeg contract, end to end on the
converted built-in data (tiny networks, one epoch, small patches)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import run_auto3dseg
from auto3dseg.bundles.generate import generate
from auto3dseg.ensembling.ensemble import run_ensemble
from auto3dseg.ensembling.selection import trained_history
from auto3dseg.ensembling.probability_maps import open_probability_map
from auto3dseg.orchestration.train_bundles import train_bundles
from auto3dseg.orchestration.workdir import DONE_MARKER, list_bundles

TINY = ["--override", "num_workers=0", "--override", "num_iterations_per_epoch=3", "--override", "segresnet:network#init_filters=8",
        "--override", "segresnet:network#dsdepth=2", "--override", "sw_batch_size=4"]


def _full_args(converted, work: Path, synthetic: Path) -> list[str]:
    out, _ = converted
    return ["--mode", "full", "--datalist", str(out / "datalist.json"), "--work_dir", str(work), "--workers", "0",
            "--algos", "segresnet", "--num_epochs", "1", "--patch_size", "16", *TINY,
            "--truth", str(synthetic / "test_truth.zarr")]


@pytest.fixture(scope="module")
def full_run(converted, synthetic, tmp_path_factory):
    """``--mode full`` once: analyze, generate segresnet_0/1, train both, ensemble, submit, score."""
    work = tmp_path_factory.mktemp("full") / "work"
    assert run_auto3dseg.main(_full_args(converted, work, synthetic)) == 0
    return work


def _snapshot(work: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and "algorithm_templates" not in p.parts
            and p.name != "input.yaml" and not p.name.endswith(".lock")}  # a lock records its last holder


def test_full_leaves_every_output(full_run, converted):
    work = full_run
    assert (work / "datastats.yaml").is_file() and (work / "datastats_review.md").is_file()
    assert sorted(b.name for b in list_bundles(work)) == ["segresnet_0", "segresnet_1"]
    for b in list_bundles(work):
        assert b.done and b.done["best_avg_dice_score"] is not None
        assert (b.path / "model" / "model.pt").is_file() and (b.path / "model" / "progress.png").is_file()
        assert any((b.path / "model" / "tensorboard").iterdir())
    manifest = json.loads((work / "ensemble_output" / "ensemble.json").read_text())
    out, _ = converted
    testing = json.loads((out / "datalist.json").read_text())["testing"]
    assert len(manifest["items"]) == len(testing) == 2
    for it in manifest["items"]:
        assert Path(it["probabilities"]).is_dir() and it["probabilities"].endswith("_prob.zarr")


def test_full_writes_a_scored_cellmap_submission(full_run, synthetic):
    import zipfile

    import zarr

    from converters.cellmap.zarr_tree import read_test_manifest_rows
    from datalists.cellmap_classes import INSTANCE_CLASSES

    sub = full_run / "submission"
    with zipfile.ZipFile(sub / "submission.zip") as zf:
        names = zf.namelist()
    assert all(n.startswith("submission.zarr/") for n in names) and "submission.zarr/.zgroup" in names
    store = zarr.open_group(str(sub / "submission.zarr"), mode="r")
    for (_, crop_id), labels in read_test_manifest_rows(synthetic / "test_crop_manifest.csv").items():
        for lab in labels:
            arr = store[f"crop{crop_id}/{lab['label']}"]
            assert arr.shape == tuple(lab["shape"])
            assert arr.attrs["voxel_size"] == list(lab["voxel_size"])  # z, y, x
            assert arr.attrs["translation"] == list(lab["translation"])
            if lab["label"] in INSTANCE_CLASSES:
                assert arr.dtype in (np.uint16, np.uint32)
            else:
                assert arr.dtype == np.uint8 and set(np.unique(arr[:])) <= {0, 1}
    scores = json.loads((sub / "scores.json").read_text())
    assert 0.0 <= scores["overall"]["score"] <= 1.0 and not scores["missing"]
    assert (sub / "scores.md").is_file() and (sub / "submission_report.md").is_file()


def test_template_contract_with_monai(full_run):
    """MONAI's own loader, get_score, ensemble builder and ensemble call work on our bundles."""
    from monai.apps.auto3dseg import AlgoEnsembleBestN, AlgoEnsembleBuilder
    from monai.apps.auto3dseg.utils import import_bundle_algo_history

    work = full_run
    history = import_bundle_algo_history(str(work), only_trained=True)
    assert sorted(h["identifier"] for h in history) == ["segresnet_0", "segresnet_1"]
    for h in history:
        progress = yaml.safe_load((Path(h["algo_instance"].output_path) / "model" / "progress.yaml").read_text())
        assert h["algo_instance"].get_score() == pytest.approx(progress[-1]["best_avg_dice_score"])
    builder = AlgoEnsembleBuilder(history, str(work / "input.yaml"))
    builder.set_ensemble_method(AlgoEnsembleBestN(n_best=2))
    ens = builder.get_ensemble()
    assert len(ens.get_algo_ensemble()) == 2
    preds = ens(pred_param={"files_slices": slice(0, 1), "sigmoid": True})
    n_classes = len(yaml.safe_load((work / "segresnet_0" / "configs" / "hyper_parameters.yaml").read_text())["class_ids"])
    assert preds[0].shape[0] == n_classes and set(torch.unique(preds[0]).tolist()) <= {0.0, 1.0}


def test_second_full_run_does_no_work_and_loses_nothing(full_run, converted, synthetic, capsys):
    before = _snapshot(full_run)
    assert run_auto3dseg.main(_full_args(converted, full_run, synthetic)) == 0
    text = capsys.readouterr().out
    assert "2 already trained, 0 to train" in text and "kept segresnet_0" in text
    after = _snapshot(full_run)
    changed = [p for p in before if after.get(p) != before[p]]
    assert not changed, changed


def test_generate_refuses_to_wipe_a_trained_bundle(full_run, converted):
    out, _ = converted
    work = full_run
    weights = (work / "segresnet_0" / "model" / "model.pt").read_bytes()
    res = generate(work, out / "datalist.json", out, algos=["segresnet"], num_epochs=1, patch_size=16)
    assert res.kept == ["segresnet_0", "segresnet_1"] and not res.generated
    assert (work / "segresnet_0" / "model" / "model.pt").read_bytes() == weights


def test_generate_force_moves_the_old_bundle_aside(full_run, converted, tmp_path):
    import shutil

    out, _ = converted
    work = tmp_path / "work"
    shutil.copytree(full_run, work, ignore=shutil.ignore_patterns("ensemble_output", "segresnet_1"))
    weights = (work / "segresnet_0" / "model" / "model.pt").read_bytes()
    res = generate(work, out / "datalist.json", out, algos=["segresnet"], num_fold=1, force=True)
    moved = Path(res.replaced["segresnet_0"])
    assert moved.parent == work / "replaced" and (moved / "model" / "model.pt").read_bytes() == weights
    assert (work / "segresnet_0" / "configs" / "hyper_parameters.yaml").is_file()
    assert not (work / "segresnet_0" / "model").exists()


def test_ensemble_names_a_fold_bundle_that_is_gone(full_run, tmp_path, capsys):
    """A deleted fold's bundle left the ensemble one fold short without a word (deleted weights
    were already named)."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(full_run, work, ignore=shutil.ignore_patterns("ensemble_output", "segresnet_1"))
    assert yaml.safe_load((work / "input.yaml").read_text())["num_fold"] == 2
    capsys.readouterr()
    assert run_auto3dseg.main(["--mode", "ensemble", "--work_dir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "note: segresnet_1 was generated" in out and "num_fold 2" in out and "--mode generate --algos segresnet" in out


def test_ensemble_names_a_gap_in_the_folds_of_an_old_work_dir(full_run, tmp_path, capsys):
    """A work_dir generated before input.yaml recorded num_fold: a missing fold below one that is
    there (folds are generated 0..n-1) is still named."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(full_run, work, ignore=shutil.ignore_patterns("ensemble_output", "segresnet_0"))
    src = yaml.safe_load((work / "input.yaml").read_text())
    del src["num_fold"]
    (work / "input.yaml").write_text(yaml.safe_dump(src))
    capsys.readouterr()
    assert run_auto3dseg.main(["--mode", "ensemble", "--work_dir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "note: segresnet_0 was generated (folds 0 to 1 are generated" in out, out


def test_interrupted_bundle_is_not_counted_as_trained(full_run, tmp_path):
    """progress.yaml alone (an interrupted run) does not make a bundle trained."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(full_run, work, ignore=shutil.ignore_patterns("ensemble_output"))
    (work / "segresnet_1" / DONE_MARKER).unlink()
    assert (work / "segresnet_1" / "model" / "progress.yaml").is_file()
    assert [h["identifier"] for h in trained_history(work)] == ["segresnet_0"]


def test_predict_shape_and_channel_order(full_run, converted, tmp_path):
    """Channel i of the output is class_names[i], on the image's own grid."""
    import nibabel as nib

    from auto3dseg.engine.inference import InferClass

    out, _ = converted
    bundle = full_run / "segresnet_0"
    inferer = InferClass([str(bundle / "configs" / "hyper_parameters.yaml")])
    n = len(inferer.channel_names)
    targets = torch.linspace(0.1, 0.9, n)

    class Known(torch.nn.Module):  # channel c → probability targets[c] everywhere
        def forward(self, x):
            logit = torch.log(targets / (1 - targets)).view(1, n, *[1] * (x.ndim - 2))
            return logit.expand(x.shape[0], n, *x.shape[2:]).clone()

    inferer.model = Known()
    image = out / json.loads((out / "datalist.json").read_text())["testing"][0]["image"]
    prob = inferer.infer(str(image))
    nii = nib.load(str(image))
    assert tuple(prob.shape) == (n, *nii.shape)
    assert np.allclose(prob.affine, nii.affine)
    for c in range(n):
        assert torch.allclose(prob[c], torch.full_like(prob[c], float(targets[c])), atol=1e-5)
    names = yaml.safe_load((bundle / "configs" / "hyper_parameters.yaml").read_text())["class_names"]
    assert inferer.channel_names == names


def test_predict_mode_writes_probabilities_in_class_order(full_run, converted, tmp_path):
    out, _ = converted
    image = out / json.loads((out / "datalist.json").read_text())["testing"][1]["image"]
    dest = tmp_path / "preds"
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(full_run), "--algos", "segresnet",
                             "--images", str(image), "--output_dir", str(dest)])
    assert rc == 0
    manifest = json.loads((dest / "ensemble.json").read_text())
    names = [r["name"] for r in json.loads((out / "datalist.json").read_text())["class_table"]]
    assert manifest["channels"] == names and manifest["activation"] == "sigmoid"
    assert manifest["activation_source"] == "config"  # the bundle's output_activation
    pmap = open_probability_map(manifest["items"][0]["probabilities"])
    prob = pmap.probabilities()
    import nibabel as nib

    assert pmap.channels == names and prob.shape == (len(names), *nib.load(str(image)).shape[::-1])  # class, z, y, x
    assert 0.0 <= prob.min() and prob.max() <= 1.0 and np.allclose(pmap.affine, nib.load(str(image)).affine)


def test_predict_names_images_unlike_the_training_data(full_run, converted, tmp_path, capsys):
    """Another voxel size: a warning on a line of its own (it was glued to the progress bar, where
    the next redraw hid it); another channel count: one error naming the file (was torch's
    "Given groups=1, weight of size ...")."""
    import nibabel as nib

    out, _ = converted
    src = nib.load(str(out / json.loads((out / "datalist.json").read_text())["testing"][1]["image"]))
    data = np.asarray(src.dataobj)
    coarse, two = tmp_path / "coarse.nii.gz", tmp_path / "two_channels.nii.gz"
    affine = src.affine.copy()
    affine[:3, :3] *= 2
    nib.save(nib.Nifti1Image(data, affine), str(coarse))
    nib.save(nib.Nifti1Image(np.stack([data, data], -1), src.affine), str(two))
    capsys.readouterr()
    assert run_auto3dseg.main(["--mode", "predict", "--work_dir", str(full_run), "--algos", "segresnet",
                               "--images", str(coarse), "--output_dir", str(tmp_path / "p1")]) == 0
    lines = [ln.split("\r")[-1] for ln in capsys.readouterr().err.splitlines()]
    assert any(ln.startswith(f"warning: {coarse} has voxel size [16.0, 16.0, 16.0]") for ln in lines), lines
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(full_run), "--algos", "segresnet",
                             "--images", str(two), "--output_dir", str(tmp_path / "p2")])
    err = capsys.readouterr().err
    assert rc == 2 and f"{two}: the image has 2 channel(s), the model was trained on 1" in err
    assert "Given groups" not in err


def test_predict_postprocess_writes_labels_as_submit_does(full_run, converted, tmp_path):
    import nibabel as nib

    from auto3dseg.postprocess import load_postprocess_params
    from auto3dseg.submission.cellmap import prediction_labels

    out, _ = converted
    dl = json.loads((out / "datalist.json").read_text())
    image = out / dl["testing"][0]["image"]
    dest = tmp_path / "preds"
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(full_run), "--algos", "segresnet", "--images",
                             str(image), "--output_dir", str(dest), "--postprocess"])
    assert rc == 0
    case = dest / "labels" / Path(str(image)).name.replace(".nii.gz", "")
    manifest = json.loads((dest / "ensemble.json").read_text())
    expected, _ = prediction_labels(manifest["items"][0]["probabilities"], manifest["channels"], dl["class_table"],
                                    load_postprocess_params())
    for row in dl["class_table"]:
        written = nib.load(str(case / f"{row['name']}.nii.gz"))
        assert written.shape == nib.load(str(image)).shape and np.allclose(written.affine, nib.load(str(image)).affine)
        assert np.array_equal(np.asarray(written.dataobj).T, expected[row["name"]])  # z, y, x as submit's


def test_predict_postprocess_uses_the_tuned_parameters_as_submit_does(full_run, converted, tmp_path, capsys):
    import shutil

    import nibabel as nib
    import yaml

    from auto3dseg.postprocess import load_postprocess_params
    from auto3dseg.postprocess.tune import TUNED_YAML
    from auto3dseg.submission.cellmap import prediction_labels

    out, _ = converted
    work = tmp_path / "work"
    shutil.copytree(full_run, work, symlinks=True)
    tuned = work / TUNED_YAML
    tuned.write_text(yaml.safe_dump({"default": {"threshold": 0.2}}))
    dl = json.loads((out / "datalist.json").read_text())
    image = out / dl["testing"][0]["image"]
    dest = tmp_path / "preds"
    rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(work), "--algos", "segresnet", "--images",
                             str(image), "--output_dir", str(dest), "--postprocess"])
    assert rc == 0 and str(tuned) in capsys.readouterr().out
    manifest = json.loads((dest / "ensemble.json").read_text())
    prob = manifest["items"][0]["probabilities"]
    want, _ = prediction_labels(prob, manifest["channels"], dl["class_table"], load_postprocess_params(str(tuned)))
    default, _ = prediction_labels(prob, manifest["channels"], dl["class_table"], load_postprocess_params())
    assert any(not np.array_equal(want[k], default[k]) for k in want)  # the tuned file changes something
    case = dest / "labels" / Path(str(image)).name.replace(".nii.gz", "")
    for name, array in want.items():
        assert np.array_equal(np.asarray(nib.load(str(case / f"{name}.nii.gz")).dataobj).T, array), name
    assert json.loads((dest / "labels_params.json").read_text())["default"]["threshold"] == 0.2

    # the same maps and parameters again: kept; other parameters: the earlier labels are moved aside, not overwritten
    stamps = {p: p.stat().st_mtime_ns for p in case.iterdir()}
    args = ["--mode", "predict", "--work_dir", str(work), "--algos", "segresnet", "--images", str(image),
            "--output_dir", str(dest), "--postprocess"]
    assert run_auto3dseg.main(args) == 0 and "up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in case.iterdir()} == stamps
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("{}\n")
    assert run_auto3dseg.main([*args, "--postprocess_params", str(defaults)]) == 0
    assert "previous labels" in capsys.readouterr().out
    (kept,) = (dest / "replaced").glob("labels-*")
    for name, array in want.items():
        assert np.array_equal(np.asarray(nib.load(str(kept / "labels" / case.name / f"{name}.nii.gz")).dataobj).T,
                              array), name
        assert np.array_equal(np.asarray(nib.load(str(case / f"{name}.nii.gz")).dataobj).T, default[name]), name
    assert json.loads((kept / "labels_params.json").read_text())["default"]["threshold"] == 0.2

    # predict without --postprocess: maps unchanged, labels kept; maps rewritten (--tta), labels moved aside
    plain = [a for a in args if a != "--postprocess"]
    assert run_auto3dseg.main(plain) == 0 and case.is_dir()
    assert run_auto3dseg.main([*plain, "--tta"]) == 0
    assert not (dest / "labels").exists() and len(list((dest / "replaced").glob("labels-*"))) == 2

    # a chunk of the map damaged after it was finished, its size kept: named with what to do, no half-made
    # labels folder (B28)
    chunk = max((p for p in Path(prob).iterdir() if p.is_file() and not p.name.startswith(".")),
                key=lambda p: p.stat().st_size)
    good = chunk.read_bytes()
    chunk.write_bytes(b"\0" * len(good))
    capsys.readouterr()
    assert run_auto3dseg.main([*args, "--tta"]) == 1  # the maps of the --tta run are kept: only labels are made
    said = capsys.readouterr()
    assert "no labels written for it" in said.out + said.err and "--mode predict --force" in said.out + said.err
    assert not case.exists()
    # cut short (a full disk, a copy stopped): its size tells, and the map is predicted again (round 18)
    chunk.write_bytes(good[:10])
    assert run_auto3dseg.main([*args, "--tta"]) == 0 and case.is_dir()
    assert open_probability_map(prob).n_channels and chunk.stat().st_size != 10


def test_predict_uses_unfinished_bundles_only_when_allowed(full_run, converted, tmp_path, capsys):
    import shutil

    out, _ = converted
    work = tmp_path / "work"
    shutil.copytree(full_run, work)
    for marker in work.glob("segresnet_*/training_done.json"):
        marker.unlink()  # as if both trainings had been stopped after writing a best model
    image = out / json.loads((out / "datalist.json").read_text())["testing"][0]["image"]
    args = ["--mode", "predict", "--work_dir", str(work), "--algos", "segresnet", "--images", str(image),
            "--output_dir", str(tmp_path / "p")]
    assert run_auto3dseg.main(args) == 2
    assert "--allow_unfinished" in capsys.readouterr().err
    assert run_auto3dseg.main([*args, "--allow_unfinished"]) == 0
    printed = capsys.readouterr().out
    assert "segresnet_0 did not finish training" in printed and "segresnet_1 did not finish training" in printed
    assert (tmp_path / "p" / "ensemble.json").is_file()


# ----------------------------------------------------------------------------- foreign templates
FOREIGN_ALGO = '''
import os, yaml
from monai.apps.auto3dseg import BundleAlgo

class MynetAlgo(BundleAlgo):
    def fill_template_config(self, data_stats_filename, output_path, **kwargs):
        src = yaml.safe_load(open(self.data_list_file))
        cfg = {"ckpt_path": os.path.join(output_path, "model"), "fold": kwargs.get("fold", 0),
               "modality": src["modality"]}
        with open(os.path.join(output_path, "configs", "hyper_parameters.yaml"), "w") as f:
            yaml.safe_dump(cfg, f)
        return {"hyper_parameters.yaml": cfg}
'''
FOREIGN_TRAIN = '''
import os, yaml, fire

def run(config_file, **override):
    cfg = yaml.safe_load(open(str(config_file).split(",")[0]))
    os.makedirs(cfg["ckpt_path"], exist_ok=True)
    with open(os.path.join(cfg["ckpt_path"], "progress.yaml"), "w") as f:
        yaml.safe_dump([{"best_avg_dice_score": 0.5 + 0.1 * cfg["fold"]}], f)

if __name__ == "__main__":
    fire.Fire()
'''
FOREIGN_INFER = '''
import nibabel as nib, torch

class InferClass:
    def __init__(self, config_file=None, **override):
        pass

    def infer(self, item):  # MONAI's ensemble passes the datalist item, as the official templates expect
        img = nib.load(item["image"])
        return torch.full((2, *img.shape), 0.25)
'''


def test_foreign_templates_generate_train_and_ensemble(converted, full_run, tmp_path, capsys):
    """A template folder in MONAI's layout that knows nothing of this project still works."""
    import shutil

    templates = tmp_path / "templates" / "mynet"
    (templates / "scripts").mkdir(parents=True)
    (templates / "configs").mkdir()
    (templates / "__init__.py").write_text("")
    (templates / "scripts" / "__init__.py").write_text("")
    (templates / "scripts" / "algo.py").write_text(textwrap.dedent(FOREIGN_ALGO))
    (templates / "scripts" / "train.py").write_text(textwrap.dedent(FOREIGN_TRAIN))
    (templates / "scripts" / "infer.py").write_text(textwrap.dedent(FOREIGN_INFER))
    (templates / "configs" / "hyper_parameters.yaml").write_text("ckpt_path: null\n")

    out, _ = converted
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(full_run / "datastats.yaml", work / "datastats.yaml")
    res = generate(work, out / "datalist.json", out, algos=["mynet"], templates=str(templates.parent))
    assert res.generated == ["mynet_0", "mynet_1"]
    src = yaml.safe_load((work / "input.yaml").read_text())
    assert src["modality"] == "mri"  # official templates: ct/mri only
    # classes as MONAI's official templates read them: a group is the label values of its members
    assert src["sigmoid"] is True and {"name": "mito", "index": [3, 4, 11]} in src["class_names"]
    with pytest.raises(ValueError, match="--num_epochs 3: template mynet"):  # never silently ignored
        generate(work, out / "datalist.json", out, algos=["mynet"], templates=str(templates.parent), num_epochs=3,
                 force=True)
    report = train_bundles(work, algos=["mynet"], log=lambda *a: None)
    assert report.ok and report.trained == {"mynet_0": 0.5, "mynet_1": pytest.approx(0.6)}
    manifest = json.loads(run_ensemble(work, algos=["mynet"], log=lambda *a: None).read_text())
    # 2 channels fit no naming of the 12 classes; they do not sum to 1, so they are not a softmax
    assert manifest["channels"] == ["channel_0", "channel_1"]
    assert manifest["activation"] == "sigmoid" and manifest["activation_source"] == "output"
    prob = open_probability_map(manifest["items"][0]["probabilities"]).probabilities()
    assert np.allclose(prob, 0.25, atol=1 / 255)


# ----------------------------------------------------------------------------- CLI errors
def test_generate_without_analysis_says_what_to_do(converted, tmp_path, capsys):
    out, _ = converted
    rc = run_auto3dseg.main(["--mode", "generate", "--datalist", str(out / "datalist.json"),
                             "--work_dir", str(tmp_path / "w")])
    assert rc == 2 and "run --mode analyze first" in capsys.readouterr().err


def test_train_without_bundles_says_what_to_do(tmp_path, capsys):
    (tmp_path / "input.yaml").write_text(yaml.safe_dump({"datalist": "x.json", "dataroot": "."}))
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(tmp_path)])
    assert rc == 2 and "run --mode generate first" in capsys.readouterr().err


def test_failing_bundle_is_reported_and_others_still_train(full_run, tmp_path, monkeypatch):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(full_run, work, ignore=shutil.ignore_patterns("ensemble_output"))
    for b in ("segresnet_0", "segresnet_1"):
        (work / b / DONE_MARKER).unlink()
    # break fold 0's config: training must fail with a clear report while fold 1 finishes
    hp = work / "segresnet_0" / "configs" / "hyper_parameters.yaml"
    cfg = yaml.safe_load(hp.read_text())
    cfg["patch_size"] = [12, 12, 12]
    hp.write_text(yaml.safe_dump(cfg))
    original = _snapshot(full_run)
    monkeypatch.chdir(tmp_path)  # a relative work_dir, as make demo passes it
    report = train_bundles("work", overrides=run_auto3dseg.parse_overrides(TINY[1::2]), log=lambda *a: None)
    assert list(report.failed) == ["segresnet_0"] and "multiple of" in report.failed["segresnet_0"]
    assert "segresnet_1" in report.trained or "segresnet_1" in report.already
    assert not (work / "segresnet_0" / DONE_MARKER).exists() and (work / "segresnet_1" / DONE_MARKER).exists()
    # the copy read its own checkpoint (already complete) and left the original alone
    assert "already trained" in (work / "segresnet_1" / "training.log").read_text()
    assert _snapshot(full_run) == original


def test_copied_work_dir_uses_its_own_checkpoints(full_run, tmp_path):
    import shutil

    from monai.auto3dseg.utils import algo_from_json

    from auto3dseg.bundles.config import load_bundle_config

    work = tmp_path / "moved"
    shutil.copytree(full_run, work)
    cfg = load_bundle_config([str(work / "segresnet_0" / "configs" / "hyper_parameters.yaml")])
    assert cfg["ckpt_path"] == str(work / "segresnet_0" / "model")
    progress = work / "segresnet_0" / "model" / "progress.yaml"
    progress.write_text(yaml.safe_dump([{"best_avg_dice_score": 0.123}]))
    algo, _ = algo_from_json(str(work / "segresnet_0" / "algo_object.json"))
    assert algo.get_score() == pytest.approx(0.123)


def test_help_lists_every_mode_and_flag(capsys):
    with pytest.raises(SystemExit):
        run_auto3dseg.main(["--help"])
    text = capsys.readouterr().out
    for word in ("analyze", "generate", "train", "ensemble", "predict", "full", "--algos", "--num_fold",
                 "--num_epochs", "--algo", "--fold", "--templates", "--gpus", "--override"):
        assert word in text
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None or True
