"""The 2-D cell target encoding and its way back to instances (auto3dseg.postprocess.cells)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from auto3dseg.ensembling.probability_maps import write_probability_map
from auto3dseg.postprocess import cells as cells_cli
from auto3dseg.postprocess.cell_instances import (
    cells_from_probabilities,
    cells_from_target,
    fill_small_holes,
    seeded_cells,
)
from converters.cells.targets import cell_targets, contact_pixels
from datalists.cell_classes import CELL_CLASS_TABLE

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cells2d"
CHANNELS = [r["name"] for r in CELL_CLASS_TABLE]
KEEP_ALL = {"min_seed_px": 1, "max_hole_px": 0, "min_cell_px": 1}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Same foreground and a one-to-one map between ids."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def same_cells(truth: np.ndarray, pred: np.ndarray, min_agreement: float = 0.99) -> bool:
    """One predicted cell per true cell (majority overlap, one-to-one), on the same
    foreground, with at least ``min_agreement`` of the pixels on the right cell.

    Contact pixels where three cells meet carry no side in the encoding: a pixel there may
    go to the neighbour (at most a few pixels of a packed layout)."""
    if not np.array_equal(truth > 0, pred > 0):
        return False
    fg = truth > 0
    pairs, counts = np.unique(np.stack([truth[fg], pred[fg]]), axis=1, return_counts=True)
    best: dict[int, tuple[int, int]] = {}
    for (t, p), c in zip(pairs.T, counts):
        if c > best.get(int(t), (0, 0))[1]:
            best[int(t)] = (int(p), int(c))
    chosen = [p for p, _ in best.values()]
    right = sum(c for _, c in best.values())
    return (len(set(chosen)) == len(chosen) == len(np.unique(pred[fg]))
            and right >= min_agreement * int(fg.sum()))


def packed_cells(shape=(96, 96), seed=0) -> np.ndarray:
    """Touching cells of varied sizes (the built-in synthetic layout), plus a 3 x 3 cell."""
    from converters.cells.synthetic import cell_layout

    lab = cell_layout(shape, np.random.default_rng(seed), diameter=(6.0, 18.0))
    lab[0:5, 0:5] = 0
    lab[1:4, 1:4] = lab.max() + 1
    return lab


def test_contact_band_only_between_cells():
    lab = np.zeros((7, 9), np.int32)
    lab[1:6, 1:4] = 1  # touches cell 2 along a vertical edge
    lab[1:6, 4:7] = 2
    lab[3, 8] = 3  # alone: touches nothing but background
    t = cell_targets(lab)
    assert set(np.unique(t[:, 3])) == {0, 2} and set(np.unique(t[:, 4])) == {0, 2}
    assert (t[1:6, 1:3] == 1).all() and (t[1:6, 5:7] == 1).all()  # borders with background stay interior
    assert t[3, 8] == 1 and t[0].max() == 0


def test_diagonal_contact_is_marked():
    lab = np.array([[1, 0], [0, 2]])
    assert contact_pixels(lab).tolist() == [[True, False], [False, True]]


def test_round_trip_reproduces_every_cell_exactly():
    lab = packed_cells()
    t = cell_targets(lab)
    assert (t == 2).sum() > 100, "the layout must have many touching cells"
    assert same_cells(lab, cells_from_target(t, KEEP_ALL))


def test_tiny_isolated_cell_survives_where_the_baseline_target_loses_it():
    from skimage.segmentation import find_boundaries

    lab = np.zeros((12, 12), np.int32)
    lab[4:7, 4:7] = 1  # 3 x 3 pixels
    baseline_interior = (lab > 0) & ~find_boundaries(lab, mode="inner")
    baseline_interior[4:7, 4:7] &= False  # the baseline dilates the boundary by one pixel: nothing is left
    assert not baseline_interior.any()
    assert same_partition(cells_from_target(cell_targets(lab), KEEP_ALL), lab)


def test_probabilities_give_the_same_cells_as_targets():
    lab = packed_cells(seed=3)
    t = cell_targets(lab)
    rng = np.random.default_rng(0)
    prob = np.stack([(t == 1), (t == 2), (t > 0)]).astype(np.float32) * 0.8 + rng.uniform(0, 0.15, (3, *t.shape))
    out = cells_from_probabilities(prob.astype(np.float32), CHANNELS, CELL_CLASS_TABLE, KEEP_ALL)
    assert same_cells(lab, out)
    assert np.array_equal(out, cells_from_target(t, KEEP_ALL))
    u8 = np.round(prob * 255).astype(np.uint8)  # the ensemble's stored form, thresholded without a float copy
    assert np.array_equal(cells_from_probabilities(u8, CHANNELS, CELL_CLASS_TABLE, KEEP_ALL, scale=255.0), out)


def test_small_objects_and_holes_are_removed_by_area():
    cell = np.zeros((20, 20), bool)
    cell[2:12, 2:12] = True
    cell[6, 6] = False  # a one-pixel hole
    cell[15:17, 15:17] = True  # a 4-pixel speck
    out = seeded_cells(cell, cell, min_seed_px=1, max_hole_px=4, min_cell_px=5)
    assert out[6, 6] == out[3, 3] == 1 and out.max() == 1 and out[15, 15] == 0
    edge = np.ones((5, 5), bool)
    edge[0, 2] = False  # background touching the border is not a hole
    assert not fill_small_holes(edge, 10)[0, 2]


def test_unseeded_component_becomes_its_own_cell():
    cell = np.zeros((5, 12), bool)
    cell[1:4, 1:5] = True
    cell[1:4, 8:11] = True
    seeds = np.zeros_like(cell)
    seeds[2, 2] = True  # only the left object has an interior
    out = seeded_cells(cell, seeds, min_seed_px=1, min_cell_px=1)
    assert out.max() == 2 and out[2, 9] not in (0, out[2, 2])


def test_ids_never_wrap_past_65535_cells(tmp_path):
    cell = np.zeros((801, 801), bool)
    cell[1::3, 1::3] = True  # 267 x 267 = 71,289 one-pixel cells, none touching
    out = seeded_cells(cell, cell, min_seed_px=1, max_hole_px=0, min_cell_px=1)
    assert out.dtype == np.uint32 and out.max() == 267 * 267 == len(np.unique(out)) - 1
    path = cells_cli.write_label_tiff(out, tmp_path / "x_label.tiff")
    back = tifffile.imread(path)
    assert back.dtype == np.uint32 and np.array_equal(back, out)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression == 8  # zlib (ADOBE_DEFLATE)


def _write_target_nifti(path: Path, target_yx: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(target_yx.T[:, :, None].astype(np.uint8), np.eye(4)), str(path))


def test_cli_on_targets_and_probabilities_keeps_going_after_a_bad_input(tmp_path, capsys):
    lab = packed_cells(shape=(40, 64), seed=5)
    t = cell_targets(lab)
    (tmp_path / "targets").mkdir()
    _write_target_nifti(tmp_path / "targets" / "img_a.nii.gz", t)
    (tmp_path / "targets" / "broken.nii.gz").write_bytes(b"not a nifti")
    probs = tmp_path / "ens"
    probs.mkdir()
    onehot = np.stack([(t == 1), (t == 2), (t > 0)]).astype(np.float32)
    write_probability_map(np.transpose(onehot, (0, 2, 1)), np.eye(3), probs / "img_b_prob.zarr")
    (probs / "ensemble.json").write_text(json.dumps({"channels": CHANNELS}))
    out = tmp_path / "out"
    rc = cells_cli.main([str(tmp_path / "targets"), str(probs), "--output_dir", str(out), "--no_progress",
                         "--params", str(_params(tmp_path))])
    assert rc == 1 and "broken.nii.gz" in capsys.readouterr().out
    for stem in ("img_a", "img_b"):
        got = tifffile.imread(out / f"{stem}_label.tiff")
        assert got.shape == lab.shape and same_cells(lab, got), stem
    report = json.loads((out / "postprocess_report.json").read_text())
    assert [r["status"] for r in report["rows"]].count("failed") == 1


def _params(tmp_path: Path) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text("min_seed_px: 1\nmax_hole_px: 0\nmin_cell_px: 1\n")
    return p


def test_params_file_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_cel_px: 3\n")
    with pytest.raises(ValueError, match="min_cel_px"):
        cells_cli.load_cell_params(bad)
    with pytest.raises(ValueError, match="threshold"):
        cells_cli.load_cell_params(overrides={"threshold": 1.5})


@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/cells2d is not present (it is not part of the project)")
@pytest.mark.parametrize("stem", ["cell_00528", "dsb2018_0001"])
def test_real_pairs_round_trip_with_default_parameters(stem):
    from auto3dseg.evaluation.cellseg import score_image

    gt = tifffile.imread(REAL / "labels" / f"{stem}_label.tiff")
    pred = cells_from_target(cell_targets(gt))
    assert score_image(gt, pred)["f1"] >= 0.98


def test_binary_labelling_is_right_in_2d_with_8_connectivity():
    """connected-components-3d 4.1.1 mislabels boolean 2-D masks with connectivity 8."""
    from scipy import ndimage as ndi

    from auto3dseg.postprocess.ids import label_components

    rng = np.random.default_rng(0)
    for _ in range(40):
        mask = rng.random(tuple(rng.integers(5, 40, 2))) < 0.4
        ours = label_components(mask, 8)
        ref, _ = ndi.label(mask, np.ones((3, 3), bool))
        assert same_partition(ours, ref)


def test_growth_falls_back_to_a_watershed_past_max_steps():
    from auto3dseg.postprocess.cell_instances import grow_seeds

    mask = np.ones((3, 40), bool)
    markers = np.zeros((3, 40), np.uint32)
    markers[1, 0], markers[1, 39] = 1, 2
    fast = grow_seeds(markers, mask)
    slow = grow_seeds(markers, mask, max_steps=3)  # the watershed finishes the job
    assert (fast[:, :19] == 1).all() and (fast[:, 21:] == 2).all()
    assert (slow > 0).all() and (slow[:, :15] == 1).all() and (slow[:, 25:] == 2).all()


def test_a_nook_at_the_image_border_is_not_filled():
    m = np.ones((6, 6), bool)
    m[0, 2] = False  # background nook open to the border
    m[3, 3] = False  # a real hole
    out = fill_small_holes(m, 4)
    assert not out[0, 2] and out[3, 3]


def test_the_cli_never_writes_over_truth_or_input_folders(tmp_path, capsys):
    """--output_dir given the ground-truth folder overwrote the truth with predictions (then F1 1.0)."""
    maps = tmp_path / "ensemble_output"
    maps.mkdir()
    write_probability_map(np.full((3, 8, 8), 0.5, np.float32), np.eye(4), maps / "a_prob.zarr",
                          ["cell_interior", "cell_contact", "cell"], "sigmoid")
    truth = tmp_path / "test_truth"
    truth.mkdir()
    tifffile.imwrite(truth / "a_label.tiff", np.ones((8, 8), np.uint16))
    before = (truth / "a_label.tiff").read_bytes()
    data = tmp_path / "nifti"
    (data / "labels").mkdir(parents=True)
    (data / "datalist.json").write_text("{}")
    for out, says in ((truth, "holds 1 image or label file(s) this tool did not write (e.g. a_label.tiff"),
                      (maps, "is the folder of the input"), (data / "labels", "inside the converted dataset")):
        assert cells_cli.main([str(maps), "--output_dir", str(out), "--no_progress"]) == 2
        err = capsys.readouterr().err
        assert says in err and "give a folder of its own" in err, err
    assert (truth / "a_label.tiff").read_bytes() == before
    out = tmp_path / "labels"
    assert cells_cli.main([str(maps), "--output_dir", str(out), "--no_progress"]) == 0
    assert cells_cli.main([str(maps), "--output_dir", str(out), "--no_progress"]) == 0  # its own folder: rewritten


def test_a_label_tiff_that_cannot_be_written_names_its_file(tmp_path, monkeypatch):
    """A full disk while a label was written said "(unknown file)": tifffile's error names none."""
    import errno
    import os

    from converters.outputs import os_error_message

    def full(*_, **__):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tifffile, "imwrite", full)
    target = tmp_path / "labels" / "cell_00_label.tiff"
    with pytest.raises(OSError) as info:
        cells_cli.write_label_tiff(np.zeros((4, 4), np.uint16), target)
    assert info.value.filename == str(target) and str(target) in os_error_message(info.value)
    assert not list(target.parent.iterdir())  # no temporary left
