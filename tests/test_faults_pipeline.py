"""Issue 12, the pipeline: kills at chosen points, concurrent runs, failing writes and bad input
never leave a wrong or lost result, and every error names the file and what to do.

One tiny work_dir (segresnet, one fold, 2 epochs of 1 iteration, 16³ patches) is built once; each
test copies it before damaging it. Faults come from ``tests/faults.py`` (SIGKILL at a rename, in
the training subprocess too; writes failing past a size)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from faults import ROOT, SITE
from pipeline_work import SCRIPT, TINY, copy_work, nan_copy, run_work, zip_arrays

import run_auto3dseg
from auto3dseg.ensembling.probability_maps import open_probability_map


@pytest.fixture(scope="module")
def base(trained_work) -> Path:
    return trained_work


def _progress(work: Path) -> list:
    entries = yaml.safe_load((work / "segresnet_0" / "model" / "progress.yaml").read_text())
    return [{k: v for k, v in e.items() if k != "time"} for e in entries]


def _weights(path: Path) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt.get("state_dict") or ckpt["model"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".tmp-*"))


# --------------------------------------------------------------------------------------- steps
@pytest.mark.parametrize("step, folder, args", [
    ("ensemble", "ensemble_output", ["--mode", "ensemble", "--force"]),
    ("submit", "submission", ["--mode", "submit", "--force"]),
])
def test_a_step_held_by_another_run_is_refused_naming_it(base, tmp_path, step, folder, args):
    from auto3dseg.orchestration.locks import step_lock

    work = copy_work(base, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in (work / folder).iterdir() if p.is_file()}
    with step_lock(work / folder, step, log=lambda *a: None):
        proc = run_work(work, *args)
    assert proc.returncode != 0 and f"pid {os.getpid()}" in proc.stderr, proc.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (work / folder).iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == \
        {k: v for k, v in before.items() if not k.endswith(".lock")}  # nothing of the holder's touched
    proc = run_work(work, *args)  # released: the same command now runs
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------------------- analysis
def test_killed_reanalysis_leaves_no_statistics_to_generate_from(base, converted, tmp_path):
    work = copy_work(base, tmp_path)
    datalist = str(converted[0] / "datalist.json")
    before = yaml.safe_load((work / "datastats.yaml").read_text())
    proc = run_work(work, "--mode", "analyze", "--datalist", datalist, "--workers", "0", "--force",
                kill_at="datastats.yaml", when="before")
    assert proc.returncode == -9
    assert not (work / "datastats.yaml").exists()  # removed first: the old one would look like this run's
    proc = run_work(work, "--mode", "generate", "--datalist", datalist, "--num_fold", "1", "--algos", "segresnet",
                "--force")
    assert proc.returncode == 2 and "datastats.yaml not found: run --mode analyze" in proc.stderr
    proc = run_work(work, "--mode", "analyze", "--datalist", datalist, "--workers", "0")
    assert proc.returncode == 0, proc.stderr
    after = yaml.safe_load((work / "datastats.yaml").read_text())
    assert after["stats_summary"] == before["stats_summary"] and _temporaries(work) == []


# --------------------------------------------------------------------------------------- training
@pytest.mark.parametrize("kill_at,when,nth", [("last.pt", "before", 2), ("last.pt", "after", 1)])
def test_training_killed_between_checkpoint_and_progress_resumes_to_the_same_result(base, tmp_path, kill_at,
                                                                                     when, nth):
    work = copy_work(base, tmp_path)
    proc = run_work(work, "--mode", "train", "--force", *TINY, kill_at=kill_at, when=when, nth=nth)
    assert proc.returncode == 1, proc.stderr  # the training process was killed; the parent reports it
    assert not (work / "segresnet_0" / "training_done.json").exists()  # removed first, never written
    proc = run_work(work, "--mode", "train", *TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming" in proc.stdout
    assert _progress(work) == _progress(base)  # no entry twice, none missing
    model = work / "segresnet_0" / "model"
    assert _same_weights(model / "model.pt", base / "segresnet_0" / "model" / "model.pt")
    assert _same_weights(model / "last.pt", base / "segresnet_0" / "model" / "last.pt")
    assert _temporaries(model) == []  # the killed run's temporary checkpoint is gone
    done = json.loads((work / "segresnet_0" / "training_done.json").read_text())
    assert done["best_avg_dice_score"] == _progress(work)[-1]["best_avg_dice_score"]


def test_a_checkpoint_that_cannot_be_written_is_named_and_leaves_no_temporary(base, tmp_path):
    work = copy_work(base, tmp_path)
    size = (work / "segresnet_0" / "model" / "model.pt").stat().st_size
    # one short epoch (250 iterations of the full-size network outran the 600 s limit on a busy 2-core machine)
    proc = run_work(work, "--mode", "train", "--algo", "segresnet", "--fold", "0", "--force", "--override",
                "num_epochs=1", "--override", "num_iterations_per_epoch=1", "--override", "num_workers=0",
                max_file_bytes=size // 2)  # a full disk: the checkpoint's write fails part-way
    assert proc.returncode != 0
    log = (work / "segresnet_0" / "training.log").read_text()
    assert "cannot write the checkpoint" in log and "model.pt" in log and "df -h" in log
    assert "Traceback" not in log
    assert _temporaries(work / "segresnet_0") == []
    assert not (work / "segresnet_0" / "training_done.json").exists()  # --force removed it first


def test_second_train_of_a_bundle_refuses_or_waits_and_the_first_result_stays(base, tmp_path):
    work = copy_work(base, tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SITE), str(ROOT)])}
    first = subprocess.Popen([sys.executable, SCRIPT, "--work_dir", str(work), "--mode", "train", "--force", *TINY,
                              "--override", "num_epochs=3"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lock = work / "segresnet_0" / ".train.lock"
    deadline = time.time() + 120
    while time.time() < deadline and not (lock.is_file() and lock.read_text()):
        time.sleep(0.2)
    holder = json.loads(lock.read_text())
    assert holder["pid"] == first.pid
    waiter = subprocess.Popen([sys.executable, SCRIPT, "--work_dir", str(work), "--mode", "train", *TINY,
                               "--wait_lock"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    second = run_work(work, "--mode", "train", *TINY)
    first_out, _ = first.communicate(timeout=300)
    waiter_out, _ = waiter.communicate(timeout=300)
    assert second.returncode == 1
    assert f"pid {first.pid}" in second.stdout and "--wait_lock" in second.stdout
    assert first.returncode == 0, first_out
    assert waiter.returncode == 0 and "waiting for the training of segresnet_0" in waiter_out
    assert "already trained segresnet_0" in waiter_out  # it waited, then found the bundle trained
    done = json.loads((work / "segresnet_0" / "training_done.json").read_text())
    progress = _progress(work)
    state = torch.load(work / "segresnet_0" / "model" / "last.pt", map_location="cpu", weights_only=False)["state"]
    assert state["epoch"] == 3 and done["best_avg_dice_score"] == progress[-1]["best_avg_dice_score"]
    assert lock.read_text() == ""  # released cleanly: no holder left behind


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_a_meaningless_sw_memory_gb_is_named_by_predict(base, tmp_path, converted, value):
    """0 or -1 ran silently in the smallest blocks; 'abc' said only "could not convert string to
    float", naming neither the file nor the key (probe M2, M3)."""
    work = copy_work(base, tmp_path)
    hp = work / "segresnet_0" / "configs" / "hyper_parameters.yaml"
    text = hp.read_text()
    assert "\nsw_memory_gb: " in text
    hp.write_text(re.sub(r"(?m)^sw_memory_gb: .*$", f"sw_memory_gb: {value}", text))
    image = json.loads((converted[0] / "datalist.json").read_text())["testing"][0]["image"]
    proc = run_work(work, "--mode", "predict", "--images", str(converted[0] / image),
                    "--output_dir", str(tmp_path / "p"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{hp.parent}: sw_memory_gb " in proc.stderr and "expected the GB one sliding-window block" in proc.stderr


def test_corrupt_checkpoints_name_the_file_and_the_fix(base, tmp_path, converted):
    work = copy_work(base, tmp_path)
    model = work / "segresnet_0" / "model"
    (model / "model.pt").write_bytes((model / "model.pt").read_bytes()[:100])
    image = json.loads((converted[0] / "datalist.json").read_text())["testing"][0]["image"]
    proc = run_work(work, "--mode", "predict", "--images", str(converted[0] / image),
                    "--output_dir", str(tmp_path / "p"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert str(model / "model.pt") in proc.stderr and "--force" in proc.stderr
    (model / "last.pt").write_bytes(b"not a checkpoint")
    (work / "segresnet_0" / "training_done.json").unlink()
    proc = run_work(work, "--mode", "train", *TINY)
    assert proc.returncode == 1
    assert f"error: {model / 'last.pt'} is damaged" in proc.stdout and "Delete it to restart" in proc.stdout


# --------------------------------------------------------------------------------------- ensemble
def _maps(work: Path) -> dict[str, np.ndarray]:
    manifest = json.loads((work / "ensemble_output" / "ensemble.json").read_text())
    return {Path(it["probabilities"]).name: open_probability_map(it["probabilities"]).probabilities()
            for it in manifest["items"]}


@pytest.mark.parametrize("kill_at,nth", [("*_prob.zarr", 2), ("ensemble.json", 1)])
def test_killed_ensemble_is_never_taken_as_complete(base, tmp_path, kill_at, nth):
    work = copy_work(base, tmp_path)
    proc = run_work(work, "--mode", "ensemble", "--force", "--algos", "segresnet", kill_at=kill_at, nth=nth)
    assert proc.returncode == -9
    assert not (work / "ensemble_output" / "ensemble.json").exists()
    proc = run_work(work, "--mode", "submit")
    assert proc.returncode == 2 and "ensemble.json not found" in proc.stderr
    assert "crop not converted" not in proc.stdout
    proc = run_work(work, "--mode", "ensemble", "--algos", "segresnet")
    assert proc.returncode == 0, proc.stderr
    assert "ended without finishing" in proc.stdout  # the killed run's lock was found stale
    got, want = _maps(work), _maps(base)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert _temporaries(work / "ensemble_output") == []
    assert not (work / "ensemble_output" / "ensemble.partial.json").exists()


def test_a_failing_write_is_one_line_and_leaves_no_ensemble(base, tmp_path):
    work = copy_work(base, tmp_path)
    proc = run_work(work, "--mode", "ensemble", "--force", "--algos", "segresnet", max_file_bytes=2000)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "File too large" in proc.stderr
    assert str(work / "ensemble_output") in proc.stderr
    assert not (work / "ensemble_output" / "ensemble.json").exists()


@pytest.mark.parametrize("mode, marker, limit", [
    ("analyze", "datastats.yaml", 3000),           # MONAI's writer; was blamed on an image
    ("submit", "submission/submission_signature.txt", 20000),  # zarr chunk writes name no file
])
def test_a_failing_write_names_a_file_of_the_step(base, converted, tmp_path, mode, marker, limit):
    work = copy_work(base, tmp_path)
    before = {p.name: p.read_bytes() for p in (work / "submission").iterdir() if p.is_file()}
    proc = run_work(work, "--mode", mode, "--force", "--datalist", str(converted[0] / "datalist.json"),
                *(["--workers", "0"] if mode == "analyze" else []), max_file_bytes=limit)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {work}") and "File too large" in last and "ulimit" in last, last
    assert "datalists.validate" not in last and "(unknown file)" not in last
    if mode == "analyze":
        assert not (work / marker).exists()
    else:  # the new store fails while written aside: the earlier submission stays whole, its marker with it
        assert {p.name: p.read_bytes() for p in (work / "submission").iterdir() if p.is_file()} == before
        assert (work / marker).read_bytes() == before[Path(marker).name]
        assert not list((work / "submission").glob(".tmp-*")) and not (work / "submission" / "replaced").exists()


# --------------------------------------------------------------------------------------- submission


def test_submission_killed_after_the_zip_is_rebuilt_not_kept(base, tmp_path):
    work = copy_work(base, tmp_path)
    params = tmp_path / "pp.yaml"
    params.write_text("default:\n  threshold: 0.05\n")
    # the 1st rename onto submission.zip moves the previous one aside; the 2nd is the new zip's
    proc = run_work(work, "--mode", "submit", "--postprocess_params", str(params), kill_at="submission.zip",
                when="after", nth=2)
    assert proc.returncode == -9
    assert not (work / "submission" / "submission_signature.txt").exists()
    proc = run_work(work, "--mode", "submit")  # the default parameters again: the zip on disk is not theirs
    assert proc.returncode == 0, proc.stderr
    assert "up to date" not in proc.stdout
    got = zip_arrays(work / "submission" / "submission.zip", tmp_path / "got")
    want = zip_arrays(base / "submission" / "submission.zip", tmp_path / "want")
    assert got and got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert _temporaries(work / "submission") == [] and not list((work / "submission").glob(".old-*"))
    # nothing was overwritten: the base submission, then the killed run's zip, were moved aside in turn
    kept = sorted((work / "submission" / "replaced").glob("submission-*"), key=lambda p: p.stat().st_mtime_ns)
    assert len(kept) == 2 and all((k / "submission.zip").is_file() for k in kept)
    assert (kept[0] / "submission.zip").read_bytes() == (base / "submission" / "submission.zip").read_bytes()
    assert (kept[0] / "submission_signature.txt").is_file() and not (kept[1] / "submission_signature.txt").exists()
    proc = run_work(work, "--mode", "submit")
    assert "up to date" in proc.stdout
    assert len(list((work / "submission" / "replaced").glob("submission-*"))) == 2  # kept: nothing moved


# --------------------------------------------------------------------------------------- bad input
def test_typo_in_an_override_lists_the_nearest_keys(base, tmp_path, capsys):
    work = copy_work(base, tmp_path)
    before = (work / "segresnet_0" / "model" / "last.pt").stat().st_mtime_ns
    for bad, hint in (("num_epoch=1", "num_epochs"), ("segresnt:num_epochs=1", "segresnet"),
                      ("network#init_filter=4", "network#init_filters")):
        rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--force", "--override", bad])
        err = capsys.readouterr().err
        assert rc == 2 and hint in err and "did you mean" in err and "Traceback" not in err, err
    assert (work / "segresnet_0" / "model" / "last.pt").stat().st_mtime_ns == before  # nothing trained
    assert (work / "segresnet_0" / "training_done.json").is_file()


def test_bundles_of_another_class_table_are_refused(base, tmp_path, converted, capsys):
    work = copy_work(base, tmp_path)
    dl = json.loads((converted[0] / "datalist.json").read_text())
    names = [r["name"] for r in dl["class_table"]]
    dl["class_table"][0]["name"], dl["class_table"][1]["name"] = names[1], names[0]  # re-converted, other order
    other = tmp_path / "datalist.json"
    other.write_text(json.dumps(dl))
    src = yaml.safe_load((work / "input.yaml").read_text())
    (work / "input.yaml").write_text(yaml.safe_dump({**src, "datalist": str(other)}))
    for mode in ("train", "ensemble"):
        rc = run_auto3dseg.main(["--mode", mode, "--work_dir", str(work), "--force", "--algos", "segresnet"])
        err = capsys.readouterr().err
        assert rc == 2 and str(other) in err and "segresnet_0" in err and "--mode generate" in err, err
    assert (work / "segresnet_0" / "training_done.json").is_file()


def test_bundles_of_an_older_channel_rule_are_refused_at_training_and_named_at_ensemble(base, tmp_path, capsys):
    """Bundles keep the label values each channel counts (class_members) from generation; those
    made before er_mem_all counted in er trained it as 'not er' with no word, even after the
    data and the code were updated."""
    work = copy_work(base, tmp_path)
    cfg_file = work / "segresnet_0" / "configs" / "hyper_parameters.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    last = len(cfg["class_members"]) - 1
    name = cfg["class_names"][last]
    assert len(cfg["class_members"][last]) > 1, cfg["class_members"]  # a group: er holds er_mem and er_lum
    old = cfg["class_members"][last][:-1]
    cfg_file.write_text(yaml.safe_dump({**cfg, "class_members": cfg["class_members"][:last] + [old]}))
    done = (work / "segresnet_0" / "training_done.json").read_bytes()
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--force", "--algos", "segresnet"])
    err = capsys.readouterr().err
    assert rc == 2 and "generated by an older version" in err and f"{name} counts {old}" in err, err
    assert "--mode generate" in err and "--force" in err, err
    assert (work / "segresnet_0" / "training_done.json").read_bytes() == done  # nothing trained
    proc = run_work(work, "--mode", "ensemble", "--force")  # the trained model's maps stay usable, named
    assert proc.returncode == 0 and "trained by an older version" in proc.stderr and name in proc.stderr, proc.stderr


@pytest.mark.parametrize("edit", ["renamed", "reordered"])
def test_submit_refuses_maps_of_another_class_table_as_ensemble_does(base, tmp_path, converted, edit):
    """A class renamed in the datalist after the ensemble: ensemble refused, submit wrote the
    class empty ("not in the model's class table"); a mere reorder was called "another class
    table" to regenerate while the datalist note said "the bundles stand"."""
    work, data = copy_work(base, tmp_path), tmp_path / "data"
    shutil.copytree(converted[0], data)
    datalist = data / "datalist.json"
    assert run_work(work, "--mode", "ensemble", "--datalist", str(datalist), "--force_new_datalist").returncode == 0
    dl = json.loads(datalist.read_text())
    if edit == "renamed":
        dl["class_table"][0]["name"] += "_renamed"
    else:
        dl["class_table"].reverse()
    datalist.write_text(json.dumps(dl))
    before = (work / "submission" / "submission.zip").read_bytes()
    for mode in ("ensemble", "submit"):
        proc = run_work(work, "--mode", mode)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "bundles were generated for another class table" in said, said
        assert "but its class table" in said and "the bundles stand" not in said, said
        assert ("Only the order of the rows differs" in said) == (edit == "reordered"), said
    assert (work / "submission" / "submission.zip").read_bytes() == before


@pytest.mark.parametrize("damaged, content, mode, says", [
    ("segresnet_0/training_done.json", None, "ensemble", "is damaged"),
    ("segresnet_0/training_done.json", "[]", "ensemble", "is damaged (a list, not the record of a training)"),
    ("segresnet_0/training_done.json", "null", "ensemble", "is damaged (null, not the record of a training)"),
    ("ensemble_output/ensemble.json", None, "submit", "run --mode ensemble (it writes it again"),
    ("input.yaml", "num_fold", "ensemble", "num_fold 'x' is not a whole number"),
])
def test_a_work_dir_file_cut_short_or_mistyped_is_named(base, tmp_path, damaged, content, mode, says):
    """A truncated training_done.json or ensemble.json, a marker of another shape, or `num_fold: x`
    in input.yaml, ended in a bare JSON or int() message (or a traceback) naming no file."""
    work = copy_work(base, tmp_path)
    f = work / damaged
    text = f.read_text()
    if content == "num_fold":
        f.write_text(yaml.safe_dump({**yaml.safe_load(text), "num_fold": "x"}))
    else:
        f.write_text(content if content is not None else text[: len(text) // 2])
    proc = run_work(work, "--mode", mode, "--force") if mode == "ensemble" else run_work(work, "--mode", mode)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{f}" in proc.stderr and says in proc.stderr, proc.stderr


def test_nan_missing_unreadable_or_2d_image_at_prediction_is_named(base, tmp_path, converted, capsys):
    image = converted[0] / json.loads((converted[0] / "datalist.json").read_text())["testing"][0]["image"]
    bad = nan_copy(image, tmp_path / "nan_image.nii.gz")
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"not an image")
    flat = tmp_path / "flat.nii.gz"  # a 2-D image given to 3-D bundles
    nib.save(nib.Nifti1Image(np.zeros((40, 40), np.float32), np.eye(4)), str(flat))
    for path, words in ((bad, "not finite"), (tmp_path / "missing.nii.gz", "image not found"),
                        (garbage, "cannot read the image"), (flat, "2 spatial dimension(s)")):
        rc = run_auto3dseg.main(["--mode", "predict", "--work_dir", str(base), "--algos", "segresnet",
                                 "--images", str(path), "--output_dir", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and str(path) in err and "item 0 of --images" in err, err
        assert "applying transform" not in err
        # on a line of its own: it was written after the progress bar, which a log filter drops (probe B6)
        assert any(line.strip("\r ").startswith("error: ") and str(path) in line for line in err.split("\n")), repr(err)


def test_nan_image_in_training_data_is_named(converted, tmp_path):
    from auto3dseg.engine.input_checks import NonFiniteImageError, user_error
    from auto3dseg.engine.transforms import validation_transforms

    dl = json.loads((converted[0] / "datalist.json").read_text())
    item = dl["training"][0]
    bad = nan_copy(converted[0] / item["image"], tmp_path / "nan.nii.gz")
    cfg = {"intensity": {"mode": "zscore"}, "class_ids": [r["id"] for r in dl["class_table"]]}
    with pytest.raises(Exception) as info:
        validation_transforms(cfg)({"image": str(bad), "label": str(converted[0] / item["label"]),
                                    "annotated_mask": item.get("annotated_mask", 1)})
    found = user_error(info.value)
    assert isinstance(found, NonFiniteImageError) and str(bad) in str(found)


def _tiny_datalist(root: Path, odd: str) -> Path:
    items = []
    rng = np.random.default_rng(0)
    for i in range(2):
        img = rng.random((12, 12, 12)).astype(np.float32)
        if i == 1 and odd == "nan":
            img[3, 3, 3] = np.nan
        elif i == 1 and odd == "2d":
            img = img[:, :, 0]
        elif i == 1 and odd == "4d":
            img = np.stack([img, img], -1)
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / f"im{i}.nii.gz"))
        nib.save(nib.Nifti1Image((rng.random((12, 12, 12)) > 0.5).astype(np.uint8), np.eye(4)),
                 str(root / f"lb{i}.nii.gz"))
        items.append({"image": f"im{i}.nii.gz", "label": f"lb{i}.nii.gz", "fold": i})
    (root / "dl.json").write_text(json.dumps({"training": items, "testing": []}))
    return root / "dl.json"


@pytest.mark.parametrize("odd,words", [("nan", "NaN or infinite"), ("2d", "is 2-D"), ("4d", "is 4-D")])
def test_analyze_names_the_bad_image(tmp_path, odd, words):
    from auto3dseg.analysis.analyze import analyze
    from auto3dseg.engine.input_checks import InputError

    dl = _tiny_datalist(tmp_path, odd)
    with pytest.raises(InputError) as info:
        analyze(dl, tmp_path / "work", workers=0, validate=False)
    msg = str(info.value)
    assert words in msg and "im1.nii.gz" in msg and "training item 1" in msg and "remove" in msg
    assert not (tmp_path / "work" / "datastats.yaml").exists()


def test_a_requested_label_outside_the_class_table_is_written_empty_and_named(base, tmp_path, synthetic, converted):
    import csv

    import zarr

    from datalists.cellmap_classes import CELLMAP_CLASSES

    work = copy_work(base, tmp_path)
    table = {r["name"] for r in json.loads((converted[0] / "datalist.json").read_text())["class_table"]}
    extra = next(name for name in CELLMAP_CLASSES if name not in table)
    with open(synthetic / "test_crop_manifest.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    first = {}
    for row in rows:
        first.setdefault(row["crop_name"], row)
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows + [{**row, "class_label": extra} for row in first.values()]
                         + [{**next(iter(first.values())), "class_label": "mitoo"}])
    proc = run_work(work, "--mode", "submit", "--test_manifest", str(manifest))
    assert proc.returncode == 0, proc.stderr
    assert extra in proc.stdout and "not in the model's class table" in proc.stdout
    assert "'mitoo' is not a CellMap class at all (did you mean mito" in proc.stdout
    report = json.loads((work / "submission" / "submission_report.json").read_text())
    extra_rows = [r for r in report if r["label"] == extra]
    assert len(extra_rows) == len(first) and all(r["status"] == "not in the model's class table" for r in extra_rows)
    assert any(r["status"] == "predicted" for r in report)  # the other labels were still predicted
    store = zarr.open_group(str(work / "submission" / "submission.zarr"), mode="r")
    for crop in first:
        assert not np.asarray(store[f"crop{int(str(crop).removeprefix('crop'))}/{extra}"][...]).any()


def test_a_manifest_region_outside_the_converted_image_is_named(base, tmp_path, synthetic):
    """A test manifest placing a crop elsewhere than the conversion did: the part outside the image
    (or all of it) was written empty, reported "predicted", rc 0 and no word (probe round 23, H34)."""
    import csv

    import zarr

    def shifted(row: dict, dx: float) -> dict:
        z, y, x = row["translation"].strip("[]").split(";")
        return {**row, "translation": f"[{z};{y};{float(x) + dx}]"}

    work = copy_work(base, tmp_path)
    with open(synthetic / "test_crop_manifest.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    crops = sorted({r["crop_name"] for r in rows})
    far, near = crops[0], crops[1]  # wholly outside (20 µm off), and 10 voxels off in x
    moved = [shifted(r, 20000.0) if r["crop_name"] == far else shifted(r, 10 * float(
        r["voxel_size"].strip("[]").split(";")[2])) if r["crop_name"] == near else r for r in rows]
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(moved)
    proc = run_work(work, "--mode", "submit", "--test_manifest", str(manifest))
    assert proc.returncode == 0, proc.stderr
    assert f"warning: crop{far}: up to 100% of the test manifest's region of" in proc.stdout, proc.stdout
    assert f"warning: crop{near}: up to " in proc.stdout and "convert the crop with this test manifest" in proc.stdout
    report = json.loads((work / "submission" / "submission_report.json").read_text())
    far_rows = [r for r in report if r["crop"] == f"crop{far}"]
    assert far_rows and all(r["status"] == "outside the converted image" for r in far_rows)
    near_rows = [r for r in report if r["crop"] == f"crop{near}"]
    assert near_rows and all(r["status"] == "predicted" and any("outside the converted image: empty there" in n
                                                                 for n in r["notes"]) for r in near_rows)
    store = zarr.open_group(str(work / "submission" / "submission.zarr"), mode="r")
    for r in far_rows:
        assert not np.asarray(store[f"{r['crop']}/{r['label']}"][...]).any()
    assert "written empty" in (work / "submission" / "submission_report.md").read_text()


@pytest.mark.parametrize("lose", ["weights", "model_folder", "best_only"])
def test_a_done_marker_whose_weights_are_gone_is_trained_again(base, tmp_path, lose):
    work = copy_work(base, tmp_path)
    model = work / "segresnet_0" / "model"
    if lose == "weights":
        for f in model.glob("*.pt"):
            f.unlink()
    elif lose == "best_only":  # last.pt says "finished": resuming it would train nothing and vouch for last.pt
        (model / "model.pt").unlink()
    else:
        shutil.rmtree(model)
    proc = run_work(work, "--mode", "ensemble", "--algos", "segresnet")
    assert proc.returncode == 2 and "Errno" not in proc.stderr and "--mode train" in proc.stderr, proc.stderr
    proc = run_work(work, "--mode", "train", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "training_done.json is there but its weights are not" in proc.stdout
    assert "0 already trained, 1 to train" in proc.stdout
    assert any(model.glob("*.pt")) and (work / "segresnet_0" / "training_done.json").is_file()
    assert (model / "model.pt").is_file() and "nothing to do" not in proc.stdout
    if lose == "best_only":
        (kept,) = (work / "replaced").glob("model-*")
        assert (kept / "last.pt").is_file() and "training from the first epoch" in proc.stdout
    assert run_work(work, "--mode", "ensemble", "--force", "--algos", "segresnet").returncode == 0
