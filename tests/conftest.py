"""Shared fixtures: the built-in synthetic CellMap tree, generated and converted once."""

from __future__ import annotations

from pathlib import Path

import pytest

# MONAI's Auto3DSeg loggers bind sys.stdout when their module is first imported. Imported inside a
# test that captures output (capsys), they would keep that test's stream, closed after it, and a
# later test would read "--- Logging error ---" in its output. Imported here, they bind the
# session's stream.
import monai.apps.auto3dseg  # noqa: F401
from converters.cellmap import zarr_tree as cz
from converters.cellmap.convert import convert
from converters.cellmap.synthetic import generate_synthetic_cellmap


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    """The built-in synthetic CellMap data (seed 0)."""
    out = tmp_path_factory.mktemp("syn") / "data"
    generate_synthetic_cellmap(out, seed=0)
    return out


@pytest.fixture(scope="session")
def converted(synthetic, tmp_path_factory) -> tuple[Path, dict]:
    """The synthetic data converted at 8 nm with 2 folds: (output folder, report)."""
    out = tmp_path_factory.mktemp("conv") / "nifti"
    crops = cz.read_datasplit(synthetic / "datasplit.csv")
    tests = cz.read_test_manifest(synthetic / "test_crop_manifest.csv", {c.dataset: c.em_zarr for c in crops})
    report = convert(out, crops, tests, num_folds=2, progress=False)
    return out, report


@pytest.fixture(scope="session")
def synthetic_cells(tmp_path_factory) -> Path:
    """The built-in synthetic 2-D cell data (seed 0)."""
    from converters.cells.synthetic import generate_synthetic_cells

    out = tmp_path_factory.mktemp("cells") / "data"
    generate_synthetic_cells(out, seed=0)
    return out


@pytest.fixture(scope="session")
def converted_cells(synthetic_cells, tmp_path_factory) -> tuple[Path, dict]:
    """The synthetic cells converted with 2 folds, the large image tiled: (output folder, report)."""
    from converters.cells.convert import convert_cells

    out = tmp_path_factory.mktemp("cells_conv") / "nifti"
    report = convert_cells(out, synthetic_cells / "images", synthetic_cells / "labels", num_folds=2,
                           max_pixels=300_000, progress=False)
    return out, report


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A real single-node Slurm (tests/slurm_cluster.py), started once, stopped at the end;
    ``SLURM_CONF`` is set for the session so that sbatch, squeue, ... talk to it."""
    import os

    from slurm_cluster import LocalSlurm, unavailable

    why = unavailable()
    if why:
        pytest.skip(why)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm")).start()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


@pytest.fixture(scope="session")
def trained_work(converted, tmp_path_factory) -> Path:
    """The converted synthetic data through ``--mode full`` (tests/pipeline_work.py); copy before changing it."""
    from pipeline_work import build_trained_work

    return build_trained_work(converted[0] / "datalist.json", tmp_path_factory.mktemp("faults") / "work")


@pytest.fixture(scope="module")
def generated(converted, tmp_path_factory) -> Path:
    """A work_dir of the built-in CellMap data with segresnet_0/1 generated (1 epoch, 16³ patches), untrained;
    one per test module (tests/pipeline_work.py)."""
    from pipeline_work import generate_work

    return generate_work(converted[0] / "datalist.json", tmp_path_factory.mktemp("generated") / "work")
