"""The real SBEM sample in ../shared (anisotropic 40x6x6 nm, `er` not annotated)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

from converters.cellmap.convert import main
from datalists.validate import main as validate_main

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "em_sbem_mito"
pytestmark = pytest.mark.skipif(not (SAMPLE / "sbem_mito.zarr").exists(),
                                reason="../shared/data/em_sbem_mito is absent (it is not shipped with the project)")


def test_sbem_mito_converts_exactly(tmp_path):
    out = tmp_path / "out"
    rc = main(["--data_root", str(SAMPLE), "--output_dir", str(out), "--target_spacing", "40", "6", "6",
               "--num_folds", "1", "--no_progress"])
    assert rc == 0
    src = zarr.open_group(str(SAMPLE / "sbem_mito.zarr"), mode="r")
    truth = src["recon-1/labels/groundtruth/crop1/mito/s0"][:]
    lab = nib.load(out / "labels" / "sbem_mito_crop1.nii.gz")
    label_zyx = np.asarray(lab.dataobj).T
    assert np.array_equal(label_zyx > 0, truth > 0)  # exactly the source's mitochondria voxels
    assert np.allclose(lab.header.get_zooms(), (6, 6, 40))
    # the affine places voxel 0 at the crop's physical origin (x, y, z order)
    assert np.allclose(lab.affine[:3, 3], (960.0, 576.0, 80.0))
    # the image is the EM under the crop, untouched (same voxel size, aligned)
    img = np.asarray(nib.load(out / "images" / "sbem_mito_crop1.nii.gz").dataobj).T
    em = src["recon-1/em/fibsem-uint8/s0"]
    assert np.array_equal(img, em[2:18, 96:864, 160:864])

    report = json.loads((out / "conversion_report.json").read_text())
    crop = report["crops"][0]
    assert crop["not_annotated"] == {"er": "all unknown"}
    assert "er" in report["classes_never_annotated"]
    datalist = json.loads((out / "datalist.json").read_text())
    assert [c["name"] for c in datalist["class_table"]] == ["mito"]
    assert datalist["training"][0]["annotated_mask"] == 0b1
    items = json.loads((out / "datalist_items.json").read_text())
    assert items["images/sbem_mito_crop1.nii.gz"]["annotated_names"] == ["mito"]


def test_sbem_crop_tiled_into_two_spatial_folds_that_validate(tmp_path, capsys):
    """Issue 11: the single crop, tiled, converts into 2 folds that validate and both have training items."""
    from auto3dseg.engine.training_data import fold_items

    out = tmp_path / "out"
    rc = main(["--data_root", str(SAMPLE), "--output_dir", str(out), "--target_spacing", "40", "6", "6",
               "--num_folds", "2", "--max_voxels", "2000000", "--no_progress"])
    assert rc == 0
    assert "cut into 2 spatial folds along y (y 0:376 -> fold 0, y 392:768 -> fold 1)" in capsys.readouterr().out
    assert validate_main([str(out / "datalist.json"), "--label-values"]) == 0
    datalist = json.loads((out / "datalist.json").read_text())
    meta = json.loads((out / "datalist_items.json").read_text())
    assert datalist["num_folds"] == 2 and {t["fold"] for t in datalist["training"]} == {0, 1}
    for fold in (0, 1):  # what training reads: both folds train on the other's tiles
        train, val = fold_items(out / "datalist.json", out, fold)
        assert train and val
    truth = zarr.open_group(str(SAMPLE / "sbem_mito.zarr"), mode="r")["recon-1/labels/groundtruth/crop1/mito/s0"][:]
    y_rows = {0: set(), 1: set()}
    for t in datalist["training"]:
        m = meta[t["image"]]
        assert m["fold"] == t["fold"] and np.prod(m["shape_zyx"]) <= 2_000_000
        box = tuple(slice(a, b) for a, b in zip(m["tile_start"], m["tile_stop"]))
        label = np.asarray(nib.load(out / t["label"]).dataobj).T
        assert np.array_equal(label > 0, truth[box] > 0)
        y_rows[t["fold"]].update(range(m["tile_start"][1], m["tile_stop"][1]))
    assert max(y_rows[0]) + 16 < min(y_rows[1])  # a 16-voxel gap between the folds' y ranges
