"""Shared fixtures: the built-in synthetic CellMap tree, generated and converted once."""

from __future__ import annotations

from pathlib import Path

import pytest

from converters import cellmap_zarr as cz
from converters.convert_zarr_to_nifti import convert
from converters.synthetic import generate_synthetic_cellmap


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
