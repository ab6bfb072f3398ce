"""Bad input in the CellMap converter, round 3 (issue 19): each case named, one crop's failure, clear exit codes.

Every test damages a *copy* of the built-in synthetic data (``synth-1``, sometimes ``synth-2``) or kills a
real pool worker, and checks what the user sees: the message, the report, the datalist and the exit code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from faults import run_faulty

from converters.cellmap import zarr_tree as cz
from converters.cellmap.convert import convert, main
from converters.pool import WorkerPoolBroken, imap_pool
from datalists.annotated import decode_annotated

EM = "recon-1/em/fibsem-uint8"
GT = "recon-1/labels/groundtruth"
CLI = ["-m", "converters.cellmap.convert"]


def make_tree(synthetic: Path, dest: Path, crops: tuple[str, ...] = ("crop1", "crop2"),
              datasets: tuple[str, ...] = ("synth-1",)) -> Path:
    """A copy of ``datasets`` with a datasplit listing ``crops`` of them; returns the datasplit path."""
    for ds in datasets:
        shutil.copytree(synthetic / ds, dest / ds)
    rows = [line.replace(str(synthetic), str(dest)) for line in (synthetic / "datasplit.csv").read_text().splitlines()
            if any(f"{ds}.zarr" in line for ds in datasets) and any(f"/{c}/" in line for c in crops)]
    (dest / "datasplit.csv").write_text("\n".join(rows) + "\n")
    return dest / "datasplit.csv"


def store(datasplit: Path, dataset: str = "synth-1") -> Path:
    return datasplit.parent / dataset / f"{dataset}.zarr"


def cli(datasplit: Path, out: Path, *extra: str) -> list[str]:
    return ["--datasplit", str(datasplit), "--output_dir", str(out), "--num_folds", "1", "--no_progress", *extra]


def crop(report: dict, name: str) -> dict:
    return next(r for r in report["crops"] if r["name"] == name)


def items_of(out: Path, name: str) -> list[dict]:
    meta = json.loads((out / "datalist_items.json").read_text())
    return [m for image, m in meta.items() if Path(image).name.startswith(name)]


def cut_list(datasplit: Path, crop_name: str, drop: set[str]) -> None:
    """Remove ``drop`` from the class list of ``crop_name``'s datasplit row."""
    lines = []
    for line in datasplit.read_text().splitlines():
        if f"/{crop_name}/[" in line:
            head, classes = line.rsplit("[", 1)
            kept = [c for c in classes.rstrip('"]').split(",") if c not in drop]
            line = f'{head}[{",".join(kept)}]"'
        lines.append(line)
    datasplit.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------
# 1. the class list of datasplit.csv is honoured; a typo there is a file:line error
# --------------------------------------------------------------------------------------
def test_cut_class_list_annotates_fewer_classes_never_background(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path / "full")
    full = convert(tmp_path / "o_full", cz.read_datasplit(ds), num_folds=1, progress=False)
    mito = {"mito", "mito_mem", "mito_lum"}
    assert mito <= set(crop(full, "synth-1_crop1")["annotated"])

    cut_list(ds, "crop1", mito)
    cut = convert(tmp_path / "o_cut", cz.read_datasplit(ds), num_folds=1, progress=False)
    rec = crop(cut, "synth-1_crop1")
    assert rec["verdict"] == "converted"
    assert not mito & set(rec["annotated"])
    assert {rec["not_annotated"][n] for n in mito} == {cz.NOT_LISTED}
    assert set(rec["annotated"]) == set(crop(full, "synth-1_crop1")["annotated"]) - mito
    # crop2 still lists mito, so it stays a class; crop1's items no longer claim it
    datalist = json.loads((tmp_path / "o_cut/datalist.json").read_text())
    ids = {r["name"]: r["id"] for r in datalist["class_table"]}
    assert mito <= set(ids)
    (meta,) = items_of(tmp_path / "o_cut", "synth-1_crop1")
    assert not mito & set(meta["annotated_names"])
    train = next(t for t in datalist["training"] if Path(t["image"]).name.startswith("synth-1_crop1"))
    assert not {ids[n] for n in mito} & set(decode_annotated(train["annotated_mask"]))
    # the mito voxels are not made background: they keep their class (left out of crop1's annotated set)
    source = zarr.open_group(str(store(ds)), mode="r")[f"{GT}/crop1/all/s0"][:]
    label = np.asarray(nib.load(tmp_path / "o_cut" / meta_label(tmp_path / "o_cut", "synth-1_crop1")).dataobj).T
    mito_voxels = np.isin(source, [3, 4, 5, 50])
    assert mito_voxels.any() and not (label[mito_voxels] == 0).any()
    # the same output folder: a resumed crop1 would keep the old annotated set, so it is converted again
    again = convert(tmp_path / "o_full", cz.read_datasplit(ds), num_folds=1, progress=False)
    assert not crop(again, "synth-1_crop1").get("resumed")
    assert not mito & set(crop(again, "synth-1_crop1")["annotated"])


def meta_label(out: Path, name: str) -> str:
    datalist = json.loads((out / "datalist.json").read_text())
    return next(t["label"] for t in datalist["training"] if Path(t["image"]).name.startswith(name))


def test_listed_class_the_crop_lacks_is_a_note(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path, ("crop2",))
    ds.write_text(ds.read_text().replace("[er,", "[nuc,er,"))
    report = convert(tmp_path / "o", cz.read_datasplit(ds), num_folds=1, progress=False)
    rec = crop(report, "synth-1_crop2")
    assert rec["verdict"] == "converted" and "nuc" not in rec["annotated"]
    assert any(f"{ds}:1 lists nuc, which this crop has no array for" in w for w in rec["warnings"])


def test_unknown_class_in_datasplit_is_a_file_line_error(synthetic, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path)
    lines = ds.read_text().splitlines()
    lines[1] = lines[1].replace("[er,", "[mitoo,er,")
    ds.write_text("\n".join(lines) + "\n")
    assert main(cli(ds, tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ds}:2: unknown class 'mitoo'") and "closest known: mito" in err
    assert "\n" not in err and not (tmp_path / "o").exists()


# --------------------------------------------------------------------------------------
# 2. a pool worker killed (as the out-of-memory killer would): cause, fix, no datalist
# --------------------------------------------------------------------------------------
def _die_on_one(job: int) -> int:
    """A job that kills its own worker process for job 1 (module level: the spawned workers import it)."""
    if job == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return job * 10


def test_pool_raises_worker_pool_broken_naming_cause_and_fix():
    done = []
    with pytest.raises(WorkerPoolBroken) as info:
        for job, result, exc in imap_pool(_die_on_one, [0, 1, 2, 3], 2):
            assert exc is None and result == job * 10  # never a job failing with a bare BrokenProcessPool
            done.append(job)
    msg = str(info.value)
    assert "killed" in msg and "out-of-memory" in msg and "--workers 1" in msg and "resumed" in msg
    assert "ended by SIGKILL" in msg
    assert 1 in info.value.unfinished
    assert sorted(done + info.value.unfinished) == [0, 1, 2, 3]


def test_killed_worker_writes_no_datalist_and_rerun_resumes(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path, ("crop1", "crop2", "crop3"))
    out = tmp_path / "out"
    # the worker converting crop2 kills itself (SIGKILL) as it renames crop2's image into place
    proc = run_faulty([*CLI, *cli(ds, out, "--workers", "2")], kill_at="synth-1_crop2.nii.gz")
    assert proc.returncode == 1, proc.stderr
    (err,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert err.startswith("error: a worker process was killed") and "out-of-memory" in err
    assert "--workers 1" in err and "synth-1_crop2" in err and "no datalist was written" in err
    assert "BrokenProcessPool" not in proc.stdout + proc.stderr
    assert not (out / "datalist.json").exists()
    rerun = run_faulty([*CLI, *cli(ds, out, "--workers", "2")])
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["summary"]["converted"] == 3 and (out / "datalist.json").exists()


def test_a_reconversion_with_other_crops_keeps_the_previous_datalist(synthetic, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path, ("crop1", "crop2"))
    out = tmp_path / "out"
    assert main(cli(ds, out)) == 0
    first = json.loads((out / "datalist.json").read_text())
    assert main(cli(ds, out)) == 0  # the same again (resumed): nothing kept aside
    assert not (out / "replaced").exists() and not (out / ".previous-datalist").exists()
    capsys.readouterr()
    ds.write_text("".join(line + "\n" for line in ds.read_text().splitlines() if "/crop2/" not in line))
    assert main(cli(ds, out)) == 0
    (kept,) = (out / "replaced").glob("datalist-*")
    assert json.loads((kept / "datalist.json").read_text()) == first and (kept / "datalist_items.json").is_file()
    assert len(json.loads((out / "datalist.json").read_text())["training"]) < len(first["training"])
    said = capsys.readouterr().out
    assert str(kept) in said and "other values of " in said and "training (" in said, said  # what differs
    # a hand edit that gives a key twice: kept aside too, and the key is named (probe A1e)
    text = (out / "datalist.json").read_text()
    (out / "datalist.json").write_text(text.replace('"num_folds":', '"num_folds": 9, "num_folds":', 1))
    assert main(cli(ds, out)) == 0
    said = capsys.readouterr().out
    assert "key 'num_folds' given twice in the top level (values 9 and" in said, said
    assert len(list((out / "replaced").glob("datalist-*"))) == 2


# --------------------------------------------------------------------------------------
# 3. a float label array fails its crop, naming the array, its dtype and the fix
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("values", ["integral", "fractional"])
def test_float_label_array_fails_its_crop_naming_dtype(synthetic, tmp_path, values, capsys):
    ds = make_tree(synthetic, tmp_path)
    group = zarr.open_group(str(store(ds) / GT / "crop1/all"), mode="r+")
    old = group["s0"]
    data = old[:].astype(np.float32) + (0.5 if values == "fractional" else 0.0)
    group.create_dataset("s0", data=data, chunks=old.chunks, overwrite=True)
    # the dry run, which reads the same header, planned the crop as converting, and exited 0 where the
    # run exits 1 (probe C15, twice)
    assert main(cli(ds, tmp_path / "plan", "--dry_run")) == 1
    out, err = capsys.readouterr()
    planned = {r["name"]: r for r in json.loads(out)["crops"]}
    assert "label array of dtype float32" in planned["synth-1_crop1"]["error"] and not planned["synth-1_crop1"]["tiles"]
    assert "error: 1 crop(s) would fail (synth-1_crop1;" in err and "exit 1" in err, err
    assert planned["synth-1_crop2"]["tiles"]
    assert main(cli(ds, tmp_path / "o")) == 1
    err = capsys.readouterr().err.strip()  # the run's last line says it failed, as the cells converter's does
    assert err.splitlines()[-1].startswith("error: 1 crop(s) failed (synth-1_crop1; why is above)"), err
    report = json.loads((tmp_path / "o/conversion_report.json").read_text())
    rec = crop(report, "synth-1_crop1")
    assert rec["verdict"] == "failed"
    assert f"{store(ds)}/{GT}/crop1/all/s0: label array of dtype float32" in rec["detail"]
    assert "integer class ids" in rec["detail"] and "astype" in rec["detail"]
    assert "IndexError" not in rec["detail"]
    assert crop(report, "synth-1_crop2")["verdict"] == "converted"
    assert (tmp_path / "o/datalist.json").exists()


# --------------------------------------------------------------------------------------
# 4. a missing EM .zattrs with --test_manifest fails those crops only
# --------------------------------------------------------------------------------------
def test_missing_em_zattrs_with_test_manifest_fails_only_its_crops(synthetic, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path, ("crop1", "crop6"), ("synth-1", "synth-2"))
    manifest = tmp_path / "test_crop_manifest.csv"
    shutil.copy(synthetic / "test_crop_manifest.csv", manifest)
    zattrs = store(ds) / EM / ".zattrs"
    zattrs.unlink()
    rc = main(cli(ds, tmp_path / "o", "--test_manifest", str(manifest)))
    assert rc == 1
    report = json.loads((tmp_path / "o/conversion_report.json").read_text())
    for name in ("synth-1_crop1", "synth-1_crop101"):
        rec = crop(report, name)
        assert rec["verdict"] == "failed" and f"{zattrs} is missing" in rec["detail"], rec
    assert crop(report, "synth-2_crop6")["verdict"] == "converted"
    assert crop(report, "synth-2_crop102")["verdict"] == "converted"
    datalist = json.loads((tmp_path / "o/datalist.json").read_text())
    assert [t["image"] for t in datalist["testing"]] == ["images/synth-2_crop102.nii.gz"]
    printed = capsys.readouterr().out
    assert "synth-1_crop101: failed" in printed and "synth-1_crop1: failed" in printed


# --------------------------------------------------------------------------------------
# 5. exit codes: one rule, stated in --help
# --------------------------------------------------------------------------------------
def test_help_states_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 when every crop was converted, resumed, or skipped" in text
    assert "1 when some or every crop failed" in text and "worker process was killed" in text
    assert "2 for usage errors" in text and "full disk" in text


def test_nothing_annotated_skip_exits_0(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path, ("crop1", "crop5"), ("synth-1", "synth-2"))
    assert main(cli(ds, tmp_path / "o")) == 0
    report = json.loads((tmp_path / "o/conversion_report.json").read_text())
    assert crop(report, "synth-2_crop5")["verdict"] == "skipped"


# --------------------------------------------------------------------------------------
# 6. blank EM: a training crop fails (nothing to learn), a test crop converts with a note
# --------------------------------------------------------------------------------------
def test_blank_em_fails_training_crop_and_test_crop_converts_with_a_note(synthetic, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path, ("crop1", "crop6"), ("synth-1", "synth-2"))
    manifest = tmp_path / "test_crop_manifest.csv"
    shutil.copy(synthetic / "test_crop_manifest.csv", manifest)
    group = zarr.open_group(str(store(ds) / EM), mode="r+")
    for level in group.array_keys():
        group[level][...] = 0  # every chunk written, all zero
    assert main(cli(ds, tmp_path / "o", "--test_manifest", str(manifest))) == 1
    report = json.loads((tmp_path / "o/conversion_report.json").read_text())
    rec = crop(report, "synth-1_crop1")
    assert (rec["verdict"], rec["reason"]) == ("failed", "constant_image")
    assert "its EM" in rec["detail"] and "value 0 everywhere" in rec["detail"] and "nothing to learn" in rec["detail"]
    assert not list((tmp_path / "o/images").glob("synth-1_crop1.*")) + list((tmp_path / "o/images").glob(
        "synth-1_crop1_t*"))
    test = crop(report, "synth-1_crop101")
    assert test["verdict"] == "converted" and (tmp_path / "o/images/synth-1_crop101.nii.gz").exists()
    assert any("value 0 everywhere" in w and "converted anyway" in w for w in test["warnings"])
    captured = capsys.readouterr()
    assert "synth-1_crop1: failed (constant_image)" in captured.out
    assert "synth-1_crop101: test crop converted although its EM is constant" in captured.err
    datalist = json.loads((tmp_path / "o/datalist.json").read_text())
    assert not any("synth-1_crop1" in t["image"] for t in datalist["training"])


# --------------------------------------------------------------------------------------
# 7. round 4: EM levels whose declared scales disagree with their shapes, a crop listed twice
#    (or as a training and a test crop), flags too small to mean anything, damaged label metadata
# --------------------------------------------------------------------------------------
def _edit_multiscales(group: Path, edit) -> None:
    """Apply ``edit`` to the ``multiscales`` datasets list of the group's ``.zattrs`` (NaN allowed)."""
    attrs = json.loads((group / ".zattrs").read_text())
    edit(attrs["multiscales"][0]["datasets"])
    (group / ".zattrs").write_text(json.dumps(attrs))


def test_em_level_whose_scale_disagrees_with_its_shape_fails_its_crops(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path, ("crop1", "crop6"), ("synth-1", "synth-2"))
    em = store(ds) / EM
    # s0 says 4 nm, s1 16 nm, but s0's shape is only 2x s1's: one of them is wrong
    _edit_multiscales(em, lambda d: d[0]["coordinateTransformations"][0].update(scale=[4.0, 4.0, 4.0]))
    assert main(cli(ds, tmp_path / "o")) == 1
    report = json.loads((tmp_path / "o/conversion_report.json").read_text())
    rec = crop(report, "synth-1_crop1")
    assert rec["verdict"] == "failed" and not rec["items"], rec
    detail = rec["detail"]
    assert f"{em}: the levels of this multiscale group disagree" in detail
    assert "s0 (scale [4, 4, 4] nm, shape [64, 160, 160]" in detail
    assert "s1 (scale [16, 16, 16] nm, shape [32, 80, 80]" in detail
    assert "differ 4x, 4x, 4x but their shapes 2x, 2x, 2x" in detail and "fix that level's scale" in detail
    assert crop(report, "synth-2_crop6")["verdict"] == "converted"  # its EM group is consistent


def test_test_manifest_listing_a_training_crop_is_refused(synthetic, tmp_path, capsys):
    ds = make_tree(synthetic, tmp_path)
    manifest = tmp_path / "test_crop_manifest.csv"
    rows = [r for r in (synthetic / "test_crop_manifest.csv").read_text().splitlines() if "synth-2" not in r]
    rows.append("1,synth-1,mito,[8.0;8.0;8.0],[128.0;160.0;160.0],[32;64;64]")
    manifest.write_text("\n".join(rows) + "\n")
    assert main(cli(ds, tmp_path / "o", "--test_manifest", str(manifest))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {manifest}:{len(rows)}: test crop synth-1_crop1 is also a training crop ({ds}:1)")
    assert "remove it from the test manifest or from the datasplit" in err
    assert not (tmp_path / "o").exists()
    tests = cz.read_test_manifest(manifest, {"synth-1": str(store(ds))})
    with pytest.raises(ValueError, match="synth-1_crop1 is also a training crop"):  # the library refuses too
        convert(tmp_path / "o2", cz.read_datasplit(ds), tests, num_folds=1, progress=False)


@pytest.mark.parametrize("where", ["datasplit", "manifest"])
def test_a_row_listed_twice_is_refused_naming_both_lines(synthetic, tmp_path, capsys, where):
    ds = make_tree(synthetic, tmp_path)
    manifest = tmp_path / "test_crop_manifest.csv"
    manifest.write_text("".join(r + "\n" for r in (synthetic / "test_crop_manifest.csv").read_text().splitlines()
                                if "synth-2" not in r))
    target = ds if where == "datasplit" else manifest
    lines = target.read_text().splitlines()
    repeated = lines[0] if where == "datasplit" else lines[1]
    target.write_text("\n".join(lines + [repeated]) + "\n")
    assert main(cli(ds, tmp_path / "o", "--test_manifest", str(manifest))) == 2
    err = capsys.readouterr().err.strip()
    n = len(lines) + 1
    if where == "datasplit":
        assert err.startswith(f"error: {ds}:{n}: crop 1 of dataset synth-1 (synth-1_crop1) is listed again "
                              f"(first at {ds}:1)")
    else:
        assert err.startswith(f"error: {manifest}:{n}: test crop 101 of dataset synth-1, label 'mito', is listed "
                              "again (first at line 2)")
    assert "remove one of the two rows" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("usage, says", [
    ("test", "list held-out test crops in a --test_manifest"), ("val", "did you mean validate?"),
    ("banana", "give train or validate")])
def test_a_datasplit_usage_other_than_train_or_validate_is_refused(synthetic, tmp_path, capsys, usage, says):
    """Any usage became a training item in fold 0: a crop marked 'test' to hold it out was trained on
    (probe round 23, H50)."""
    ds = make_tree(synthetic, tmp_path)
    lines = ds.read_text().splitlines()
    first = lines[1].split(",", 1)[0]
    lines[1] = lines[1].replace(first, f'"{usage}"' if first.startswith('"') else usage, 1)
    ds.write_text("\n".join(lines) + "\n")
    assert main(cli(ds, tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {ds}:2: usage {usage!r} is not train or validate") and says in err, err
    assert not (tmp_path / "o").exists()
    lines[1] = lines[1].replace(usage, "Train", 1)  # the toolbox's words in another case are read
    ds.write_text("\n".join(lines) + "\n")
    assert "Train" in {c.usage for c in cz.read_datasplit(ds)}


@pytest.mark.parametrize("flag,value,says", [
    ("--max_voxels", "1", "too small to train on"), ("--max_voxels", "0", "at least 4096"),
    ("--max_voxels", "4095", "at least 4096"), ("--max_crops", "0", "must be at least 1"),
    ("--max_crops", "-2", "must be at least 1")])
def test_flag_values_too_small_are_usage_errors(synthetic, tmp_path, capsys, flag, value, says):
    # a coarse, dry run: without the check it finishes quickly (rather than writing thousands of one-voxel tiles)
    quick = ("--target_spacing", "64", "64", "64", "--max_crops", "1", "--dry_run")
    with pytest.raises(SystemExit) as exc:
        main(cli(synthetic / "datasplit.csv", tmp_path / "o", *quick, flag, value))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and value in err and says in err
    assert not (tmp_path / "o").exists()


def test_max_voxels_too_small_is_refused_by_the_library(synthetic, tmp_path):
    with pytest.raises(ValueError, match="--max_voxels 1: tiles of fewer than 4096 voxels"):
        convert(tmp_path / "o", cz.read_datasplit(synthetic / "datasplit.csv")[:1], num_folds=1, max_voxels=1,
                target_spacing=(64.0, 64.0, 64.0), progress=False)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("level", ["s9", "foo"])
def test_scale_no_em_group_has_is_a_usage_error_naming_the_levels(synthetic, tmp_path, capsys, level):
    assert main(cli(synthetic / "datasplit.csv", tmp_path / "o", "--scale", level)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --scale {level}: no EM group has a level named '{level}'")
    assert "the levels there are s0, s1, s2 in" in err and "--scale auto" in err
    assert not (tmp_path / "o").exists()


def test_scale_one_dataset_lacks_skips_its_crops_saying_so(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path, ("crop1", "crop6"), ("synth-1", "synth-2"))
    em2 = store(ds, "synth-2") / EM
    _edit_multiscales(em2, lambda d: d.pop(1))  # synth-2 lists s0 and s2 only
    report = convert(tmp_path / "o", cz.read_datasplit(ds), num_folds=1, scale="s1", progress=False)
    assert crop(report, "synth-1_crop1")["em_level"] == "s1"
    rec = crop(report, "synth-2_crop6")
    assert rec["verdict"] == "skipped"
    assert rec["detail"].startswith(f"--scale s1: the EM group {em2} has no level 's1' (its levels: s0, s2)")


def _zero_size(group: Path) -> None:
    g = zarr.open_group(str(group), mode="r+")
    g.create_dataset("s0", shape=(0, 64, 64), dtype=g["s0"].dtype, chunks=(32, 32, 32), overwrite=True)


def _mito_narrower(crop_group: Path) -> None:
    g = zarr.open_group(str(crop_group / "mito"), mode="r+")
    g.create_dataset("s0", data=g["s0"][:, :32, :], chunks=(32, 32, 32), overwrite=True)
    shutil.rmtree(crop_group / "all")  # labels are then composed from the class arrays


def _scale(value: list[float]):
    return lambda group: _edit_multiscales(group, lambda d: d[0]["coordinateTransformations"][0].update(scale=value))


def _translation(value: list[float]):
    return lambda group: _edit_multiscales(
        group, lambda d: d[0]["coordinateTransformations"][1].update(translation=value))


def _all_halved(crop_group: Path) -> None:
    g = zarr.open_group(str(crop_group / "all"), mode="r+")
    g.create_dataset("s0", data=g["s0"][::2, ::2, ::2], chunks=(32, 32, 32), overwrite=True)


def _no_s0(crop_group: Path) -> None:
    shutil.rmtree(crop_group / "mito" / "s0")  # multiscales still lists it: an incomplete download


@pytest.mark.parametrize("damage,array,says", [
    (_zero_size, "all/s0", "the label array has shape (0, 64, 64), i.e. no voxels"),
    (_no_s0, "mito/s0", "the multiscales attribute lists this level but there is no such array"),
    (_mito_narrower, "mito/s0", "this class array (shape [32, 32, 64], scale [8, 8, 8] nm"),
    (_scale([-8.0, 8.0, 8.0]), "all/.zattrs", "scale [-8.0, 8.0, 8.0]"),
    (_translation([float("nan"), 160.0, 160.0]), "all/.zattrs", "translation [nan, 160.0, 160.0]"),
    # `all` alone was trusted for the crop's grid: labels laid over the wrong EM, exit 0 (probe C11, C12)
    (_all_halved, "all", "the crop's 'all' array (shape [16, 32, 32], scale [8, 8, 8] nm"),
    (_scale([4.0, 4.0, 4.0]), "all", "is not on the grid of any of its"),
], ids=["zero_size", "level_missing", "class_arrays_on_other_grids", "negative_scale", "nan_translation",
        "all_halved", "all_rescaled"])
def test_damaged_label_array_fails_its_crop_naming_the_array(synthetic, tmp_path, damage, array, says):
    ds = make_tree(synthetic, tmp_path)
    crop_group = store(ds) / GT / "crop1"
    damage(crop_group if damage in (_mito_narrower, _no_s0, _all_halved) else crop_group / "all")
    assert main(cli(ds, tmp_path / "o")) == 1
    report = json.loads((tmp_path / "o/conversion_report.json").read_text())
    rec = crop(report, "synth-1_crop1")
    assert rec["verdict"] == "failed" and not rec["items"], rec
    assert f"{crop_group}/{array}: " in rec["detail"] and says in rec["detail"], rec["detail"]
    for bad in ("zero-size array", "could not be broadcast", "cannot convert float NaN", "ValueError: voxel size"):
        assert bad not in rec["detail"]
    assert crop(report, "synth-1_crop2")["verdict"] == "converted"


def test_a_class_array_off_the_grid_of_all_is_named_and_all_is_used(synthetic, tmp_path):
    """One class array's scale contradicting `all` (and every other array) was ignored without a word."""
    ds = make_tree(synthetic, tmp_path, ("crop1",))
    crop_group = store(ds) / GT / "crop1"
    intact = convert(tmp_path / "ref", cz.read_datasplit(ds), num_folds=1, progress=False)
    _scale([16.0, 16.0, 16.0])(crop_group / "er")
    report = convert(tmp_path / "o", cz.read_datasplit(ds), num_folds=1, progress=False)
    rec = crop(report, "synth-1_crop1")
    assert rec["verdict"] == "converted", rec
    assert any(f"{crop_group}/er/s0: this class array (shape" in w and "scale [16, 16, 16] nm" in w
               and "the labels are read from 'all'" in w for w in rec["warnings"]), rec["warnings"]
    assert rec["class_voxels"] == crop(intact, "synth-1_crop1")["class_voxels"]


def test_em_too_coarse_message_prints_plain_numbers(synthetic, tmp_path):
    ds = make_tree(synthetic, tmp_path, ("crop1",))
    report = convert(tmp_path / "o", cz.read_datasplit(ds), num_folds=1, target_spacing=(4.0, 4.0, 4.0),
                     max_em_upsample=1.5, progress=False)
    rec = crop(report, "synth-1_crop1")
    assert rec["reason"] == "em_too_coarse"
    assert "s0 at [8, 8, 8] nm, 2x coarser than the target [4, 4, 4] nm" in rec["detail"]
    assert "np.float64" not in rec["detail"]


def test_dry_run_shows_the_em_skip_the_run_makes(synthetic, tmp_path, capsys):
    """--dry_run planned folds and tiles for a crop whose EM is too coarse; the run then skipped it
    (an empty datalist, exit 1)."""
    ds = make_tree(synthetic, tmp_path)
    coarse = ("--target_spacing", "4", "4", "4", "--max_em_upsample", "1.5")
    assert main(cli(ds, tmp_path / "o", *coarse, "--dry_run")) == 1  # as the run ends
    out, err = capsys.readouterr()
    plan = {r["name"]: r for r in json.loads(out)["crops"]}
    assert not plan["synth-1_crop1"]["tiles"] and "skipped (em_too_coarse): the finest EM" in plan["synth-1_crop1"]["error"]
    assert "synth-1_crop1: would not convert (skipped (em_too_coarse): the finest EM with data here is s0" in err
    assert "no crop would convert" in err and not (tmp_path / "o").exists()
    assert "error: no crop would convert" in err
    assert main(cli(ds, tmp_path / "o", *coarse)) == 1
    assert crop(json.loads((tmp_path / "o/conversion_report.json").read_text()), "synth-1_crop1")["reason"] == \
        "em_too_coarse"
    assert main(cli(ds, tmp_path / "p", "--dry_run")) == 0  # a crop that converts names its EM level
    assert "synth-1_crop1: 1 tile(s) of 32 x 64 x 64 from EM s0" in capsys.readouterr().err


def test_a_label_array_that_is_no_cellmap_class_is_named(synthetic, tmp_path, capsys):
    """An array named `mitochondria` beside the class arrays was dropped without a word."""
    ds = make_tree(synthetic, tmp_path)
    crop_group = store(ds) / GT / "crop1"
    shutil.copytree(crop_group / "mito", crop_group / "mitochondria")
    assert main(cli(ds, tmp_path / "o")) == 0
    err = capsys.readouterr().err
    assert "synth-1_crop1: label array 'mitochondria' is no CellMap class: not converted (did you mean mito" in err, err
    report = json.loads((tmp_path / "o/conversion_report.json").read_text())
    assert crop(report, "synth-1_crop1")["foreign_arrays"] == ["mitochondria"]
    assert crop(report, "synth-1_crop2")["foreign_arrays"] == []


def test_csv_files_saved_by_excel_with_a_byte_order_mark_are_read(synthetic, tmp_path):
    """A test_crop_manifest.csv saved as Excel's "CSV UTF-8" (a BOM, CRLF) was refused with
    columns ['\\ufeffcrop_name', ...]: the same rows as the plain file, for both CSV files."""
    for name, read in (("test_crop_manifest.csv", cz.read_test_manifest_rows), ("datasplit.csv", cz.read_datasplit)):
        text = (synthetic / name).read_text()
        bom = tmp_path / name
        bom.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
        got, want = read(bom), read(synthetic / name)
        if name == "datasplit.csv":  # each crop names its file and line
            got, want = ([dataclasses.replace(c, listed_at="") for c in crops] for crops in (got, want))
        assert got == want and got


# --------------------------------------------------------------------------------------
# label chunks missing from the store (an interrupted download): never background
# --------------------------------------------------------------------------------------
def _drop_chunk(array: Path, key: str = "0.1.1") -> None:
    assert (array / key).is_file(), f"{array} has no chunk {key}"
    (array / key).unlink()


def _labels(out: Path, name: str) -> np.ndarray:
    return np.concatenate([np.asarray(nib.load(out / it["label"]).dataobj).ravel()
                           for it in json.loads((out / "datalist.json").read_text())["training"]
                           if Path(it["label"]).name.startswith(name)])


def test_label_chunks_missing_against_complement_counts_fail_the_crop(synthetic, tmp_path):
    """One chunk gone from every label array of crop1: it read as background (a quarter of the crop,
    mito_mem 5572 -> 568 voxels), exit 0. The arrays' complement_counts show the damage."""
    ds = make_tree(synthetic, tmp_path)
    crop_group = store(ds) / GT / "crop1"
    for array in sorted(crop_group.glob("*/s0")):
        if any(p.name[0].isdigit() for p in array.iterdir()):
            _drop_chunk(array)
    assert main(cli(ds, tmp_path / "o")) == 1
    rec = crop(json.loads((tmp_path / "o/conversion_report.json").read_text()), "synth-1_crop1")
    assert rec["verdict"] == "failed" and not rec["items"], rec
    assert "chunk(s) are not on disk (0.1.1)" in rec["detail"] and "complement_counts (absent:" in rec["detail"]
    assert "Fetch this crop again" in rec["detail"] and f"{crop_group}/" in rec["detail"]


def test_chunks_missing_from_all_only_are_read_from_the_class_arrays(synthetic, tmp_path):
    """`all` lacks a chunk, the class arrays are whole: the labels are those of the intact crop."""
    ds = make_tree(synthetic, tmp_path, crops=("crop1",))
    assert main(cli(ds, tmp_path / "whole")) == 0
    _drop_chunk(store(ds) / GT / "crop1" / "all" / "s0")
    assert main(cli(ds, tmp_path / "o")) == 0
    rec = crop(json.loads((tmp_path / "o/conversion_report.json").read_text()), "synth-1_crop1")
    assert any("lacks 1 of" in w and "per-class arrays" in w for w in rec["warnings"]), rec["warnings"]
    assert np.array_equal(_labels(tmp_path / "o", "synth-1_crop1"), _labels(tmp_path / "whole", "synth-1_crop1"))


def test_label_chunks_missing_without_counts_are_a_note(synthetic, tmp_path):
    """No complement_counts to check against (missing chunks are valid sparse Zarr): converted, with a note."""
    ds = make_tree(synthetic, tmp_path, crops=("crop1",))
    mito = store(ds) / GT / "crop1" / "mito" / "s0"
    attrs = json.loads((mito / ".zattrs").read_text())
    del attrs["cellmap"]["annotation"]["complement_counts"]
    (mito / ".zattrs").write_text(json.dumps(attrs))
    _drop_chunk(mito)
    assert main(cli(ds, tmp_path / "o")) == 0
    report = json.loads((tmp_path / "o/conversion_report.json").read_text())
    text = json.dumps(report)
    assert "mito/s0: 1 of" in text and "no complement_counts to check them against" in text, text[:2000]


def test_chunk_helpers_examples_hold():
    import doctest

    from converters.cellmap import chunks

    result = doctest.testmod(chunks)
    assert result.attempted >= 5 and result.failed == 0


def test_datasplit_and_data_root_together_say_which_crops_convert(synthetic, tmp_path, capsys):
    """Both given: only the datasplit's crops converted, without a word (the help said every crop under
    --data_root)."""
    ds = make_tree(synthetic, tmp_path, ("crop1",))
    assert main(cli(ds, tmp_path / "o", "--data_root", str(tmp_path), "--dry_run")) == 0
    err = capsys.readouterr().err
    assert "note: --datasplit" in err and "lists the crops converted" in err and "synth-1_crop2" not in err


def test_when_every_crop_fails_no_datalist_claims_a_finished_conversion(synthetic, tmp_path, capsys):
    """Every crop failed, yet datalist.json (the completion marker) was written with no training item
    and num_folds 0 (probe C14)."""
    ds = make_tree(synthetic, tmp_path, ("crop1",))
    _mito_narrower(store(ds) / GT / "crop1")  # fails while converting (inspection reads only metadata)
    out = tmp_path / "o"
    assert main(cli(ds, out)) == 1
    err = capsys.readouterr().err
    assert not (out / "datalist.json").exists() and (out / "datalist.invalid.json").is_file()
    assert "No datalist.json was written" in err and "Nothing was converted for training" in err, err
    problems = err.split("The datalist did not validate: ")[1].split("\n")[0]  # they name the file that holds it
    assert str(out / "datalist.invalid.json") in problems and f"{out / 'datalist.json'}:" not in problems, problems
    assert crop(json.loads((out / "conversion_report.json").read_text()), "synth-1_crop1")["verdict"] == "failed"
