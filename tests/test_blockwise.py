"""Block-by-block sliding windows: the blocks tile the image, stitching is exact for a network
without context, close for one with context, normalisation equals MONAI's, and the ensemble's
probability map written block by block equals the whole-image one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles
from torch import nn

from auto3dseg.engine.blockwise import (
    block_core,
    chunk_shape,
    halo_of,
    intensity_parameters,
    normalise_region,
    plan_blocks,
    predict_blocks,
)
from auto3dseg.engine.inference import predict_array
from auto3dseg.ensembling.probability_maps import (
    ProbabilityMapWriter,
    open_probability_map,
    quantize,
    write_probability_map,
)

CFG = {"patch_size": [16, 16, 16], "sw_batch_size": 2, "sw_overlap": 0.25, "output_activation": "sigmoid",
       "amp": False, "class_names": ["a", "b", "c"]}


class Pointwise(nn.Module):
    """Each voxel's logits from its own intensity only: any window gives the same value."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x, 2 * x], dim=1)


class LocalMean(nn.Module):
    """Logits from a 5³ neighbourhood mean: the output depends on context, as a network's does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = nn.functional.avg_pool3d(nn.functional.pad(x, (2,) * 6, mode="replicate"), 5, stride=1)
        return torch.cat([m, -m, 2 * m], dim=1) * 4


def _image(shape=(40, 52, 36), seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.normal(0, 1, (1, *shape)).astype(np.float32))


def test_blocks_tile_the_image_once_and_reads_stay_inside():
    shape, core, halo = (40, 52, 36), (16, 16, 16), halo_of([16, 16, 16])
    seen = np.zeros(shape, dtype=np.int32)
    for b in plan_blocks(shape, core, halo):
        seen[b.core] += 1
        for c, r, i, n in zip(b.core, b.read, b.inner, shape):
            assert 0 <= r.start <= c.start and c.stop <= r.stop <= n
            assert i.start == c.start - r.start and i.stop - i.start == c.stop - c.start
    assert (seen == 1).all()


def test_block_core_fits_the_budget_and_is_the_whole_image_when_it_can():
    assert block_core((40, 52, 36), (16, 16, 16), 3, 1e12) == (40, 52, 36)
    core = block_core((1000, 1000, 1000), (128, 128, 128), 48, 8 * 2**30)
    read = [c + 2 * h for c, h in zip(core, halo_of([128] * 3))]
    assert np.prod(read, dtype=np.float64) * 4 * (2 * 48 + 3) <= 8 * 2**30 and min(core) >= 128
    assert chunk_shape((1000, 1000, 1000), core) == core  # one chunk per core: whole-chunk writes


@pytest.mark.parametrize("budget", [2e5, 1e6])
def test_stitching_is_exact_without_context(budget):
    image = _image()
    whole = predict_array(Pointwise(), image, CFG, torch.device("cpu"), budget_bytes=1e12)
    blocks = list(predict_blocks(Pointwise(), image, CFG, torch.device("cpu"), budget_bytes=budget))
    assert len(blocks) > 4
    stitched = predict_array(Pointwise(), image, CFG, torch.device("cpu"), budget_bytes=budget)
    assert torch.allclose(stitched, whole, atol=1e-6)


def test_stitching_loses_nothing_with_context():
    """With context, windows themselves err near their edges (the whole-image sliding window too):
    blocks must be no further from the network run on the whole image at once than that."""
    image = _image()
    exact = torch.sigmoid(LocalMean()(image[None]))[0]
    whole = predict_array(LocalMean(), image, CFG, torch.device("cpu"), budget_bytes=1e12)
    stitched = predict_array(LocalMean(), image, CFG, torch.device("cpu"), budget_bytes=3e5)
    err_whole, err_blocks = float((whole - exact).abs().mean()), float((stitched - exact).abs().mean())
    assert err_blocks <= 1.2 * err_whole, (err_blocks, err_whole)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_normalisation_equals_monai_on_the_whole_image(dtype):
    rng = np.random.default_rng(1)
    raw = (rng.random((2, 20, 30, 10)) * 200).astype(dtype)
    region = (slice(None), slice(3, 17), slice(0, 30), slice(4, 9))
    for intensity, transform in [
        ({"mode": "zscore"}, NormalizeIntensity(nonzero=False, channel_wise=True)),
        ({"mode": "percentile", "lower": 1.0, "upper": 99.0},
         ScaleIntensityRangePercentiles(1.0, 99.0, 0.0, 1.0, clip=True, channel_wise=True)),
        ({"mode": "range", "a_min": 20.0, "a_max": 150.0}, ScaleIntensityRange(20.0, 150.0, 0.0, 1.0, clip=True)),
    ]:
        want = np.asarray(transform(torch.from_numpy(raw.astype(np.float32))))[region]
        got = normalise_region(raw[region], intensity_parameters(raw, intensity))
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=intensity["mode"])


def test_raw_blocks_equal_the_normalised_image():
    raw = (np.random.default_rng(2).random((1, 30, 40, 20)) * 255).astype(np.uint8)
    params = intensity_parameters(raw, {"mode": "zscore"})
    norm = torch.from_numpy(normalise_region(raw, params))
    want = predict_array(LocalMean(), norm, CFG, torch.device("cpu"), budget_bytes=2e5)
    got = torch.empty_like(want)
    for block, prob in predict_blocks(LocalMean(), raw, CFG, torch.device("cpu"), params, budget_bytes=2e5):
        got[(slice(None), *block.core)] = prob
    assert torch.allclose(got, want, atol=1e-6)


def test_probability_map_written_by_blocks_equals_the_whole_write(tmp_path):
    prob = torch.rand(3, 40, 52, 36)
    affine = np.diag([8.0, 8.0, 16.0, 1.0])
    affine[:3, 3] = [4.0, 8.0, 100.0]
    whole = open_probability_map(write_probability_map(prob, affine, tmp_path / "w_prob.zarr", ["a", "b", "c"],
                                                       "sigmoid"))
    core = (16, 16, 16)
    writer = ProbabilityMapWriter(tmp_path / "b_prob.zarr", 3, prob.shape[1:], affine,
                                  chunks=chunk_shape(prob.shape[1:], core))
    for b in plan_blocks(prob.shape[1:], core, (0, 0, 0)):
        writer.write(b.core, prob[(slice(None), *b.core)])
    assert not (tmp_path / "b_prob.zarr").exists()  # only the temporary until the last block is in
    blocks = open_probability_map(writer.commit(["a", "b", "c"], "sigmoid"))
    assert not list(tmp_path.glob(".tmp-*"))
    assert blocks.shape == (36, 52, 40) and blocks.channels == ["a", "b", "c"]  # class, z, y, x
    q = quantize(prob)
    for c in range(3):
        assert np.array_equal(blocks.channel(c), whole.channel(c))
        assert np.array_equal(blocks.channel(c), q[c].T)
        assert np.array_equal(blocks.mask(c, 0.3), (q[c].T.astype(np.float32) / 255) > 0.3)
    attrs = dict(__import__("zarr").open_array(str(tmp_path / "b_prob.zarr"), mode="r").attrs)
    assert attrs["voxel_size"] == [16.0, 8.0, 8.0] and attrs["translation"] == [100.0, 8.0, 4.0]


def test_older_nifti_maps_are_still_read(tmp_path):
    import nibabel as nib

    q = np.random.default_rng(3).integers(0, 256, (6, 5, 4, 2), dtype=np.uint8)  # x, y, z, class
    img = nib.Nifti1Image(q, np.eye(4))
    img.header.set_slope_inter(1 / 255, 0)
    nib.save(img, str(tmp_path / "old_prob.nii.gz"))
    m = open_probability_map(tmp_path / "old_prob.nii.gz")
    assert m.shape == (4, 5, 6) and m.n_channels == 2
    assert np.array_equal(m.channel(1), q[..., 1].T)


def test_a_missing_or_foreign_map_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="re-run --mode ensemble"):
        open_probability_map(tmp_path / "gone_prob.zarr")
    import zarr

    zarr.open_array(str(tmp_path / "x_prob.zarr"), mode="w", shape=(2, 3), dtype="u1")
    with pytest.raises(ValueError, match="x_prob.zarr: not a probability map"):
        open_probability_map(tmp_path / "x_prob.zarr")


@pytest.mark.parametrize("shape", [(1, 20, 18, 16), (1, 30, 26)])
def test_tta_is_the_mean_of_the_mirrored_predictions(shape):
    """``tta``: every mirror combination predicted and flipped back, averaged in probability space."""
    import itertools

    from auto3dseg.engine.blockwise import predict_blocks, tta_flips

    torch.manual_seed(0)
    dims = len(shape) - 1
    net = (torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d)(1, 2, 3, padding=1)
    img = np.random.default_rng(0).random(shape).astype(np.float32)
    cfg = {"patch_size": [8] * dims, "class_names": ["a", "b"], "output_activation": "sigmoid", "sw_batch_size": 2}

    def whole(image, c):
        out = torch.zeros(2, *shape[1:])
        for block, prob in predict_blocks(net, image, c, torch.device("cpu")):
            out[(slice(None), *block.core)] = prob
        return out

    manual = torch.zeros(2, *shape[1:])
    flips = [c for n in range(dims + 1) for c in itertools.combinations(range(1, dims + 1), n)]
    assert flips == tta_flips(dims, True) and len(flips) == 2 ** dims
    for f in flips:
        pred = whole(np.ascontiguousarray(np.flip(img, f)) if f else img, cfg)
        manual += pred.flip(f) if f else pred
    tta = whole(img, {**cfg, "tta": True})
    assert torch.allclose(tta, manual / len(flips), atol=1e-6)
    assert not torch.allclose(tta, whole(img, cfg), atol=1e-3)  # the mirrors do change a random network's output
