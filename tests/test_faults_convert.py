"""Bad input and faults in the converters and the scorer (issue 12): nothing silently wrong, nothing lost.

Every test damages a *copy* of the built-in synthetic data (two crops of ``synth-1``), or kills or
starves a real converter process (:func:`faults.run_faulty`), and checks the outcome: the message
names the place and says what to do, the report counts, which files exist, and that a re-run gives
the same arrays as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from faults import ROOT, run_faulty

from converters.cellmap import zarr_tree as cz
from converters.cellmap.class_mapping import UNANNOTATED, cellmap_lookup
from converters.cellmap.convert import convert, main

CROP1 = "recon-1/labels/groundtruth/crop1"
EM = "recon-1/em/fibsem-uint8"
CLI = ["-m", "converters.cellmap.convert"]


def make_tree(synthetic: Path, dest: Path, crops: tuple[str, ...] = ("crop1", "crop2")) -> Path:
    """A copy of ``synth-1`` with a datasplit listing ``crops``; returns the datasplit path."""
    shutil.copytree(synthetic / "synth-1", dest / "synth-1")
    rows = [line.replace(str(synthetic), str(dest)) for line in (synthetic / "datasplit.csv").read_text().splitlines()
            if "synth-1.zarr" in line and any(f"/{c}/" in line for c in crops)]
    (dest / "datasplit.csv").write_text("\n".join(rows) + "\n")
    return dest / "datasplit.csv"


def store(datasplit: Path) -> Path:
    return datasplit.parent / "synth-1" / "synth-1.zarr"


def args(datasplit: Path, out: Path, *extra: str) -> list[str]:
    return [*CLI, "--datasplit", str(datasplit), "--output_dir", str(out), "--num_folds", "2", "--no_progress",
            *extra]


def crop(report: dict, name: str) -> dict:
    return next(r for r in report["crops"] if r["name"] == name)


def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def temporaries(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.name.startswith(".tmp-") or ".tmp-" in p.name)


@pytest.fixture(scope="module")
def reference(synthetic, tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted CLI run on the two-crop tree: (datasplit, output folder)."""
    base = tmp_path_factory.mktemp("ref")
    ds = make_tree(synthetic, base)
    proc = run_faulty(args(ds, base / "out"))
    assert proc.returncode == 0, proc.stderr
    return ds, base / "out"


def assert_same_outputs(out: Path, ref: Path) -> None:
    assert json.loads((out / "datalist.json").read_text()) == json.loads((ref / "datalist.json").read_text())
    assert json.loads((out / "datalist_items.json").read_text()) == json.loads(
        (ref / "datalist_items.json").read_text())
    files = sorted(p.relative_to(ref) for p in ref.rglob("*.nii.gz"))
    assert files and files == sorted(p.relative_to(out) for p in out.rglob("*.nii.gz"))
    for rel in files:
        (a, aff_a), (b, aff_b) = read(out / rel), read(ref / rel)
        assert np.array_equal(a, b) and np.array_equal(aff_a, aff_b), rel


# --------------------------------------------------------------------------------------
# 4. kill -9 at chosen points, then a re-run equals an uninterrupted run
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kill_at, when, nth", [
    ("synth-1_crop1.nii.gz", "before", 1),   # before crop1's image is renamed into place
    ("synth-1_crop1.nii.gz", "after", 2),    # right after crop1's label is
    ("datalist.json", "before", 1),          # everything written but the completion marker
])
def test_kill_then_rerun_equals_uninterrupted(reference, tmp_path, kill_at, when, nth):
    ds, ref = reference
    out = tmp_path / "out"
    user_file = out / "my_notes.tmp-123"            # looks a bit like a temporary: must survive
    out.mkdir()
    user_file.write_text("mine")
    killed = run_faulty(args(ds, out), kill_at=kill_at, when=when, nth=nth)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (out / "datalist.json").exists(), "a killed run must not leave a datalist that looks complete"
    if when == "before":
        assert temporaries(out), "the kill should have left our temporary behind"
    rerun = run_faulty(args(ds, out))
    assert rerun.returncode == 0, rerun.stderr
    assert_same_outputs(out, ref)
    assert [p for p in temporaries(out) if p != user_file] == []
    assert user_file.read_text() == "mine"


def test_reconversion_removes_the_completion_marker_first(reference, tmp_path):
    ds, ref = reference
    out = tmp_path / "out"
    shutil.copytree(ref, out)
    killed = run_faulty(args(ds, out, "--force"), kill_at="*.nii.gz", when="before")
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "datalist.json").exists()


# --------------------------------------------------------------------------------------
# 4. a failing write: one line naming the file, no datalist
# --------------------------------------------------------------------------------------
def test_failing_write_is_one_line_naming_the_file(reference, tmp_path):
    ds, _ = reference
    out = tmp_path / "out"
    proc = run_faulty(args(ds, out), max_file_bytes=20_000)      # the JSON files fit, a crop's image does not
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {out}/images/synth-1_crop") and ".nii.gz: File too large" in lines[0]
    assert "ulimit" in lines[0] and "--output_dir" in lines[0]
    assert not (out / "datalist.json").exists()
    assert temporaries(out) == []


def test_failing_write_in_a_worker_stops_the_batch(reference, tmp_path):
    ds, _ = reference
    out = tmp_path / "out"
    proc = run_faulty(args(ds, out, "--workers", "2"), max_file_bytes=20_000)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "File too large" in proc.stderr and f"{out}/images/" in proc.stderr
    assert not (out / "datalist.json").exists()


def test_output_inside_an_input_store_is_refused(reference, capsys):
    ds, _ = reference
    inside = store(ds) / "nifti"
    assert main(args(ds, inside)[2:]) == 2
    assert f"inside the input store {store(ds)}" in capsys.readouterr().err
    assert not inside.exists()


# --------------------------------------------------------------------------------------
# 5. pool workers die with a converter killed with SIGKILL
# --------------------------------------------------------------------------------------
WORKER_SCRIPT = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {root!r})
    from converters.pool import imap_pool

    def job(i):
        os.write(1, f"worker {{os.getpid()}}\\n".encode())  # one write: the two workers' lines never interleave
        time.sleep(120)

    if __name__ == "__main__":
        for _ in imap_pool(job, [0, 1], 2):
            pass
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_die_with_a_killed_converter(tmp_path):
    script = tmp_path / "pool_job.py"
    script.write_text(WORKER_SCRIPT.format(root=str(ROOT)))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(parent.stdout.readline().split()[1]) for _ in range(2)]
        assert all(_alive(p) for p in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.time() + 10
        while any(_alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "workers outlived the converter"
    finally:
        parent.kill()
        for p in locals().get("pids", []):
            if _alive(p):
                os.kill(p, signal.SIGKILL)


# --------------------------------------------------------------------------------------
# 1. unknown label values: counted, reported, written as not annotated
# --------------------------------------------------------------------------------------
def test_unknown_values_in_all_become_unannotated_and_are_reported(synthetic, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path)
    arr = zarr.open_array(str(store(ds) / CROP1 / "all/s0"), mode="r+")
    source = arr[:]
    source[0:4, 0:8, 0:8] = 255          # CellMap's unknown
    source[10, 10, 10:13] = 200          # no CellMap class at all
    arr[:] = source
    assert main(args(ds, tmp_path / "out")[2:]) == 0
    printed = capsys.readouterr()
    report = json.loads((tmp_path / "out/conversion_report.json").read_text())
    rec = crop(report, "synth-1_crop1")
    assert rec["unknown_label_values"] == {"200": 3, "255": 4 * 8 * 8}
    assert report["summary"]["crops_with_unknown_labels"] == 1
    assert report["summary"]["unannotated_voxels"] == 3 + 256
    assert "Unknown label values" in (tmp_path / "out/conversion_report.md").read_text()
    assert "synth-1_crop1: 259 voxels with label values that are no CellMap class (200: 3, 255: 256)" in printed.err
    label = np.asarray(nib.load(str(tmp_path / "out" / rec["items"][0]["label"])).dataobj).T  # z, y, x
    table = json.loads((tmp_path / "out/datalist.json").read_text())["class_table"]
    unknown = (source == 255) | (source == 200)
    assert np.all(label[unknown] == UNANNOTATED)
    assert np.array_equal(label[~unknown], cellmap_lookup(table)[source[~unknown]])
    assert "background" not in {r["name"] for r in table} and UNANNOTATED not in {r["id"] for r in table}


def test_ignore_value_is_the_bundles_ignore_value():
    from auto3dseg.engine.transforms import IGNORE_VALUE

    assert UNANNOTATED == IGNORE_VALUE


def test_declared_unknown_in_an_instance_array_is_not_the_class(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path, ("crop1",))
    crop_dir = store(ds) / CROP1
    shutil.rmtree(crop_dir / "all")
    group = zarr.open_group(str(crop_dir), mode="r+")
    block = (slice(0, 4), slice(0, 8), slice(0, 8))
    for name in group.group_keys():
        arr = group[name]["s0"]
        if arr.nchunks_initialized:
            data = arr[:]
            data[block] = 0
            arr[:] = data
    mito = group["mito"]
    attrs = mito.attrs.asdict()
    attrs["cellmap"]["annotation"]["annotation_type"]["encoding"] = {"absent": 0, "unknown": 255}
    mito.attrs.put(attrs)
    data = mito["s0"][:]
    data[block] = 255
    mito["s0"][:] = data
    report = convert(tmp_path / "out", cz.read_datasplit(ds), num_folds=1, progress=False)
    rec = crop(report, "synth-1_crop1")
    assert rec["verdict"] == "converted" and rec["unknown_label_values"] == {"255": 256}
    label = np.asarray(nib.load(str(tmp_path / "out" / rec["items"][0]["label"])).dataobj).T
    assert np.all(label[block] == UNANNOTATED)


# --------------------------------------------------------------------------------------
# 2. an unreadable EM level: named, and refused where the target needed it
# --------------------------------------------------------------------------------------
def test_missing_em_level_metadata_is_refused_or_named(synthetic, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path, ("crop1",))
    zarray = store(ds) / EM / "s0/.zarray"
    zarray.unlink()
    # 8 nm needs s0: refused (failed, exit 1), the message names the missing file and the ways out
    assert main(args(ds, tmp_path / "o8", "--num_folds", "1")[2:]) == 1
    rec = crop(json.loads((tmp_path / "o8/conversion_report.json").read_text()), "synth-1_crop1")
    assert rec["verdict"] == "failed" and rec["reason"] == "em_level_unreadable"
    assert f"{zarray} is missing" in rec["detail"] and "--scale s1" in rec["detail"]
    assert f"{zarray} is missing" in capsys.readouterr().out
    assert not list((tmp_path / "o8/images").iterdir())
    # 16 nm is honoured by s1: converted, with a printed warning naming what is missing
    assert main(args(ds, tmp_path / "o16", "--num_folds", "1", "--target_spacing", "16", "16", "16")[2:]) == 0
    rec = crop(json.loads((tmp_path / "o16/conversion_report.json").read_text()), "synth-1_crop1")
    assert rec["verdict"] == "converted" and rec["em_level"] == "s1"
    assert f"{zarray} is missing" in rec["em_levels_unreadable"]["s0"]
    assert f"warning: synth-1_crop1: EM level s0 not used: {zarray} is missing" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# 3. damaged chunks, attributes and datasplits name the place; 7. the batch goes on
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("array", [f"{EM}/s0", f"{CROP1}/all/s0"])
def test_corrupt_chunk_names_array_and_chunk_and_batch_goes_on(synthetic, tmp_path, capsys, array):
    ds = make_tree(synthetic, tmp_path)
    chunk = store(ds) / array / "0.0.0"        # read by crop1 (z, y, x voxels 16.., 20.., 20..), not by crop2
    chunk.write_bytes(b"\x02\x01garbage-not-blosc" * 4)
    assert main(args(ds, tmp_path / "out", "--num_folds", "1")[2:]) == 1
    report = json.loads((tmp_path / "out/conversion_report.json").read_text())
    rec = crop(report, "synth-1_crop1")
    assert rec["verdict"] == "failed"
    assert f"{store(ds)}/{array}: chunk 0.0.0 (block index (0, 0, 0))" in rec["detail"]
    assert f"its file {chunk} is damaged" in rec["detail"] and "download it again" in rec["detail"]
    assert crop(report, "synth-1_crop2")["verdict"] == "converted"
    assert (tmp_path / "out/datalist.json").exists()
    assert "chunk 0.0.0" in capsys.readouterr().out


def test_multiscales_with_wrong_axis_count_names_the_zattrs(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path)
    zattrs = store(ds) / CROP1 / "all/.zattrs"
    attrs = json.loads(zattrs.read_text())
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] = [8.0, 8.0]
    zattrs.write_text(json.dumps(attrs))
    report = convert(tmp_path / "out", cz.read_datasplit(ds), num_folds=1, progress=False)
    rec = crop(report, "synth-1_crop1")
    assert rec["verdict"] == "failed"
    assert str(zattrs) in rec["detail"] and "scale has 2 values" in rec["detail"]
    assert "IndexError" not in rec["detail"] and "broadcast" not in rec["detail"]
    assert crop(report, "synth-1_crop2")["verdict"] == "converted"


def _rewrite_axes(zattrs: Path, unit: str | None = None, order: str = "zyx", factor: float = 1.0) -> None:
    attrs = json.loads(zattrs.read_text())
    ms = attrs["multiscales"][0]
    ms["axes"] = [{"name": n, "type": "space", "unit": unit or "nanometer"} for n in order]
    for ds in ms["datasets"]:
        for tr in ds["coordinateTransformations"]:
            key = tr["type"]
            tr[key] = [v / factor for v in tr[key]]
    zattrs.write_text(json.dumps(attrs))


def test_axes_units_are_honoured_and_another_axis_order_refused(synthetic, reference, tmp_path):
    _, ref_out = reference
    # the same store written in micrometres converts to the same arrays and affines
    ds = make_tree(synthetic, tmp_path / "um")
    for zattrs in store(ds).glob("recon-1/**/.zattrs"):
        if "multiscales" in json.loads(zattrs.read_text()):
            _rewrite_axes(zattrs, unit="micrometer", factor=1000.0)
    report = convert(tmp_path / "um_out", cz.read_datasplit(ds), num_folds=2, progress=False)
    assert [c["verdict"] for c in report["crops"]] == ["converted", "converted"]
    for sub in ("images", "labels"):
        for want in sorted((ref_out / sub).glob("*.nii.gz")):
            got_arr, got_aff = read(tmp_path / "um_out" / sub / want.name)
            want_arr, want_aff = read(want)
            assert np.array_equal(got_arr, want_arr) and np.allclose(got_aff, want_aff)
    # axes x, y, z are not read as z, y, x: the crop fails naming the file
    ds = make_tree(synthetic, tmp_path / "xyz")
    zattrs = store(ds) / CROP1 / "all/.zattrs"
    _rewrite_axes(zattrs, order="xyz")
    report = convert(tmp_path / "xyz_out", cz.read_datasplit(ds), num_folds=1, progress=False)
    rec = crop(report, "synth-1_crop1")
    assert rec["verdict"] == "failed" and str(zattrs) in rec["detail"] and "order z, y, x" in rec["detail"]


def test_missing_em_zattrs_is_named(synthetic, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path, ("crop1",))
    zattrs = store(ds) / EM / ".zattrs"
    zattrs.unlink()
    with pytest.raises(cz.CellMapFormatError, match=f"{zattrs} is missing"):
        cz.find_em_group(str(store(ds)))
    assert main(["--data_root", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--num_folds", "1",
                 "--no_progress"]) == 1
    rec = crop(json.loads((tmp_path / "out/conversion_report.json").read_text()), "synth-1_crop1")
    assert rec["verdict"] == "failed" and f"{zattrs} is missing" in rec["detail"]
    assert "no EM group found" not in capsys.readouterr().out


@pytest.mark.parametrize("rows, line, what", [
    (["usage,raw zarr,raw dataset,gt zarr,gt dataset", "{good}"], 1, "a header row"),
    (["{good}", "train,{zarr},em,{zarr}"], 2, "4 column(s)"),
    (["{good}", "{good}", '"train,"oops'], 3, "not a CSV line"),
])
def test_bad_datasplit_row_gives_file_line_and_columns(reference, tmp_path, capsys, rows, line, what):
    ds, _ = reference
    good = ds.read_text().splitlines()[0]
    bad = tmp_path / "datasplit.csv"
    bad.write_text("\n".join(r.format(good=good, zarr=store(ds)) for r in rows) + "\n")
    assert main(["--datasplit", str(bad), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}:{line}: ") and what in err
    assert "expected 5 columns, no header row: usage (train/validate), raw zarr" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("row, what", [
    ("bad", "invalid literal for int()"),
    ("101,synth-1,mito,[8;8],[0;0;0],[4;4;4]", "need 3 values each"),
    ("101,synth-1,mito,[0;8;8],[0;0;0],[4;4;4]", "must be positive"),
])
def test_bad_test_manifest_row_gives_file_line(reference, synthetic, tmp_path, capsys, row, what):
    ds, _ = reference
    manifest = tmp_path / "test_crop_manifest.csv"
    header = (synthetic / "test_crop_manifest.csv").read_text().splitlines()[0]
    manifest.write_text(f"{header}\n{row}\n")
    assert main(["--datasplit", str(ds), "--test_manifest", str(manifest), "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {manifest}:2: cannot read this row") and what in err
    assert not (tmp_path / "out" / "datalist.json").exists()


def test_missing_store_names_the_folder(synthetic, tmp_path, capsys):
    # one readable dataset and one whose store is gone: its crops fail, named, and the rest converts
    ds = make_tree(synthetic, tmp_path)
    gone = tmp_path / "gone" / "synth-9.zarr"
    lines = ds.read_text().splitlines()
    ds.write_text("\n".join(lines + [lines[0].replace(str(store(ds)), str(gone))]) + "\n")
    main(args(ds, tmp_path / "out")[len(CLI):])
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    failed = [r for r in report["crops"] if r["verdict"] == "failed"]
    assert len(failed) == 1 and f"{gone}: no such folder" in failed[0]["detail"]
    assert (tmp_path / "out" / "datalist.json").exists()
    # every store gone: the error says so, not "nothing annotated"; a failure of the crops (1), as --help says
    shutil.move(str(store(ds)), str(tmp_path / "moved.zarr"))
    assert main(args(ds, tmp_path / "out2")[len(CLI):]) == 1
    err = capsys.readouterr().err
    assert "no crop could be read" in err and f"{store(ds)}: no such folder" in err


def test_non_finite_em_fails_the_crop_naming_it(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path)
    group = zarr.open_group(str(store(ds) / EM), mode="r+")
    for level in ("s0", "s1", "s2"):
        old = group[level]
        data = old[:].astype(np.float32)
        if level == "s0":
            data[20, 30, 30] = np.nan                   # inside crop1's region only
        group.create_dataset(level, data=data, chunks=old.chunks, overwrite=True)
    report = convert(tmp_path / "out", cz.read_datasplit(ds), num_folds=1, progress=False)
    rec = crop(report, "synth-1_crop1")
    assert rec["verdict"] == "failed"
    assert "synth-1_crop1: the EM array" in rec["detail"] and f"{store(ds)}/{EM}/s0" in rec["detail"]
    assert "non-finite (NaN/inf)" in rec["detail"]
    assert crop(report, "synth-1_crop2")["verdict"] == "converted"


def test_non_finite_cell_image_fails_that_image_only(tmp_path):
    import tifffile

    from converters.cells.convert import convert_cells

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for stem in ("a", "b"):
        image = rng.random((48, 48), dtype=np.float32) + 0.5
        if stem == "b":
            image[3, 4] = np.inf
        label = np.zeros((48, 48), np.uint16)
        label[10:20, 10:20] = 1
        tifffile.imwrite(tmp_path / "images" / f"{stem}.tif", image)
        tifffile.imwrite(tmp_path / "labels" / f"{stem}_label.tiff", label)
    report = convert_cells(tmp_path / "out", tmp_path / "images", tmp_path / "labels", num_folds=1, progress=False)
    by_stem = {r["stem"]: r for r in report["images"]}
    assert by_stem["a"]["verdict"] == "converted"
    assert by_stem["b"]["verdict"] == "failed" and by_stem["b"]["reason"] == "non_finite_pixels"
    assert f"{tmp_path / 'images' / 'b.tif'} has 1 non-finite (NaN/inf)" in by_stem["b"]["detail"]
    assert (tmp_path / "out/datalist.json").exists()


# --------------------------------------------------------------------------------------
# 6. scoring an instance truth with 255 (unknown)
# --------------------------------------------------------------------------------------
def _write_store(path: Path, labels: dict) -> Path:
    root = zarr.open_group(str(path), mode="w")
    for (crop_id, label), data in labels.items():
        arr = root.require_group(f"crop{crop_id}").create_dataset(label, data=data, chunks=data.shape)
        arr.attrs.put({"voxel_size": [8.0] * 3, "translation": [4.0] * 3, "shape": list(data.shape)})
    return path


def test_instance_truth_unknown_official_counts_it_strict_masks_it(tmp_path):
    """The official scorer (checked with its code at 6b9ad68 on this very case: tp 2, fn 1, F1 0.8)
    takes a 255 block of an instance truth as one more object; so under ``--rules official`` the
    score must equal that of the same truth with the block relabelled as an ordinary id 3 (no
    prediction has id 3 or 255, so the unmatched block is measured against nothing either way).
    Under ``--rules strict`` the block is masked: the score equals that of the truth without it.
    """
    from auto3dseg.evaluation.score import score_submission

    mito = np.zeros((10, 10, 10), np.uint8)
    mito[1:4, 1:4, 1:4] = 1
    mito[6:9, 1:4, 1:4] = 2
    unknown = np.zeros_like(mito, dtype=bool)
    unknown[1:4, 6:9, 6:9] = True
    er = np.zeros((10, 10, 10), np.uint8)
    er[:, :, :5] = 1
    truth_255, truth_3, truth_0 = (np.where(unknown, v, mito).astype(np.uint8) for v in (255, 3, 0))
    pred = truth_0.copy()
    pred_over = np.where(unknown, 7, pred).astype(np.uint8)   # a prediction covering the unknown block

    def run(truth, sub, rules):
        t = _write_store(tmp_path / f"t{id(truth)}.zarr", {(1, "mito"): truth, (1, "er"): er})
        s = _write_store(tmp_path / f"s{id(sub)}.zarr", {(1, "mito"): sub, (1, "er"): er})
        return score_submission(s, t, rules=rules, echo_warnings=False)

    official = run(truth_255, pred, "official")
    m = official["labels"]["mito"]
    assert (m["tp"], m["fp"], m["fn"]) == (2, 0, 1) and m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    assert official["overall"]["score"] == run(truth_3, pred, "official")["overall"]["score"]
    warn = [w for w in official["warnings"] if w["kind"] == "truth_unknown"]
    assert warn and warn[0]["label"] == "mito" and "27 truth voxels are 255" in warn[0]["message"]
    assert "one more true object" in warn[0]["message"]

    strict = run(truth_255, pred, "strict")
    assert strict["labels"]["mito"]["fn"] == 0
    assert strict["overall"]["score"] == run(truth_0, pred, "strict")["overall"]["score"]
    assert run(truth_255, pred_over, "strict")["labels"]["mito"]["fp"] == 0   # masked in the prediction too
    assert any(w["kind"] == "truth_unknown" and "masked" in w["message"] for w in strict["warnings"])
