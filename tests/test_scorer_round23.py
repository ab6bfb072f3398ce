"""Bad inputs both scorers took silently: a CellMap array a slice short of its crop, a uint8
CellSeg prediction whose ids wrapped at 256, a folder holding a zip and a newer submission.zarr.

Each is now warned; every score stays the official scorer's.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from auto3dseg.evaluation import cellseg as cs
from auto3dseg.evaluation import score as sc

VS8, ORIGIN = [8.0, 8.0, 8.0], [4.0, 4.0, 4.0]
TRUTH = np.zeros((10, 12, 14), np.uint8)
TRUTH[2:, 3:10, 3:12] = 1  # reaches the last plane: an array a plane short loses part of it


def write_store(path: Path, labels: dict[str, tuple[np.ndarray, dict]]) -> Path:
    """``crop1/<label>`` arrays with the given attributes."""
    crop = zarr.open_group(str(path), mode="w").require_group("crop1")
    for label, (data, attrs) in labels.items():
        crop.create_dataset(label, data=data, chunks=data.shape).attrs.put(attrs)
    return path


def attrs(shape: tuple[int, ...] | None = None, voxel_size: list[float] = VS8) -> dict:
    out = {"voxel_size": voxel_size, "translation": ORIGIN}
    return out if shape is None else {**out, "shape": list(shape)}


def of_kind(scores: dict, kind: str) -> list[dict]:
    return [w for w in scores["warnings"] if w["kind"] == kind]


# --------------------------------------------------------------------------------------
# H9: an array a slice shorter than its crop (and than its own shape attribute)
# --------------------------------------------------------------------------------------
def test_array_a_slice_short_is_warned_and_keeps_the_official_score(tmp_path, capsys):
    truth = write_store(tmp_path / "t.zarr", {"cyto": (TRUTH, attrs(TRUTH.shape))})
    short = TRUTH[:-1]
    sub = write_store(tmp_path / "s.zarr", {"cyto": (short, attrs(TRUTH.shape))})  # attribute says 10×12×14
    s = sc.score_submission(sub, truth)
    (w,) = of_kind(s, "shape_mismatch")
    assert (w["crop"], w["label"]) == (1, "cyto")
    assert w["message"] == ("the array is 9×12×14, the crop 10×12×14 (its shape attribute says 10×12×14): "
                            "scored as the official scorer does (resized/padded), check the submission")
    assert "warning: crop1/cyto [shape_mismatch]: the array is 9×12×14" in capsys.readouterr().err
    assert "- crop1/cyto [shape_mismatch]: the array is 9×12×14" in sc.format_scores_markdown(s)
    # the score is the official one: the missing plane as background
    padded = np.concatenate([short, np.zeros((1, 12, 14), np.uint8)])
    same = sc.score_submission(write_store(tmp_path / "p.zarr", {"cyto": (padded, attrs())}), truth,
                               echo_warnings=False)
    assert s["labels"]["cyto"]["iou"] == same["labels"]["cyto"]["iou"] < 1.0
    assert not of_kind(same, "shape_mismatch")
    with pytest.raises(sc.ScoringInputError, match=r"attribute shape \[10, 12, 14\] differs"):
        sc.score_submission(sub, truth, rules="strict", echo_warnings=False)


def test_array_a_slice_short_without_shape_attribute_is_warned_too(tmp_path):
    truth = write_store(tmp_path / "t.zarr", {"cyto": (TRUTH, attrs(TRUTH.shape))})
    sub = write_store(tmp_path / "s.zarr", {"cyto": (TRUTH[:-1], attrs())})  # on the crop's grid, a plane short
    (w,) = of_kind(sc.score_submission(sub, truth, echo_warnings=False), "shape_mismatch")
    assert w["message"] == ("the array is 9×12×14, the crop 10×12×14: scored as the official scorer does "
                            "(resized/padded), check the submission")


def test_array_at_another_voxel_size_is_no_shape_mismatch(tmp_path):
    truth = write_store(tmp_path / "t.zarr", {"cyto": (TRUTH, attrs(TRUTH.shape))})
    fine = TRUTH.repeat(2, 0).repeat(2, 1).repeat(2, 2)  # the crop at 4 nm: another shape, rightly
    sub = write_store(tmp_path / "s.zarr", {"cyto": (fine, {"voxel_size": [4.0] * 3, "translation": [2.0] * 3,
                                                            "shape": list(fine.shape)})})
    s = sc.score_submission(sub, truth, echo_warnings=False)
    assert not of_kind(s, "shape_mismatch")


# --------------------------------------------------------------------------------------
# H24: a uint8 CellSeg prediction whose instance ids wrapped past 255
# --------------------------------------------------------------------------------------
def grid_of_cells(n: int) -> np.ndarray:
    """``n`` separate 3×3 cells (ids 1..n, uint16) on a 20-wide lattice, clear of the image frame."""
    rows = -(-n // 20)
    lab = np.zeros((4 * rows + 8, 88), np.uint16)
    for i in range(n):
        r, c = 4 + 4 * (i // 20), 4 + 4 * (i % 20)
        lab[r:r + 3, c:c + 3] = i + 1
    return lab


WRAP_MESSAGE = ("img_label.tiff: a uint8 prediction whose ids reach 255 with ids shared by separate cells: ids "
                "wrapped around at 256? save instance masks as uint16/uint32")


def score_cells(tmp_path: Path, gt: np.ndarray, pred: np.ndarray) -> dict:
    for folder, arr in (("gt", gt), ("pred", pred)):
        (tmp_path / folder).mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / folder / "img_label.tiff", arr)
    return cs.score_folders(tmp_path / "gt", tmp_path / "pred", progress=False)


def test_wrapped_uint8_prediction_is_warned_and_keeps_its_score(tmp_path, capsys):
    gt = grid_of_cells(400)
    wrapped = (gt % 256).astype(np.uint8)  # cells 256..400 share ids 0..144 with cells 1..144
    r = score_cells(tmp_path, gt, wrapped)
    assert WRAP_MESSAGE in r["warnings"]
    assert r["per_image"][0]["f1"] == round(cs.score_image(gt, wrapped)["f1"], 4) < 1.0
    assert cs.main(["--gt", str(tmp_path / "gt"), "--pred", str(tmp_path / "pred"),
                    "--out", str(tmp_path / "scores.json")]) == 0
    assert f"warning: {WRAP_MESSAGE}" in capsys.readouterr().err


def test_uint8_prediction_without_wrapped_ids_is_not_warned(tmp_path):
    gt = grid_of_cells(255)  # ids up to 255 fit in uint8: nothing wrapped
    r = score_cells(tmp_path, gt, gt.astype(np.uint8))
    assert r["per_image"][0]["f1"] == 1.0
    assert not any("wrapped" in w for w in r["warnings"])
    wide = grid_of_cells(400)  # the same ids as uint16: nothing wrapped either
    assert not any("wrapped" in w for w in score_cells(tmp_path, wide, wide)["warnings"])


# --------------------------------------------------------------------------------------
# H32: a folder holding submission.zip and submission.zarr is read from its zip
# --------------------------------------------------------------------------------------
def folder_with_zip_and_zarr(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """truth; a folder whose zip holds the perfect answer and whose zarr an empty one."""
    truth = write_store(tmp_path / "t.zarr", {"er": (TRUTH, attrs(TRUTH.shape))})
    folder = tmp_path / "submission"
    folder.mkdir()
    right = write_store(tmp_path / "right.zarr", {"er": (TRUTH, attrs(TRUTH.shape))})
    zip_path = folder / "submission.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted(right.rglob("*")):
            if f.is_file():
                zf.write(f, f"submission.zarr/{f.relative_to(right).as_posix()}")
    zarr_dir = write_store(folder / "submission.zarr", {"er": (np.zeros_like(TRUTH), attrs(TRUTH.shape))})
    return truth, folder, zip_path, zarr_dir


def set_mtime(path: Path, when: float) -> None:
    for p in [path, *path.rglob("*")]:
        os.utime(p, (when, when))


def test_folder_with_zip_and_newer_zarr_names_the_zip_and_warns(tmp_path, capsys):
    truth, folder, zip_path, zarr_dir = folder_with_zip_and_zarr(tmp_path)
    os.utime(zip_path, (time.time() - 3600,) * 2)  # the zarr was edited after zipping
    out = tmp_path / "scores.json"
    assert sc.main(["--submission", str(folder), "--truth", str(truth), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    s = json.loads(out.read_text())
    assert s["labels"]["er"]["iou"] == 1.0  # the zip's answer, as the official scorer reads the folder
    assert s["submission"] == str(folder) and s["submission_read"] == str(zip_path)
    line = (f"- submission: `{zip_path}` (the zip in `{folder}`; a folder holding a zip and a submission.zarr is "
            "read from its zip, as the official scorer does)")
    assert line in captured.out and line in out.with_suffix(".md").read_text()
    (w,) = of_kind(s, "zarr_newer_than_zip")
    assert w["message"].startswith(f"{zarr_dir} was changed after submission.zip (")
    assert w["message"].endswith(f"but the zip is what was scored (a folder holding both is read from its zip, as "
                                 f"the official scorer does): zip it again, or score the zarr with --submission "
                                 f"{zarr_dir}")
    assert "warning: */* [zarr_newer_than_zip]" in captured.err
    # scoring the zarr as the warning says gives the zarr's answer
    assert sc.score_submission(zarr_dir, truth, echo_warnings=False)["labels"]["er"]["iou"] == 0.0


def test_folder_with_zip_newer_than_its_zarr_is_not_warned(tmp_path):
    truth, folder, zip_path, zarr_dir = folder_with_zip_and_zarr(tmp_path)
    set_mtime(zarr_dir, time.time() - 3600)  # zipped after the zarr was written: the usual order
    os.utime(zip_path, (time.time() - 1800,) * 2)
    s = sc.score_submission(folder, truth, echo_warnings=False)
    assert s["labels"]["er"]["iou"] == 1.0 and s["submission_read"] == str(zip_path)
    assert not of_kind(s, "zarr_newer_than_zip")
    # one file edited since is enough
    os.utime(zarr_dir / "crop1" / "er" / ".zattrs", None)
    (w,) = of_kind(sc.score_submission(folder, truth, echo_warnings=False), "zarr_newer_than_zip")
    assert "(submission.zarr/crop1/er/.zattrs: " in w["message"]
    # the strict rules keep reading the folder's submission.zarr, and say nothing of the zip
    strict = sc.score_submission(folder, truth, rules="strict", echo_warnings=False)
    assert strict["labels"]["er"]["iou"] == 0.0 and not of_kind(strict, "zarr_newer_than_zip")
    assert "(the zip in" not in sc.format_scores_markdown(strict)


def test_submission_help_states_the_folder_rule():
    text = " ".join(sc._parser().format_help().split())
    assert "A folder holding a zip is read from that zip, even beside a submission.zarr" in text
    assert "--submission .../submission.zarr" in text
