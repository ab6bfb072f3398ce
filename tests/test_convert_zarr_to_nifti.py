"""The CellMap Zarr → NIfTI converter on the built-in synthetic data (every hard case)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from scipy import ndimage

from converters.cellmap import zarr_tree as cz
from converters.cellmap.class_mapping import cellmap_lookup
from converters.cellmap.convert import (
    ConvertSettings,
    SettingsMismatch,
    convert,
    main,
)
from converters.cellmap.crop import convert_test_crop
from converters.geometry import grid_from_nifti_affine, source_coordinates
from datalists.annotated import decode_annotated
from datalists.validate import validate_datalist


def _crop(report: dict, name: str) -> dict:
    return next(r for r in report["crops"] if r["name"] == name)


def _load_zyx(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    img = nib.load(path)
    return np.asarray(img.dataobj).T, img


def _assert_linear_sample_of(image_path: Path, em_zarr: Path, level: str, origin, spacing) -> None:
    """The image equals SciPy's trilinear sample of the EM level at the image's voxel centres."""
    img, nii = _load_zyx(image_path)
    grid = grid_from_nifti_affine(nii.affine, nii.shape)
    em = zarr.open_group(str(em_zarr), mode="r")[f"recon-1/em/fibsem-uint8/{level}"][:]
    coords = np.meshgrid(*source_coordinates(grid, origin, spacing), indexing="ij")
    expected = ndimage.map_coordinates(em.astype(np.float64), coords, order=1, mode="nearest")
    assert np.abs(img.astype(np.float64) - expected).max() <= 1.0


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    # the datasplit holds absolute paths: point it at the copy
    split = (dst / "datasplit.csv").read_text().replace(str(src), str(dst))
    (dst / "datasplit.csv").write_text(split)
    return dst


def test_every_hard_case_gets_its_verdict(synthetic, converted):
    out, report = converted
    cases = json.loads((synthetic / "cases.json").read_text())
    for crop, case in cases.items():
        rec = _crop(report, f"{case['dataset']}_{crop}")
        assert rec["verdict"] == case["expected_verdict"], (crop, case["case"], rec)
        if rec["verdict"] == "skipped":
            assert rec["reason"] == case["reason"]
    assert _crop(report, "synth-2_crop4")["em_level"] == "s1"
    assert _crop(report, "synth-1_crop3")["padded_fraction"] == pytest.approx(
        cases["crop3"]["expected_padded_fraction"], abs=0.02)
    assert report["summary"]["failed"] == 0
    assert report["datalist_validation"]["ok"] is True


def test_no_blank_image_is_written(converted):
    out, report = converted
    for rec in report["crops"]:
        for item in rec["items"]:
            img, _ = _load_zyx(out / item["image"])
            assert img.std() > 5, item["image"]
            inside = img if not rec.get("padded_fraction") else img[img > 0]
            # no big blank slab: every z-plane that lies inside the EM has contrast
            for plane in img:
                if plane.any():
                    assert plane.std() > 1, item["image"]
            assert inside.size


def test_coarse_gt_image_comes_from_s1_not_blank_s0(synthetic, converted):
    out, report = converted
    rec = _crop(report, "synth-2_crop4")
    assert rec["em_upsample"] == pytest.approx(2.0)
    assert any("s0 has no data" in w for w in rec["warnings"])
    _assert_linear_sample_of(out / rec["items"][0]["image"], synthetic / "synth-2/synth-2.zarr", "s1",
                             origin=(4.0, 4.0, 4.0), spacing=(16.0, 16.0, 16.0))


def test_em_too_coarse_is_skipped_when_upsampling_is_not_allowed(synthetic, tmp_path):
    crops = [c for c in cz.read_datasplit(synthetic / "datasplit.csv") if c.crop_id in (1, 4)]
    report = convert(tmp_path / "o", crops, num_folds=2, max_em_upsample=1.0, progress=False)
    rec = _crop(report, "synth-2_crop4")
    assert (rec["verdict"], rec["reason"]) == ("skipped", "em_too_coarse")
    assert "s1" in rec["detail"] and "--target_spacing" in rec["detail"]
    assert not (tmp_path / "o/images/synth-2_crop4.nii.gz").exists()


@pytest.mark.parametrize("crop", ["synth-1_crop1", "synth-2_crop6"])
def test_label_round_trip_through_affine(synthetic, converted, crop):
    """A label mapped back through its affine lands on the source crop's voxels (crop6: off-grid)."""
    out, report = converted
    rec = _crop(report, crop)
    label, nii = _load_zyx(out / rec["items"][0]["label"])
    grid = grid_from_nifti_affine(nii.affine, nii.shape)
    dataset, cropname = crop.split("_")
    root = zarr.open_group(str(synthetic / dataset / f"{dataset}.zarr"), mode="r")
    levels = cz.read_levels(root[f"recon-1/labels/groundtruth/{cropname}/all"])
    assert grid.origin == pytest.approx(levels[0].translation)
    assert grid.spacing == pytest.approx(levels[0].scale)
    source_all = root[f"recon-1/labels/groundtruth/{cropname}/all/s0"][:]
    datalist = json.loads((out / "datalist.json").read_text())
    lut = cellmap_lookup(datalist["class_table"])
    assert np.array_equal(label, lut[source_all])


def test_offgrid_image_is_linear_interpolation_of_em(synthetic, converted):
    out, report = converted
    rec = _crop(report, "synth-2_crop6")
    assert any(t % 8 for t in rec["gt_translation"])
    _assert_linear_sample_of(out / rec["items"][0]["image"], synthetic / "synth-2/synth-2.zarr", "s0",
                             origin=(0.0, 0.0, 0.0), spacing=(8.0, 8.0, 8.0))


def test_partial_annotation_recorded_per_item(converted):
    out, report = converted
    datalist = json.loads((out / "datalist.json").read_text())
    items = json.loads((out / "datalist_items.json").read_text())
    ids = {r["name"]: r["id"] for r in datalist["class_table"]}
    entry = next(t for t in datalist["training"] if "crop2" in t["image"])
    annotated = decode_annotated(entry["annotated_mask"])
    assert annotated == sorted(ids[n] for n in ("mito_mem", "mito_lum", "mito"))
    assert items[entry["image"]]["annotated"] == annotated
    rec = _crop(report, "synth-1_crop2")
    assert set(rec["not_annotated"]) == {"er", "er_mem", "er_lum"}
    assert rec["not_annotated"]["er_mem"] in ("all unknown", "no chunk on disk")


def test_hierarchical_classes_in_table_and_labels(converted):
    out, report = converted
    datalist = json.loads((out / "datalist.json").read_text())
    table = {r["name"]: r for r in datalist["class_table"]}
    assert table["mito"]["instance"] and not table["mito_mem"]["instance"]
    assert table["mito"]["parts"] == sorted([table["mito_mem"]["id"], table["mito_lum"]["id"]])
    assert table["mito"]["cellmap_id"] == 50
    # crop1 annotates mito's parts: its label holds the parts; crop6 annotates only the group
    lab1, _ = _load_zyx(out / "labels/synth-1_crop1.nii.gz")
    lab6, _ = _load_zyx(out / "labels/synth-2_crop6.nii.gz")
    assert (lab1 == table["mito_mem"]["id"]).any() and not (lab1 == table["mito"]["id"]).any()
    assert (lab6 == table["mito"]["id"]).any() and not (lab6 == table["mito_mem"]["id"]).any()


def test_folds_keep_datasets_together_and_datalist_fits_monai(converted):
    from monai.auto3dseg.utils import datafold_read

    out, report = converted
    datalist = json.loads((out / "datalist.json").read_text())
    folds = {}
    for t in datalist["training"]:
        folds.setdefault(t["image"].split("_crop")[0].split("/")[-1], set()).add(t["fold"])
    assert all(len(f) == 1 for f in folds.values()) and len(set.union(*folds.values())) == 2
    train, val = datafold_read(str(out / "datalist.json"), str(out), fold=0)
    assert len(train) + len(val) == len(datalist["training"]) and val
    assert all(os.path.exists(d["image"]) and os.path.exists(d["label"]) for d in train + val)
    summary = validate_datalist(out / "datalist.json", check_label_values=True)
    assert summary["n_testing"] == 2


def test_test_crops_cover_union_of_label_rois(converted, synthetic):
    out, report = converted
    rec = _crop(report, "synth-2_crop102")
    items = json.loads((out / "datalist_items.json").read_text())
    meta = items[rec["items"][0]["image"]]
    assert {lbl["label"] for lbl in meta["test_labels"]} == {"mito", "cyto", "er"}
    _, nii = _load_zyx(out / rec["items"][0]["image"])
    grid = grid_from_nifti_affine(nii.affine, nii.shape)
    for lbl in meta["test_labels"]:
        lo = np.asarray(lbl["translation"]) - np.asarray(lbl["voxel_size"]) / 2
        hi = lo + np.asarray(lbl["shape"]) * np.asarray(lbl["voxel_size"])
        assert np.all(grid.lower_edge <= lo + 1e-6) and np.all(grid.upper_edge >= hi - 1e-6)


def test_crop_outside_em_is_skipped(synthetic, tmp_path):
    em = str(synthetic / "synth-1/synth-1.zarr")
    far = cz.TestCrop("synth-1", 999, em, "recon-1/em/fibsem-uint8",
                      ({"label": "mito", "voxel_size": (8.0,) * 3, "translation": (1e6, 1e6, 1e6),
                        "shape": (8, 8, 8)},))
    rec = convert_test_crop(far, ConvertSettings(), tmp_path)
    assert (rec["verdict"], rec["reason"]) == ("skipped", "outside_em")
    # both boxes, and what to do (probe C8: "does not overlap the EM volume at any level" only)
    assert "the crop spans 1e+06..1.00006e+06" in rec["detail"] and "the EM (s0) spans 0.." in rec["detail"], rec
    assert "fix the metadata or the datasplit row" in rec["detail"]


def test_constant_image_fails_the_crop(synthetic, tmp_path):
    data = _copy(synthetic, tmp_path / "data")
    em = zarr.open_group(str(data / "synth-1/synth-1.zarr"), mode="r+")["recon-1/em/fibsem-uint8/s0"]
    em[:, :, :] = 117  # a constant volume with every chunk present
    crops = [c for c in cz.read_datasplit(data / "datasplit.csv") if c.crop_id in (1, 6)]
    report = convert(tmp_path / "o", crops, num_folds=2, progress=False)
    rec = _crop(report, "synth-1_crop1")
    assert (rec["verdict"], rec["reason"]) == ("failed", "constant_image")  # a blank training crop: a defect
    assert not list((tmp_path / "o/images").glob("synth-1_crop1*"))


def test_tiling_reassembles_to_untiled_output(synthetic, converted, tmp_path):
    out, _ = converted
    crops = [c for c in cz.read_datasplit(synthetic / "datasplit.csv") if c.crop_id == 1]
    report = convert(tmp_path / "o", crops, num_folds=1, max_voxels=40_000, progress=False)
    rec = report["crops"][0]
    assert rec["tiled"] and len(rec["items"]) > 1
    whole_img, _ = _load_zyx(out / "images/synth-1_crop1.nii.gz")
    whole_lab, whole_nii = _load_zyx(out / "labels/synth-1_crop1.nii.gz")
    whole_grid = grid_from_nifti_affine(whole_nii.affine, whole_nii.shape)
    for item in rec["items"]:
        img, nii = _load_zyx(tmp_path / "o" / item["image"])
        lab, _ = _load_zyx(tmp_path / "o" / item["label"])
        assert img.size <= 40_000
        sl = tuple(slice(a, b) for a, b in zip(item["tile_start"], item["tile_stop"]))
        assert np.array_equal(img, whole_img[sl]) and np.array_equal(lab, whole_lab[sl])
        tile_grid = whole_grid.sub_grid(item["tile_start"], item["tile_stop"])
        assert grid_from_nifti_affine(nii.affine, nii.shape) == tile_grid
    datalist = json.loads((tmp_path / "o/datalist.json").read_text())
    assert len({t["fold"] for t in datalist["training"]}) == 1  # tiles of a crop share a fold


def test_resume_skips_finished_crops_and_redoes_missing_ones(synthetic, tmp_path):
    crops = [c for c in cz.read_datasplit(synthetic / "datasplit.csv") if c.crop_id in (1, 2, 6)]
    out = tmp_path / "o"
    convert(out, crops, num_folds=2, progress=False)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    (out / "images/synth-1_crop2.nii.gz").unlink()
    report = convert(out, crops, num_folds=2, progress=False)
    assert report["summary"]["resumed"] == 2
    assert not _crop(report, "synth-1_crop2").get("resumed")
    now = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert now["synth-1_crop1.nii.gz"] == first["synth-1_crop1.nii.gz"]
    assert (out / "images/synth-1_crop2.nii.gz").exists()


def test_resume_converts_again_a_crop_whose_truth_was_edited(synthetic, tmp_path, capsys):
    """An annotation corrected in the store after the conversion was "resumed" with the old label."""
    import zarr

    data = _copy(synthetic, tmp_path / "data")
    crops = [c for c in cz.read_datasplit(data / "datasplit.csv") if c.crop_id in (1, 2)]
    out = tmp_path / "o"
    convert(out, crops, num_folds=2, progress=False)
    arr = zarr.open(str(data / "synth-1/synth-1.zarr/recon-1/labels/groundtruth/crop1/all/s0"), mode="r+")
    edited = arr[...]
    edited[:, :, :10] = 0
    arr[...] = edited
    capsys.readouterr()
    report = convert(out, crops, num_folds=2, progress=False)
    assert not _crop(report, "synth-1_crop1").get("resumed") and _crop(report, "synth-1_crop2")["resumed"]
    assert "synth-1_crop1: its ground truth changed in the store since it was converted" in capsys.readouterr().err
    report = convert(out, crops, num_folds=2, progress=False)  # converted from the edit: resumed from now on
    assert report["summary"]["resumed"] == 2
    em = zarr.open(str(data / "synth-1/synth-1.zarr/recon-1/em/fibsem-uint8/s0"), mode="r+")
    em[:4] = 255 - em[:4]  # the EM edited (or downloaded again) where crop 1 reads it
    report = convert(out, crops, num_folds=2, progress=False)
    assert "synth-1_crop1: its EM changed in the store since it was converted" in capsys.readouterr().err
    assert not _crop(report, "synth-1_crop1").get("resumed")


def test_other_settings_refused_unless_forced(synthetic, tmp_path):
    crops = [c for c in cz.read_datasplit(synthetic / "datasplit.csv") if c.crop_id in (1, 6)]
    out = tmp_path / "o"
    convert(out, crops, num_folds=2, progress=False)
    with pytest.raises(SettingsMismatch, match="target_spacing"):
        convert(out, crops, num_folds=2, target_spacing=(16, 16, 16), progress=False)
    report = convert(out, crops, num_folds=2, target_spacing=(16, 16, 16), force=True, progress=False)
    assert report["summary"]["converted"] == 2 and report["summary"]["resumed"] == 0
    _, nii = _load_zyx(out / "images/synth-1_crop1.nii.gz")
    assert np.allclose(nii.header.get_zooms(), 16)


def test_bad_crop_is_reported_and_batch_continues(synthetic, tmp_path, capsys):
    data = _copy(synthetic, tmp_path / "data")
    (data / "synth-1/synth-1.zarr/recon-1/labels/groundtruth/crop1/all/.zattrs").write_text("{not json")
    rc = main(["--datasplit", str(data / "datasplit.csv"), "--output_dir", str(tmp_path / "o"),
               "--num_folds", "2", "--no_progress"])
    assert rc == 1  # something failed
    report = json.loads((tmp_path / "o/conversion_report.json").read_text())
    rec = _crop(report, "synth-1_crop1")
    assert rec["verdict"] == "failed" and rec["detail"]
    assert _crop(report, "synth-2_crop6")["verdict"] == "converted"
    assert "synth-1_crop1: failed" in capsys.readouterr().out


def test_inputs_are_never_written(synthetic, tmp_path):
    data = _copy(synthetic, tmp_path / "data")

    def snapshot():
        return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in data.rglob("*")}

    before = snapshot()
    assert main(["--datasplit", str(data / "datasplit.csv"), "--test_manifest", str(data / "test_crop_manifest.csv"),
                 "--output_dir", str(tmp_path / "o"), "--num_folds", "2", "--no_progress"]) == 0
    assert snapshot() == before


def test_parallel_workers_give_identical_outputs(synthetic, converted, tmp_path):
    out, _ = converted
    crops = [c for c in cz.read_datasplit(synthetic / "datasplit.csv") if c.crop_id in (1, 6)]
    convert(tmp_path / "o", crops, num_folds=2, workers=2, progress=False)
    for name in ("synth-1_crop1", "synth-2_crop6"):
        a, _ = _load_zyx(tmp_path / "o/images" / f"{name}.nii.gz")
        b, _ = _load_zyx(out / "images" / f"{name}.nii.gz")
        assert np.array_equal(a, b)


def test_cli_dry_run_writes_nothing_and_errors_are_clear(synthetic, tmp_path, capsys):
    assert main(["--datasplit", str(synthetic / "datasplit.csv"), "--output_dir", str(tmp_path / "o"),
                 "--dry_run"]) == 0
    assert not (tmp_path / "o").exists()
    plan = json.loads(capsys.readouterr().out)
    assert "mito" in plan["classes"]
    assert main(["--output_dir", str(tmp_path / "o")]) == 2
    assert "--datasplit" in capsys.readouterr().err
    assert main(["--data_root", str(synthetic), "--output_dir", str(tmp_path / "o"), "--classes", "mitoo"]) == 2
    assert "did you mean mito" in capsys.readouterr().err.lower()
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--target_spacing" in capsys.readouterr().out


def test_data_root_discovery_matches_datasplit(synthetic):
    found = {(c.dataset, c.crop_id) for c in cz.discover_crops(synthetic)}
    listed = {(c.dataset, c.crop_id) for c in cz.read_datasplit(synthetic / "datasplit.csv")}
    assert found == listed


def test_labels_composed_from_class_arrays_when_all_is_missing(synthetic, converted, tmp_path):
    out, _ = converted
    data = _copy(synthetic, tmp_path / "data")
    shutil.rmtree(data / "synth-1/synth-1.zarr/recon-1/labels/groundtruth/crop1/all")
    crops = [c for c in cz.read_datasplit(data / "datasplit.csv") if c.crop_id == 1]
    classes = [r["name"] for r in json.loads((out / "datalist.json").read_text())["class_table"]]
    report = convert(tmp_path / "o", crops, num_folds=1, classes=classes, progress=False)
    rec = report["crops"][0]
    assert rec["verdict"] == "converted"
    assert any("composed from per-class arrays" in w for w in rec["warnings"])
    composed, _ = _load_zyx(tmp_path / "o/labels/synth-1_crop1.nii.gz")
    from_all, _ = _load_zyx(out / "labels/synth-1_crop1.nii.gz")
    assert np.array_equal(composed, from_all)
