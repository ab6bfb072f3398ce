"""Grids, affines and the slab resampler: exact where the grids align, linear otherwise."""

import numpy as np
import pytest

from converters.geometry import (
    Grid,
    grid_from_nifti_affine,
    nifti_affine,
    output_grid,
    source_coordinates,
    split_into_tiles,
)
from converters.resample import plan_axis, resample_into


def test_affine_round_trip_with_non_integer_origin():
    g = Grid((203.0, 331.5, 467.25), (40.0, 6.0, 6.0), (3, 4, 5))
    aff = nifti_affine(g)
    back = grid_from_nifti_affine(aff, g.shape[::-1])
    assert back == g
    # voxel (i, j, k) = (x, y, z) index maps to physical (x, y, z)
    ijk = np.array([4, 3, 2, 1.0])
    assert np.allclose(aff @ ijk, [467.25 + 4 * 6, 331.5 + 3 * 6, 203 + 2 * 40, 1])


def test_affine_with_rotation_is_rejected():
    aff = np.eye(4)
    aff[0, 0] = -1
    with pytest.raises(ValueError, match="axis-aligned"):
        grid_from_nifti_affine(aff, (2, 2, 2))


def test_output_grid_keeps_physical_box():
    src = Grid((4.0, 4.0, 4.0), (8.0, 8.0, 8.0), (10, 20, 30))
    out = output_grid(src, (16.0, 16.0, 16.0))
    assert out.shape == (5, 10, 15)
    assert np.allclose(out.lower_edge, src.lower_edge)
    assert np.allclose(out.upper_edge, src.upper_edge)
    assert output_grid(src, (8, 8, 8)) is src


def test_identity_resample_is_a_slice_and_exact():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 255, (12, 13, 14), dtype=np.uint8)
    out_grid = Grid((3 * 8.0, 2 * 8.0, 5 * 8.0), (8.0,) * 3, (5, 6, 7))
    coords = source_coordinates(out_grid, (0.0, 0.0, 0.0), (8.0,) * 3)
    assert all(plan_axis(c, n, "linear").is_slice for c, n in zip(coords, src.shape))
    out = np.empty(out_grid.shape, np.uint8)
    assert resample_into(src, coords, out, "linear", slab=2) == 0
    assert np.array_equal(out, src[3:8, 2:8, 5:12])


def test_linear_resample_matches_trilinear_on_a_ramp():
    # a linear ramp is reproduced exactly by linear interpolation at any sub-voxel shift
    z, y, x = np.meshgrid(np.arange(10), np.arange(11), np.arange(12), indexing="ij")
    src = (2.0 * z + 3.0 * y + 5.0 * x).astype(np.float32)
    out_grid = Grid((1.3, 2.6, 3.1), (1.0, 0.5, 1.5), (6, 8, 5))
    coords = source_coordinates(out_grid, (0, 0, 0), (1, 1, 1))
    out = np.empty(out_grid.shape, np.float32)
    resample_into(src, coords, out, "linear", slab=3)
    zz, yy, xx = np.meshgrid(*coords, indexing="ij")
    assert np.allclose(out, 2 * zz + 3 * yy + 5 * xx, atol=1e-4)


def test_nearest_labels_downsample_and_padding_counted():
    src = np.arange(4 * 4 * 4, dtype=np.uint16).reshape(4, 4, 4)
    # output reaches two voxels past the source in x: those are padded
    out_grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (4, 4, 6))
    coords = source_coordinates(out_grid, (0, 0, 0), (1, 1, 1))
    out = np.empty(out_grid.shape, np.uint16)
    padded = resample_into(src, coords, out, "nearest", pad_value=0)
    assert padded == 4 * 4 * 2
    assert np.array_equal(out[..., :4], src)
    assert not out[..., 4:].any()


def test_post_lookup_applied_per_slab():
    src = np.array([[[0, 3, 4, 50]]], dtype=np.uint8)
    lut = np.zeros(256, np.uint8)
    lut[[3, 4, 50]] = [1, 2, 3]
    out = np.empty((1, 1, 4), np.uint8)
    coords = [np.zeros(1), np.zeros(1), np.arange(4.0)]
    resample_into(src, coords, out, "nearest", post=lambda b: lut[b])
    assert out.ravel().tolist() == [0, 1, 2, 3]


def test_tiles_cover_shape_exactly_once():
    shape = (7, 9, 20)
    tiles = split_into_tiles(shape, 200)
    cover = np.zeros(shape, np.int32)
    for start, stop in tiles:
        assert np.prod(np.subtract(stop, start)) <= 200
        cover[tuple(slice(a, b) for a, b in zip(start, stop))] += 1
    assert (cover == 1).all()
    assert split_into_tiles(shape, None) == [((0, 0, 0), shape)]
