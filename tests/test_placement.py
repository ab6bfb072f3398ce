"""Placing labels from a prediction grid onto a test crop's grid (voxel size, translation)."""

from __future__ import annotations

import numpy as np
import pytest

from auto3dseg.submission.placement import grids_align, place_on_grid
from converters.geometry import Grid


def _centres(grid: Grid) -> list[np.ndarray]:
    return [grid.origin[a] + np.arange(grid.shape[a]) * grid.spacing[a] for a in range(3)]


def test_instance_voxels_land_in_the_prediction_voxel_that_contains_them():
    """Non-integer translation, other voxel size: each truth voxel takes the id of the
    prediction voxel its centre lies in."""
    src = Grid((200.0, 96.0, 464.0), (8.0, 8.0, 8.0), (12, 10, 9))
    ids = np.arange(1, src.n_voxels + 1, dtype=np.uint32).reshape(src.shape)
    dst = Grid((203.5, 99.25, 467.0), (3.0, 5.0, 4.0), (20, 11, 13))
    placed = place_on_grid(ids, src, dst, "instance")
    assert placed.dtype == np.uint32 and placed.shape == dst.shape
    src_index = np.stack(np.unravel_index(placed.astype(np.int64) - 1, src.shape), axis=0)
    for a, centres in enumerate(_centres(dst)):
        src_centre = src.origin[a] + src_index[a] * src.spacing[a]
        shape = [1, 1, 1]
        shape[a] = -1
        dist = np.abs(centres.reshape(shape) - src_centre)
        assert (dist <= src.spacing[a] / 2 + 1e-6).all(), a


def test_outside_the_prediction_is_zero():
    src = Grid((0.0, 0.0, 0.0), (8.0, 8.0, 8.0), (4, 4, 4))
    dst = Grid((-16.0, 0.0, 0.0), (8.0, 8.0, 8.0), (8, 4, 4))
    placed = place_on_grid(np.ones(src.shape, np.uint16), src, dst, "instance")
    assert placed[:2].max() == 0 and placed[2:6].min() == 1 and placed[6:].max() == 0


def test_semantic_boundary_lands_at_its_physical_position():
    """A mask whose edge is at x = 100 nm stays at 100 nm on a finer, shifted grid."""
    src = Grid((4.0, 4.0, 4.0), (8.0, 8.0, 8.0), (4, 4, 30))
    x_src = _centres(src)[2]
    mask = np.broadcast_to(x_src >= 100.0, src.shape).astype(np.uint8)
    dst = Grid((4.0, 4.0, 1.3), (8.0, 8.0, 2.0), (4, 4, 110))
    placed = place_on_grid(mask, src, dst, "semantic")
    assert placed.dtype == np.uint8 and set(np.unique(placed)) <= {0, 1}
    x_dst = _centres(dst)[2]
    on = x_dst[placed[0, 0] == 1]
    assert abs(on.min() - 100.0) <= 4.0 + 1e-6  # within half a source voxel of the edge
    assert (placed[0, 0][x_dst > 110.0] == 1).all() and (placed[0, 0][x_dst < 90.0] == 0).all()


def test_aligned_grids_are_a_plain_crop():
    src = Grid((0.0, 0.0, 0.0), (8.0, 8.0, 8.0), (6, 6, 6))
    dst = Grid((16.0, 8.0, 0.0), (8.0, 8.0, 8.0), (2, 3, 4))
    assert grids_align(src, dst) and not grids_align(src, Grid((4.0, 8.0, 0.0), (8.0, 8.0, 8.0), (2, 3, 4)))
    rng = np.random.default_rng(0)
    mask = (rng.random(src.shape) > 0.5).astype(np.uint8)
    assert np.array_equal(place_on_grid(mask, src, dst, "semantic"), mask[2:4, 1:4, 0:4])


def test_wrong_shape_or_kind_is_refused():
    src = Grid((0.0, 0.0, 0.0), (8.0, 8.0, 8.0), (2, 2, 2))
    with pytest.raises(ValueError, match="does not match"):
        place_on_grid(np.zeros((3, 2, 2), np.uint8), src, src, "semantic")
    with pytest.raises(ValueError, match="kind"):
        place_on_grid(np.zeros((2, 2, 2), np.uint8), src, src, "binary")


def _manifest(path, rows):
    path.write_text("crop_name,dataset,class_label,voxel_size,translation,shape\n" + "".join(
        f"{crop},{dataset},{label},[8;8;8],[0;0;0],[4;4;4]\n" for crop, dataset, label in rows))
    return path


def test_a_manifest_placing_a_converted_crop_in_another_dataset_is_refused(tmp_path):
    """The submission names crops by id only: another dataset's crop of the same id would get this prediction."""
    from auto3dseg.submission.cellmap import test_labels_by_crop

    items = {"images/crop7.nii.gz": {"usage": "test", "crop_id": 7, "dataset": "jrc_a"}}
    ok = _manifest(tmp_path / "ok.csv", [(7, "jrc_a", "mito"), (7, "jrc_a", "er"), (9, "jrc_b", "mito")])
    assert sorted(t["label"] for t in test_labels_by_crop(items, ok)[7]) == ["er", "mito"]
    other = _manifest(tmp_path / "other.csv", [(7, "jrc_z", "mito")])
    with pytest.raises(ValueError, match=r"other\.csv puts test crop 7 in dataset jrc_z, but images/crop7\.nii\.gz "
                                         r"was converted from crop 7 of jrc_a"):
        test_labels_by_crop(items, other)
    twice = _manifest(tmp_path / "twice.csv", [(9, "jrc_b", "mito"), (9, "jrc_c", "er")])
    with pytest.raises(ValueError, match=r"test crop 9 is listed under two datasets \(jrc_b, jrc_c\)"):
        test_labels_by_crop(items, twice)
    # one label of a crop on two rows (at two voxel sizes): one array would be written over the other, while
    # the report listed both as predicted (probe round 23, H27); the converter refuses the same file
    again = _manifest(tmp_path / "again.csv", [(7, "jrc_a", "mito"), (7, "jrc_a", "er"), (7, "jrc_a", "mito")])
    with pytest.raises(ValueError, match=r"again\.csv:4: test crop 7 of dataset jrc_a, label 'mito', is listed again "
                                         r"\(first at line 2\)"):
        test_labels_by_crop(items, again)


def test_a_manifest_of_another_dataset_is_refused_not_written_empty(tmp_path):
    """A manifest naming none of the converted test crops wrote every label empty, exit 0."""
    from auto3dseg.submission.cellmap import test_labels_by_crop

    items = {"images/crop101.nii.gz": {"usage": "test", "crop_id": 101, "dataset": "synth-1"},
             "images/crop102.nii.gz": {"usage": "test", "crop_id": 102, "dataset": "synth-2"}}
    other = _manifest(tmp_path / "other.csv", [(555, "other-ds", "mito"), (556, "other-ds", "er")])
    with pytest.raises(ValueError, match=r"none of the 2 crop\(s\) of .*other\.csv is a converted test crop of this "
                                         r"dataset \(those are crop 101, 102\)"):
        test_labels_by_crop(items, other)
    some = _manifest(tmp_path / "some.csv", [(101, "synth-1", "mito"), (556, "other-ds", "er")])
    assert set(test_labels_by_crop(items, some)) == {101, 556}  # crops not converted stay empty, as before
