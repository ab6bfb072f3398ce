"""Bad input, round 3: constant training images stop the analysis; training children die with the
run that launched them and the lock names a live holder (or says its holder is dead)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import run_auto3dseg
from auto3dseg.analysis.analyze import DATASTATS, analyze
from auto3dseg.analysis.constant_images import ALLOW_ENV, ConstantImageError

ROOT = Path(__file__).resolve().parents[1]
CLASS_TABLE = [{"id": 1, "name": "a", "cellmap_id": 1, "instance": False, "parts": []},
               {"id": 2, "name": "b", "cellmap_id": 2, "instance": False, "parts": []}]


def _tiny_datalist(root: Path, images: list[np.ndarray]) -> Path:
    """A NIfTI datalist of one training item per image (random 3-class labels), 2 folds."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for i, img in enumerate(images):
        lab = rng.integers(0, 3, img.shape).astype(np.uint8)
        nib.save(nib.Nifti1Image(img, np.diag([8.0, 8.0, 8.0, 1.0])), root / f"img{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.diag([8.0, 8.0, 8.0, 1.0])), root / f"lab{i}.nii.gz")
        items.append({"image": f"img{i}.nii.gz", "label": f"lab{i}.nii.gz", "fold": i % 2})
    dl = {"name": "tiny", "num_folds": 2, "labels": {"0": "background", "1": "a", "2": "b"},
          "class_table": CLASS_TABLE, "training": items, "testing": []}
    path = root / "datalist.json"
    path.write_text(json.dumps(dl))
    return path


def _images(*kinds: str) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    out = []
    for k in kinds:
        if k == "zero":
            out.append(np.zeros((16, 16, 16), np.uint8))
        elif k == "flat":
            out.append(np.full((16, 16, 16), 77, np.uint8))
        else:
            out.append(rng.integers(20, 240, (16, 16, 16)).astype(np.uint8))
    return out


# --------------------------------------------------------------------------- case 2: constant images
def test_all_zero_and_constant_training_images_stop_the_analysis(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    dl = _tiny_datalist(tmp_path / "data", _images("ok", "zero", "ok", "flat"))
    with pytest.raises(ConstantImageError) as err:
        analyze(dl, tmp_path / "work", workers=0)
    msg = str(err.value)
    assert "\n" not in msg and str(dl) in msg
    # the all-zero image (MONAI's analysis skips it) and the constant 77 one (min == max), by item and value
    assert "training item 1 img1.nii.gz (every voxel 0" in msg and "training item 3 img3.nii.gz (every voxel 77" in msg
    assert "img0" not in msg and "img2" not in msg
    assert "train on nothing" in msg and "Remove them from the datalist" in msg and ALLOW_ENV in msg
    assert not (tmp_path / "work" / DATASTATS).exists()  # nothing a later step would trust
    # through the CLI: one line on stderr, exit 2
    rc = run_auto3dseg.main(["--mode", "analyze", "--datalist", str(dl), "--work_dir", str(tmp_path / "w2"),
                             "--workers", "0"])
    err_text = capsys.readouterr().err
    assert rc == 2
    line = next(x for x in err_text.splitlines() if x.startswith("error:"))
    assert "img1.nii.gz" in line and "img3.nii.gz" in line and "constant" in line


def test_constant_images_trained_anyway_are_loud_in_the_review(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ALLOW_ENV, "1")
    dl = _tiny_datalist(tmp_path / "data", _images("ok", "zero", "ok", "ok"))
    stats = analyze(dl, tmp_path / "work", workers=0)
    assert stats.is_file()
    assert "WARNING: training on constant images anyway" in capsys.readouterr().err
    md = (tmp_path / "work" / "datastats_review.md").read_text()
    head = md.split("Source:")[0]
    assert "WARNING: 1 training item(s) have a constant image" in head and "img1.nii.gz (every voxel 0" in head
    review = json.loads((tmp_path / "work" / "datastats_review.json").read_text())
    assert [f for f in review["flags"] if f.startswith("[constant-image] training item 1 img1.nii.gz")]
    assert not [f for f in review["flags"] if f.startswith("[not-analysed]")]


def test_images_with_contrast_pass(tmp_path, monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    dl = _tiny_datalist(tmp_path / "data", _images("ok", "ok"))
    assert analyze(dl, tmp_path / "work", workers=0).is_file()
    review = json.loads((tmp_path / "work" / "datastats_review.json").read_text())
    assert review["constant_images"] == []
