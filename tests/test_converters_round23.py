"""Bad input in the converters, round 23: counts checked at parse time (H18), a test crop mostly
outside the EM (H42) or on a training crop's region (H2), and a label array given as the raw
dataset (H49).

Every test reads the built-in synthetic data (``synth-1``) in place, or a copy of it where the
store is changed, and checks what the user sees: the message, the exit code and the report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import zarr

from converters.cellmap import zarr_tree as cz
from converters.cellmap.convert import main
from converters.cellmap.em_level import annotation_marks, refuse_annotation_as_em
from converters.cellmap.input_checks import overlap_share

EM = "recon-1/em/fibsem-uint8"
LABEL_AS_EM = "recon-1/labels/groundtruth/crop1/all"
#: test manifest rows: 101 is the synthetic one (inside the EM, on no training crop); 103 ends past the
#: EM's x extent (1280 nm); 104 is training crop1's region under another crop number
MANIFEST = ("crop_name,dataset,class_label,voxel_size,translation,shape\n"
            "101,synth-1,mito,[8.0;8.0;8.0],[240.0;840.0;760.0],[32;48;56]\n"
            "103,synth-1,mito,[8.0;8.0;8.0],[240.0;840.0;1100.0],[32;48;56]\n"
            "104,synth-1,mito,[8.0;8.0;8.0],[128.0;160.0;160.0],[32;64;64]\n")


def _rows(synthetic: Path, crops: tuple[str, ...]) -> list[str]:
    return [line for line in (synthetic / "datasplit.csv").read_text().splitlines()
            if "synth-1.zarr" in line and any(f"/{c}/" in line for c in crops)]


def _cli(datasplit: Path, out: Path, *extra: str) -> list[str]:
    return ["--datasplit", str(datasplit), "--output_dir", str(out), "--num_folds", "1", "--no_progress", *extra]


def _crop(report_dir: Path, name: str) -> dict:
    report = json.loads((report_dir / "conversion_report.json").read_text())
    return next(r for r in report["crops"] if r["name"] == name)


# --------------------------------------------------------------------------- H18: counts at parse time
@pytest.mark.parametrize("flag,value,says", [
    ("--num_folds", "-1", "give 1 or more cross-validation folds"),
    ("--num_folds", "0", "give 1 or more cross-validation folds"),
    ("--workers", "-1", "give 0 or more processes"),
    ("--max_em_upsample", "-1", "give a factor of 1 or more"),
    ("--max_em_upsample", "0.5", "give a factor of 1 or more"),
    ("--max_em_upsample", "nan", "give a factor of 1 or more")])
def test_cellmap_count_flags_out_of_range_are_usage_errors(synthetic, tmp_path, capsys, flag, value, says):
    """--workers -1 and --max_em_upsample -1 were taken without a word (rc 0)."""
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        main(_cli(synthetic / "datasplit.csv", out, flag, value))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {flag}: '{value}': {says}" in err, err
    assert not out.exists()


def test_cellmap_workers_0_and_upsample_1_are_accepted():
    from converters.cellmap.flags import build_parser

    args = build_parser().parse_args(["--output_dir", "o", "--workers", "0", "--max_em_upsample", "1"])
    assert args.workers == 0 and args.max_em_upsample == 1.0 and args.num_folds == 5


@pytest.mark.parametrize("value", ["-1", "0"])
def test_cells_num_folds_below_1_is_refused_before_any_image_is_converted(synthetic_cells, tmp_path, capsys, value):
    """--num_folds -1 converted every image, then ended with "num_folds must be at least 1" naming no flag."""
    from converters.cells import convert as cc

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        cc.main(["--images", str(synthetic_cells / "images"), "--labels", str(synthetic_cells / "labels"),
                 "--output_dir", str(out), "--num_folds", value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"--num_folds {value}: give 1 or more cross-validation folds" in err, err
    assert not out.exists()


# --------------------------------------------------------------------------- H42 and H2: test crop regions
@pytest.fixture(scope="module")
def with_test_crops(synthetic, tmp_path_factory) -> tuple[int, str, Path]:
    """crop1 converted with the test crops of :data:`MANIFEST`: (exit code, stderr, output folder)."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("r23tests")
    (tmp / "datasplit.csv").write_text("\n".join(_rows(synthetic, ("crop1",))) + "\n")
    (tmp / "test_crop_manifest.csv").write_text(MANIFEST)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(_cli(tmp / "datasplit.csv", tmp / "o", "--test_manifest", str(tmp / "test_crop_manifest.csv")))
    return rc, err.getvalue(), tmp / "o"


def test_a_test_crop_mostly_outside_the_em_is_warned_about_and_still_converted(with_test_crops):
    """Test crop 103 was 58.9 % zero padding, said only in the report's padded column."""
    rc, err, out = with_test_crops
    assert rc == 0, err
    assert ("warning: synth-1_crop103: 59% of the crop lies outside the EM volume (zero-padded there): predictions "
            "there are meaningless; check the test manifest's translation") in err, err
    rec = _crop(out, "synth-1_crop103")
    assert rec["verdict"] == "converted" and rec["padded_fraction"] == pytest.approx(0.589, abs=0.005)
    assert "synth-1_crop101: " not in err  # inside the EM: nothing to say


def test_a_test_crop_on_a_training_crops_region_is_warned_about(with_test_crops):
    """Test crop 104 on exactly training crop1's region converted with rc 0 and no note."""
    rc, err, out = with_test_crops
    assert ("warning: test crop synth-1_crop104 overlaps training crop synth-1_crop1 (100% of the test crop's "
            "volume): a score on it would measure memorisation, not generalisation") in err, err
    assert "test crop synth-1_crop101 overlaps" not in err and "synth-1_crop103 overlaps" not in err
    assert rc == 0 and _crop(out, "synth-1_crop104")["verdict"] == "converted"


def test_overlap_share_is_the_share_of_the_first_box():
    assert overlap_share(((0, 0, 0), (10, 10, 10)), ((0, 0, 0), (10, 10, 10))) == 1.0
    assert overlap_share(((0, 0, 0), (10, 10, 10)), ((-5, -5, -5), (5, 5, 5))) == pytest.approx(0.125)
    assert overlap_share(((0, 0, 0), (10, 10, 10)), ((0, 0, 20), (10, 10, 30))) == 0.0
    assert overlap_share(((0, 0, 0), (2, 2, 2)), ((-10, -10, -10), (10, 10, 10))) == 1.0  # inside a larger one


# --------------------------------------------------------------------------- H49: a label array as the raw dataset
def test_a_label_array_given_as_the_raw_dataset_fails_that_crop_only(synthetic, tmp_path, capsys):
    """A datasplit row whose 3rd column named crop1's `all` array converted with rc 0: the "image" was
    the crop's label map."""
    rows = _rows(synthetic, ("crop1", "crop2"))
    rows[0] = rows[0].replace(f'"{EM}"', f'"{LABEL_AS_EM}"', 1)
    assert LABEL_AS_EM in rows[0] and "/crop1/" in rows[0]
    (tmp_path / "datasplit.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "o"
    assert main(_cli(tmp_path / "datasplit.csv", out, "--target_spacing", "16", "16", "16")) == 1
    printed = capsys.readouterr().out
    expected = (f"synth-1_crop1: raw dataset {LABEL_AS_EM} is a label array (CellMap annotation: it lies under a "
                f"labels/ group), not EM: give the EM group in the datasplit's 3rd column, e.g. {EM}")
    assert expected in printed, printed
    rec = _crop(out, "synth-1_crop1")
    assert rec["verdict"] == "failed" and expected in rec["detail"] and not rec["items"]
    assert not (out / "images" / "synth-1_crop1.nii.gz").exists()
    assert _crop(out, "synth-1_crop2")["verdict"] == "converted"


def test_a_raw_dataset_with_cellmap_annotation_attributes_is_refused_outside_labels(synthetic, tmp_path):
    """An annotation copied elsewhere in the store (no labels/ in its path) is still known by its attributes."""
    store = tmp_path / "synth-1.zarr"
    shutil.copytree(synthetic / "synth-1" / "synth-1.zarr" / "recon-1" / "labels" / "groundtruth" / "crop1",
                    store / "recon-1" / "gt" / "crop1")
    shutil.copytree(synthetic / "synth-1" / "synth-1.zarr" / "recon-1" / "em", store / "recon-1" / "em")
    for group in (store, store / "recon-1", store / "recon-1" / "gt"):
        zarr.open_group(str(group), mode="a")
    root = cz.open_readonly(store)
    with pytest.raises(cz.CellMapFormatError, match=r"synth-1_crop1: raw dataset recon-1/gt/crop1/all is a label "
                       r"array \(CellMap annotation: its \.zattrs carry CellMap annotation attributes\), not EM: .*"
                       f"e.g. {EM}"):
        refuse_annotation_as_em("synth-1_crop1", root, store, "recon-1/gt/crop1/all")
    refuse_annotation_as_em("synth-1_crop1", root, store, EM)  # the EM itself: no word


def test_annotation_marks_reads_path_and_attributes():
    assert annotation_marks(EM, [{"multiscales": []}, {}, {}]) == ""
    assert annotation_marks("recon-1/labels/groundtruth/crop1/mito", [{}]) == "it lies under a labels/ group"
    assert annotation_marks("a/b", [{}, {"cellmap": {"annotation": {"name": "crop1"}}}]) \
        == "its .zattrs carry CellMap annotation attributes"


def test_a_relative_store_path_not_found_names_the_folder_it_is_relative_to(tmp_path, monkeypatch):
    """Relative datasplit paths are read from the current folder, which the error did not say
    (probe round 23, H48 note)."""
    from converters.cellmap.zarr_tree import CellMapFormatError, open_readonly

    monkeypatch.chdir(tmp_path)
    with pytest.raises(CellMapFormatError, match=rf"synth-1/synth-1\.zarr: no such folder \(relative to the current "
                                                 rf"folder {tmp_path}\)"):
        open_readonly("synth-1/synth-1.zarr")
    with pytest.raises(CellMapFormatError, match=r"none\.zarr: no such folder; check the path"):
        open_readonly(tmp_path / "none.zarr")
