"""A tiny trained CellMap work_dir and the helpers the pipeline-fault tests share.

:func:`build_trained_work` runs analyze → generate (1 fold) → train 2 epochs → ensemble → submit
on the converted synthetic data (segresnet, 8 filters, 16³ patches, 1 iteration an epoch);
tests copy it (:func:`copy_work`) before changing anything, and run commands on the copy in a
child process (:func:`run_work`, with an optional fault of :mod:`faults`)."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from faults import ROOT, run_faulty

TINY_NET = ["--override", "num_workers=0", "--override", "num_iterations_per_epoch=1",
            "--override", "segresnet:network#init_filters=8", "--override", "segresnet:network#dsdepth=2",
            "--override", "sw_batch_size=4"]
TINY = ["--algos", "segresnet", *TINY_NET]
SCRIPT = str(ROOT / "run_auto3dseg.py")


def build_trained_work(datalist: Path, work: Path) -> Path:
    """``--mode full`` on ``datalist`` into ``work``, uninterrupted."""
    import run_auto3dseg

    rc = run_auto3dseg.main(["--mode", "full", "--datalist", str(datalist), "--work_dir", str(work),
                             "--workers", "0", "--num_fold", "1", "--num_epochs", "2", "--patch_size", "16", *TINY])
    assert rc == 0
    return work


def copy_work(base: Path, tmp_path: Path) -> Path:
    work = tmp_path / "work"
    shutil.copytree(base, work, symlinks=True)
    return work


def run_work(work: Path, *args: str, **fault) -> subprocess.CompletedProcess:
    return run_faulty([SCRIPT, "--work_dir", str(work), *args], **fault)


def zip_arrays(zip_path: Path, tmp: Path) -> dict[str, np.ndarray]:
    """Every ``crop/label`` array of a submission zip, extracted under ``tmp``."""
    import zarr

    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp)
    store = zarr.open_group(str(tmp / "submission.zarr"), mode="r")
    return {f"{c}/{n}": np.asarray(a[...]) for c, g in store.groups() for n, a in g.arrays()}


def nan_copy(src: Path, dst: Path) -> Path:
    """``src`` saved as float32 with one NaN voxel."""
    img = nib.load(str(src))
    data = np.asarray(img.dataobj, dtype=np.float32).copy()
    data[(0,) * data.ndim] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(dst))
    return dst


def generate_work(datalist: Path, work: Path) -> Path:
    """analyze + generate of segresnet_0/1 (1 epoch, 16³ patches) on ``datalist`` into ``work``: untrained."""
    import run_auto3dseg

    common = ["--datalist", str(datalist), "--work_dir", str(work)]
    assert run_auto3dseg.main(["--mode", "analyze", *common, "--workers", "0"]) == 0
    assert run_auto3dseg.main(["--mode", "generate", *common, "--algos", "segresnet", "--num_epochs", "1",
                               "--patch_size", "16"]) == 0
    return work


def bundle_hp(work: Path, name: str) -> dict:
    """The hyper_parameters.yaml of bundle ``name`` of ``work``."""
    import yaml

    return yaml.safe_load((work / name / "configs" / "hyper_parameters.yaml").read_text())


def file_times(work: Path) -> dict[str, int]:
    """Every file under ``work`` (locks aside) with its time: what a refused command must leave as it was."""
    return {str(p): p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
