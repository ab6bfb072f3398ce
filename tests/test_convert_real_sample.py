"""The real SBEM sample in ../shared (anisotropic 40x6x6 nm, `er` not annotated)."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

from converters.convert_zarr_to_nifti import main

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "em_sbem_mito"
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
