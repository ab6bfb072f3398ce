"""Folds for one or a few large crops: spatial folds (slabs with a gap), reports, dry run, validation."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr

from converters.cellmap import zarr_tree as cz
from converters.cellmap.convert import convert, main
from converters.folds import (
    DEFAULT_FOLD_GAP,
    CropExtent,
    FoldItem,
    SpatialSplit,
    assign_folds,
    plan_spatial_folds,
)
from converters.geometry import split_into_fold_tiles, split_into_slabs, split_into_tiles
from datalists.validate import main as validate_main


def _zyx(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj).T


def _separated(a: tuple, b: tuple, gap: int) -> bool:
    """Boxes ``(start, stop)`` are at least ``gap`` voxels apart along some axis."""
    return any(a[0][ax] >= b[1][ax] + gap or b[0][ax] >= a[1][ax] + gap for ax in range(3))


def _assert_folds_apart(tiles: list[tuple[tuple, tuple, int]], gap: int) -> None:
    """Tiles never overlap; tiles of different folds are at least ``gap`` voxels apart."""
    for (a0, a1, fa), (b0, b1, fb) in itertools.combinations(tiles, 2):
        assert _separated((a0, a1), (b0, b1), 0), f"tiles {a0}:{a1} and {b0}:{b1} overlap"
        if fa != fb:
            assert _crops_gap((a0, a1), (b0, b1)) >= gap, f"folds {fa}/{fb}: {a0}:{a1} vs {b0}:{b1}"


def _crops_gap(a: tuple, b: tuple) -> int:
    return max(max(a[0][ax] - b[1][ax], b[0][ax] - a[1][ax]) for ax in range(3))


def _one_crop(synthetic: Path, crop_id: int = 1) -> list[cz.CropSource]:
    return [c for c in cz.read_datasplit(synthetic / "datasplit.csv") if c.crop_id == crop_id]


# --------------------------------------------------------------------------- geometry and planning


@pytest.mark.parametrize("shape,parts,gap,max_voxels", [
    ((16, 768, 704), 2, 16, None), ((16, 768, 704), 5, 16, 300_000), ((32, 64, 64), 2, 16, 20_000),
    ((7, 50, 9), 3, 4, 100), ((40, 40, 40), 2, 0, 10_000)])
def test_fold_tiles_cover_each_slab_and_keep_the_gap(shape, parts, gap, max_voxels):
    tiles = split_into_fold_tiles(shape, max_voxels, parts, gap)
    ax = int(np.argmax(shape))
    _assert_folds_apart(tiles, gap)
    cover = np.zeros(shape, dtype=int)
    for start, stop, _ in tiles:
        cover[tuple(slice(a, b) for a, b in zip(start, stop))] += 1
        if max_voxels:
            assert np.prod(np.subtract(stop, start)) <= max_voxels
    assert cover.max() == 1
    slabs = split_into_slabs(shape[ax], parts, gap)
    covered = cover.any(axis=tuple(a for a in range(3) if a != ax))
    want = np.zeros(shape[ax], bool)
    for lo, hi in slabs:
        want[lo:hi] = True
    assert np.array_equal(covered, want)  # every slab voxel written, every gap voxel left out
    assert covered.sum() == shape[ax] - (parts - 1) * gap
    # one part: exactly today's tiles
    assert [t[:2] for t in split_into_fold_tiles(shape, max_voxels)] == split_into_tiles(shape, max_voxels)


def test_plan_cuts_only_when_fewer_crops_than_folds():
    one = [CropExtent("crop1", "sbem", (16, 768, 704))]
    assert plan_spatial_folds(one, 2).splits == {"crop1": SpatialSplit(2, 1, DEFAULT_FOLD_GAP)}
    assert plan_spatial_folds(one, 1).splits == {}
    many = [CropExtent(f"c{i}", "d", (32, 64, 64)) for i in range(3)]
    assert plan_spatial_folds(many, 3).splits == {} and plan_spatial_folds(many, 2).splits == {}
    # 2 crops, 5 folds: 5 parts, the largest slabs cut first (a 4x larger crop gets 4 parts)
    two = [CropExtent("big", "d", (32, 400, 400)), CropExtent("small", "d", (32, 200, 200))]
    plan = plan_spatial_folds(two, 5)
    assert plan.splits == {"big": SpatialSplit(4, 1, DEFAULT_FOLD_GAP)} and plan.notes == []
    two = [CropExtent("a", "d", (32, 400, 400)), CropExtent("b", "e", (32, 300, 400))]
    assert {n: s.parts for n, s in plan_spatial_folds(two, 5).splits.items()} == {"a": 3, "b": 2}


def test_plan_notes_give_a_fix_that_works():
    small = [CropExtent("tiny", "d", (8, 40, 40))]
    plan = plan_spatial_folds(small, 2)
    assert plan.splits == {} and "--fold_gap 8" in plan.notes[-1]
    assert plan_spatial_folds(small, 2, gap=8).splits["tiny"].parts == 2  # the advice works
    hopeless = plan_spatial_folds([CropExtent("dot", "d", (4, 20, 20))], 2)
    assert "add crops" in hopeless.notes[-1] and "--fold_gap" not in hopeless.notes[-1]
    assert plan_spatial_folds([CropExtent("dot", "d", (4, 20, 20))], 2, gap=0).splits == {}


# --------------------------------------------------------------------------- the converter


def test_single_crop_is_cut_into_two_spatial_folds(synthetic, converted, tmp_path):
    whole_dir, _ = converted
    out = tmp_path / "o"
    report = convert(out, _one_crop(synthetic), num_folds=2, max_voxels=20_000, progress=False)
    datalist = json.loads((out / "datalist.json").read_text())
    meta = json.loads((out / "datalist_items.json").read_text())
    assert datalist["num_folds"] == 2 and {t["fold"] for t in datalist["training"]} == {0, 1}
    tiles = []
    whole_img = _zyx(whole_dir / "images/synth-1_crop1.nii.gz")
    whole_lab = _zyx(whole_dir / "labels/synth-1_crop1.nii.gz")
    for t in datalist["training"]:
        m = meta[t["image"]]
        assert m["fold"] == t["fold"] and m["spatial_fold"]["axis_name"] == "y" and m["spatial_fold"]["gap"] == 16
        box = tuple(slice(a, b) for a, b in zip(m["tile_start"], m["tile_stop"]))
        assert np.prod(m["shape_zyx"]) <= 20_000
        assert np.array_equal(_zyx(out / t["image"]), whole_img[box])  # a tile is its box of the crop
        assert np.array_equal(_zyx(out / t["label"]), whole_lab[box])
        tiles.append((tuple(m["tile_start"]), tuple(m["tile_stop"]), t["fold"]))
    _assert_folds_apart(tiles, 16)
    assert len(tiles) > 2
    # the report says how the folds were made, and lists every tile with its box and fold
    folds = report["folds"]
    assert folds["grouping"] == "spatial" and folds["used"] == 2 and folds["gap_voxels"] == 16
    assert "cut into 2 spatial folds along y (y 0:24 -> fold 0, y 40:64 -> fold 1)" in folds["how"][0]
    assert len(folds["tiles"]) == len(tiles)
    md = (out / "conversion_report.md").read_text()
    assert "cut into 2 spatial folds along y" in md and "| synth-1_crop1_t000 | synth-1_crop1 | z 0:" in md
    assert report["datalist_validation"]["ok"]
    assert validate_main([str(out / "datalist.json")]) == 0


def test_enough_crops_keep_todays_folds(converted):
    out, report = converted
    datalist = json.loads((out / "datalist.json").read_text())
    meta = json.loads((out / "datalist_items.json").read_text())
    assert report["folds"]["grouping"] == "dataset" and report["folds"]["gap_voxels"] is None
    assert all(meta[t["image"]]["spatial_fold"] is None for t in datalist["training"])
    # the same folds as assign_folds over whole crops (today's rule)
    names = {r["id"]: r["name"] for r in datalist["class_table"]}
    train = [r for r in report["crops"] if r["kind"] == "train" and r["verdict"] == "converted"]
    items = [FoldItem(r["name"], r["dataset"], frozenset(i for i, n in names.items() if r["class_voxels"].get(n)),
                      int(np.prod(r["output_grid"]["shape"]))) for r in train]
    folds, k, _ = assign_folds(items, 2)
    by_image = {it["image"]: r["name"] for r in train for it in r["items"]}
    assert all(t["fold"] == folds[by_image[t["image"]]] for t in datalist["training"])


def test_crop_too_small_to_cut_fails_with_advice_that_works(synthetic, tmp_path, capsys):
    args = ["--datasplit", str(synthetic / "datasplit.csv"), "--max_crops", "1", "--target_spacing", "16", "16", "16",
            "--num_folds", "2", "--no_progress"]
    assert main(args + ["--output_dir", str(tmp_path / "a")]) == 1  # 16 x 32 x 32: no room for 2 slabs and a gap
    captured = capsys.readouterr()
    assert "cannot be cross-validated" in captured.err and "--allow-single-fold" in captured.err
    assert "--fold_gap 0" in captured.out
    assert main(args + ["--output_dir", str(tmp_path / "b"), "--fold_gap", "0"]) == 0  # the advice, taken
    assert validate_main([str(tmp_path / "b/datalist.json")]) == 0


def test_dry_run_lists_tiles_and_folds_and_writes_nothing(synthetic, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["--datasplit", str(synthetic / "datasplit.csv"), "--max_crops", "1", "--output_dir", str(out),
                 "--num_folds", "2", "--max_voxels", "20000", "--dry_run"]) == 0
    assert not out.exists()
    captured = capsys.readouterr()
    plan = json.loads(captured.out)
    row = plan["crops"][0]
    assert row["spatial_folds"]["parts"] == 2 and plan["folds"]["used"] == 2
    boxes = [(tuple(t["start"]), tuple(t["stop"]), t["fold"]) for t in row["tiles"]]
    assert {f for *_, f in boxes} == {0, 1}
    _assert_folds_apart(boxes, 16)
    assert "cut into 2 spatial folds along y" in captured.err and "synth-1_crop1_t000: z 0:" in captured.err
    # the plan is what the conversion does
    report = convert(tmp_path / "real", _one_crop(synthetic), num_folds=2, max_voxels=20_000, progress=False)
    assert [(t["start"], t["stop"], t["fold"]) for t in report["folds"]["tiles"]] == \
        [(t["start"], t["stop"], t["fold"]) for t in row["tiles"]]


def test_resume_keeps_spatial_folds_and_recuts_when_folds_change(synthetic, tmp_path):
    out = tmp_path / "o"
    crops = _one_crop(synthetic)
    convert(out, crops, num_folds=2, progress=False)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["synth-1_crop1_t000.nii.gz",
                                                                  "synth-1_crop1_t001.nii.gz"]
    assert convert(out, crops, num_folds=2, progress=False)["summary"]["resumed"] == 1
    report = convert(out, crops, num_folds=1, progress=False)  # whole again: the slabs' files go
    assert report["summary"]["resumed"] == 0
    assert [p.name for p in (out / "images").iterdir()] == ["synth-1_crop1.nii.gz"]


def test_skipped_crop_leaves_the_other_cut_into_folds(synthetic, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic, data)
    (data / "datasplit.csv").write_text((data / "datasplit.csv").read_text().replace(str(synthetic), str(data)))
    zarr.open_group(str(data / "synth-1/synth-1.zarr"), mode="r+")["recon-1/em/fibsem-uint8/s0"][:] = 117
    crops = [c for c in cz.read_datasplit(data / "datasplit.csv") if c.crop_id in (1, 6)]
    report = convert(tmp_path / "o", crops, num_folds=2, progress=False)  # crop1 turns out constant: failed
    assert next(r for r in report["crops"] if r["name"] == "synth-1_crop1")["verdict"] == "failed"
    assert report["folds"]["used"] == 2 and report["folds"]["grouping"] == "spatial"
    assert report["datalist_validation"]["ok"]
    again = convert(tmp_path / "o", crops, num_folds=2, progress=False)  # a re-run tries crop1 again only
    assert again["summary"]["resumed"] == 1
    assert next(r for r in again["crops"] if r["name"] == "synth-2_crop6").get("resumed")
