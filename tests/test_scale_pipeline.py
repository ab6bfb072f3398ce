"""A scaled tree (48 classes, test labels at several voxel sizes) through the whole pipeline to a
scored submission: every (crop, label) of the manifest lands on the grid the manifest asks for."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import zarr

import run_auto3dseg
from converters.cellmap import convert as convert_zarr_to_nifti
from converters.cellmap import synthetic as S
from converters.cellmap.zarr_tree import read_test_manifest_rows

TINY = ["--algos", "segresnet", "--num_epochs", "1", "--patch_size", "32", "--override", "num_workers=0",
        "--override", "num_iterations_per_epoch=1", "--override", "segresnet:network#init_filters=8",
        "--override", "segresnet:network#dsdepth=2", "--override", "sw_batch_size=4"]


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaled")
    tree = root / "tree"
    S.generate_synthetic_cellmap(tree, seed=1, scale=2.0)
    nifti = root / "nifti"
    rc = convert_zarr_to_nifti.main(["--datasplit", str(tree / "datasplit.csv"), "--test_manifest",
                                     str(tree / "test_crop_manifest.csv"), "--output_dir", str(nifti),
                                     "--num_folds", "2", "--workers", "0", "--no_progress"])
    assert rc == 0
    work = root / "work"
    rc = run_auto3dseg.main(["--mode", "full", "--datalist", str(nifti / "datalist.json"), "--work_dir", str(work),
                             "--workers", "0", *TINY, "--test_manifest", str(tree / "test_crop_manifest.csv"),
                             "--truth", str(tree / "test_truth.zarr")])
    assert rc == 0
    return tree, nifti, work


def test_every_manifest_label_is_written_on_its_own_grid(scaled_run, tmp_path):
    tree, nifti, work = scaled_run
    assert len(json.loads((nifti / "datalist.json").read_text())["class_table"]) == 48
    wanted = read_test_manifest_rows(tree / "test_crop_manifest.csv")
    sizes = {tuple(t["voxel_size"]) for labels in wanted.values() for t in labels}
    assert len(sizes) >= 2  # a multi-resolution test set
    with zipfile.ZipFile(work / "submission" / "submission.zip") as zf:
        zf.extractall(tmp_path)
    store = zarr.open_group(str(tmp_path / "submission.zarr"), mode="r")
    for (_, crop), labels in wanted.items():
        for t in labels:
            arr = store[f"crop{crop}/{t['label']}"]
            assert arr.shape == tuple(t["shape"]), (crop, t)
            assert arr.attrs["voxel_size"] == [float(v) for v in t["voxel_size"]]
            assert arr.attrs["translation"] == [float(v) for v in t["translation"]]
            assert arr.dtype != np.uint8 or t["label"] not in ("mito", "ves", "nuc", "cell")  # ids never uint8
    report = json.loads((work / "submission" / "submission_report.json").read_text())
    assert {r["status"] for r in report} == {"predicted"}  # each label came from a probability map


def test_the_local_score_covers_every_label(scaled_run):
    tree, _, work = scaled_run
    scores = json.loads((work / "submission" / "scores.json").read_text())
    labels = {t["label"] for ls in read_test_manifest_rows(tree / "test_crop_manifest.csv").values() for t in ls}
    assert set(scores["labels"]) == labels and scores["missing"] == []
    assert 0.0 <= scores["overall"]["score"] <= 1.0
