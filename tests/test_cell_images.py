"""Reading and normalisation of CellSeg 2-D images and instance masks (converters.cells.images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import exposure

from converters.cells.images import (
    CellImageError,
    find_label,
    image_stem,
    normalise_image,
    percentiles_nonzero,
    read_cell_image,
    read_cell_label,
)

CELLS2D = Path(__file__).resolve().parents[2] / "shared" / "data" / "cells2d"
H, W = 40, 56


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _random(shape: tuple[int, ...], dtype, seed: int = 0) -> np.ndarray:
    rng = _rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.random(shape) * 1000).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)


def baseline_channel(channel: np.ndarray, lower: float = 1, upper: float = 99) -> np.ndarray:
    """The public baseline's rule for a channel whose percentile range is not empty."""
    p = np.percentile(channel[channel != 0], [lower, upper])
    assert p[1] - p[0] > 0.001, "reference only defined for non-degenerate channels"
    return exposure.rescale_intensity(channel, in_range=(p[0], p[1]),
                                      out_range="uint8").astype(np.uint8)


# ------------------------------------------------------------------------- names and pairing
@pytest.mark.parametrize("name, stem", [
    ("cell_00001.tif", "cell_00001"), ("a.TIFF", "a"), ("b.png", "b"), ("c.JPG", "c"),
    ("d.jpeg", "d"), ("e.Bmp", "e"), ("g.h.tiff", "g.h"), ("dir/x_label.tiff", "x_label"),
])
def test_image_stem(name, stem):
    assert image_stem(name) == stem


def test_image_stem_rejects_unknown_extension():
    with pytest.raises(CellImageError, match=r"x\.gif.*extension"):
        image_stem("x.gif")


def test_find_label_priority_and_absence(tmp_path):
    assert find_label(tmp_path / "missing", "a") is None
    assert find_label(tmp_path, "a") is None
    (tmp_path / "a_label.png").touch()
    assert find_label(tmp_path, "a") == tmp_path / "a_label.png"
    (tmp_path / "a_label.tif").touch()
    assert find_label(tmp_path, "a") == tmp_path / "a_label.tif"
    (tmp_path / "a_label.tiff").touch()
    assert find_label(tmp_path, "a") == tmp_path / "a_label.tiff"
    (tmp_path / "b_label.TIFF").touch()
    assert find_label(tmp_path, "b") == tmp_path / "b_label.TIFF"


# ------------------------------------------------------------------------- image reading
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_grayscale_tiff_keeps_dtype(tmp_path, dtype):
    data = _random((H, W), dtype)
    path = tmp_path / "g.tif"
    tifffile.imwrite(path, data)
    img, info = read_cell_image(path)
    assert img.shape == (H, W, 1) and img.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(img[..., 0], data)
    assert info["layout"] == "grayscale" and info["channels_in"] == info["channels_used"] == 1
    assert info["dtype"] == np.dtype(dtype).name and info["original_shape"] == (H, W)
    assert info["file"] == str(path)


def test_rgb_and_rgba_tiff(tmp_path):
    rgba = _random((H, W, 4), np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgba[..., :3])
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb")
    img, info = read_cell_image(tmp_path / "rgb.tif")
    assert info["layout"] == "rgb" and img.shape == (H, W, 3)
    np.testing.assert_array_equal(img, rgba[..., :3])
    img, info = read_cell_image(tmp_path / "rgba.tif")
    assert info["layout"] == "rgba" and info["channels_in"] == 4 and info["channels_used"] == 3
    assert any("alpha" in n for n in info["notes"])
    np.testing.assert_array_equal(img, rgba[..., :3])


def test_uint16_rgb_tiff_planar_channel_first(tmp_path):
    data = _random((3, H, W), np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", data, photometric="rgb", planarconfig="separate")
    img, info = read_cell_image(tmp_path / "p.tif")
    assert info["layout"] == "channel_first" and img.dtype == np.uint16
    np.testing.assert_array_equal(img, np.moveaxis(data, 0, -1))


@pytest.mark.parametrize("n", [4, 5])
def test_channel_last_multichannel_keeps_first_three(tmp_path, n):
    data = _random((H, W, n), np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", data, photometric="minisblack", planarconfig="contig")
    # without photometric tifffile stores 4 samples as RGBA, 5 as pages: shaped, axes 'QYX'
    tifffile.imwrite(tmp_path / "q.tif", data)
    for name in ("s.tif", "q.tif") if n == 5 else ("s.tif",):
        img, info = read_cell_image(tmp_path / name)
        assert info["layout"] == "channel_last", name
        assert info["channels_in"] == n and info["channels_used"] == 3
        assert any("first 3" in note for note in info["notes"])
        np.testing.assert_array_equal(img, data[..., :3])


def test_channel_first_by_size_and_by_axes(tmp_path):
    four = _random((4, H, W), np.int16)
    tifffile.imwrite(tmp_path / "c4.tif", four, photometric="minisblack")  # axes 'QYX'
    img, info = read_cell_image(tmp_path / "c4.tif")
    assert info["layout"] == "channel_first" and info["channels_in"] == 4
    np.testing.assert_array_equal(img, np.moveaxis(four[:3], 0, -1))

    five = _random((5, H, W), np.float32)
    tifffile.imwrite(tmp_path / "c5.tif", five, photometric="minisblack", metadata={"axes": "CYX"})
    img, info = read_cell_image(tmp_path / "c5.tif")
    assert info["layout"] == "channel_first" and info["channels_in"] == 5 and img.shape[2] == 3
    np.testing.assert_array_equal(img, np.moveaxis(five[:3], 0, -1))


def test_stacks_are_errors(tmp_path):
    tifffile.imwrite(tmp_path / "z.tif", _random((3, H, W), np.uint16),
                     photometric="minisblack", metadata={"axes": "ZYX"})
    with pytest.raises(CellImageError, match=r"z\.tif.*stack along axis 'Z'"):
        read_cell_image(tmp_path / "z.tif")
    # five leading planes without axes metadata: a stack, not channels
    tifffile.imwrite(tmp_path / "q.tif", _random((5, H, W), np.uint16), photometric="minisblack")
    with pytest.raises(CellImageError, match=r"q\.tif.*3-D stack"):
        read_cell_image(tmp_path / "q.tif")
    tifffile.imwrite(tmp_path / "n.tif", _random((2, 3, H, W), np.uint8), photometric="minisblack")
    with pytest.raises(CellImageError, match="non-singleton axes"):
        read_cell_image(tmp_path / "n.tif")


def test_singleton_axes_are_squeezed(tmp_path):
    gray = _random((1, H, W), np.uint16)
    tifffile.imwrite(tmp_path / "z1.tif", gray, photometric="minisblack",
                     metadata={"axes": "ZYX"})
    img, info = read_cell_image(tmp_path / "z1.tif")
    assert img.shape == (H, W, 1) and info["layout"] == "grayscale"
    assert info["original_shape"] == (1, H, W) and any("squeezed" in n for n in info["notes"])
    rgb = _random((1, 1, H, W, 3), np.uint8)
    tifffile.imwrite(tmp_path / "r.tif", rgb)
    img, info = read_cell_image(tmp_path / "r.tif")
    assert img.shape == (H, W, 3) and info["original_shape"] == (1, 1, H, W, 3)
    assert any("squeezed" in n for n in info["notes"])
    np.testing.assert_array_equal(img, rgb[0, 0])


def test_uncompressed_tiff_is_memory_mapped_read_only(tmp_path):
    data = _random((H, W, 3), np.uint16)
    tifffile.imwrite(tmp_path / "m.tif", data, photometric="rgb")
    img, info = read_cell_image(tmp_path / "m.tif")
    assert isinstance(img, np.memmap) or isinstance(img.base, np.memmap)
    assert info["memmap"] and not img.flags.writeable
    np.testing.assert_array_equal(img, data)
    tifffile.imwrite(tmp_path / "z.tif", data, photometric="rgb", compression="zlib")
    img, info = read_cell_image(tmp_path / "z.tif")
    assert not info["memmap"] and not isinstance(img, np.memmap)
    np.testing.assert_array_equal(img, data)


def test_png_jpeg_bmp(tmp_path):
    rgba = _random((H, W, 4), np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    img, info = read_cell_image(tmp_path / "a.png")
    assert info["layout"] == "rgba" and img.shape == (H, W, 3)
    np.testing.assert_array_equal(img, rgba[..., :3])
    Image.fromarray(rgba[..., :3]).save(tmp_path / "b.bmp")
    np.testing.assert_array_equal(read_cell_image(tmp_path / "b.bmp")[0], rgba[..., :3])
    Image.fromarray(rgba[..., :3]).save(tmp_path / "c.JPG")
    img, info = read_cell_image(tmp_path / "c.JPG")
    assert img.shape == (H, W, 3) and img.dtype == np.uint8 and info["layout"] == "rgb"
    g16 = _random((H, W), np.uint16)
    Image.fromarray(g16).save(tmp_path / "d.png")
    img, info = read_cell_image(tmp_path / "d.png")
    assert img.dtype == np.uint16 and info["layout"] == "grayscale"
    np.testing.assert_array_equal(img[..., 0], g16)


def _palette_png(path: Path, index: np.ndarray) -> list[int]:
    colours = [0, 0, 0, 200, 10, 20, 30, 220, 40, 50, 60, 240]
    im = Image.fromarray(index.astype(np.uint8), mode="P")
    im.putpalette(colours + [0] * (768 - len(colours)))
    im.save(path)
    return colours


def test_palette_png_image_reads_colours(tmp_path):
    index = _rng().integers(0, 4, size=(H, W))
    colours = np.array(_palette_png(tmp_path / "p.png", index), dtype=np.uint8).reshape(-1, 3)
    img, info = read_cell_image(tmp_path / "p.png")
    assert info["layout"] == "palette" and img.shape == (H, W, 3)
    np.testing.assert_array_equal(img, colours[index])


def test_palette_tiff_colours_for_images_indices_for_labels(tmp_path):
    index = _rng().integers(0, 4, size=(H, W)).astype(np.uint8)
    colormap = np.zeros((3, 256), np.uint16)
    colormap[:, :4] = [[0, 65535, 0, 1000], [0, 0, 65535, 2000], [0, 0, 0, 3000]]
    tifffile.imwrite(tmp_path / "p.tif", index, photometric="palette", colormap=colormap)
    img, info = read_cell_image(tmp_path / "p.tif")
    assert info["layout"] == "palette" and img.shape == (H, W, 3)
    np.testing.assert_array_equal(img, colormap.T[index])
    np.testing.assert_array_equal(read_cell_label(tmp_path / "p.tif"), index)


def test_grayscale_alpha_png_and_misnamed_file(tmp_path):
    la = _random((H, W, 2), np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    img, info = read_cell_image(tmp_path / "la.png")
    assert info["layout"] == "grayscale_alpha" and img.shape == (H, W, 1)
    np.testing.assert_array_equal(img[..., 0], la[..., 0])
    Image.fromarray(la[..., 0]).save(tmp_path / "png_inside.tif", format="PNG")
    np.testing.assert_array_equal(read_cell_image(tmp_path / "png_inside.tif")[0][..., 0],
                                  la[..., 0])


def test_reader_errors_name_the_file(tmp_path):
    with pytest.raises(CellImageError, match=r"nope\.tif.*does not exist"):
        read_cell_image(tmp_path / "nope.tif")
    (tmp_path / "bad.tif").write_bytes(b"not an image at all")
    with pytest.raises(CellImageError, match=r"bad\.tif.*cannot read"):
        read_cell_image(tmp_path / "bad.tif")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(CellImageError, match=r"x\.gif"):
        read_cell_image(tmp_path / "x.gif")


# ------------------------------------------------------------------------- label reading
@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int32, np.uint32, np.uint8])
def test_integer_tiff_labels_keep_dtype(tmp_path, dtype):
    lab = _rng().integers(0, 100, size=(H, W)).astype(dtype)
    tifffile.imwrite(tmp_path / "l.tiff", lab, compression="zlib")
    out = read_cell_label(tmp_path / "l.tiff")
    assert out.dtype == np.dtype(dtype) and out.shape == (H, W)
    np.testing.assert_array_equal(out, lab)


def test_label_singleton_axes_and_float_and_png(tmp_path):
    lab = _rng().integers(0, 50, size=(H, W)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tiff", lab[None, :, :, None])
    np.testing.assert_array_equal(read_cell_label(tmp_path / "s.tiff"), lab)
    tifffile.imwrite(tmp_path / "f.tiff", lab.astype(np.float32))
    out = read_cell_label(tmp_path / "f.tiff")
    assert out.dtype.kind == "i"
    np.testing.assert_array_equal(out, lab)
    Image.fromarray(lab.astype(np.uint8)).save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_cell_label(tmp_path / "g.png"), lab)


def test_palette_png_label_reads_indices(tmp_path):
    index = _rng().integers(0, 4, size=(H, W))
    _palette_png(tmp_path / "p_label.png", index)
    out = read_cell_label(tmp_path / "p_label.png")
    assert out.shape == (H, W) and out.dtype.kind in "ui"
    np.testing.assert_array_equal(out, index)


def test_label_errors(tmp_path):
    rgb = _rng().integers(0, 5, size=(H, W, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb_label.tiff", rgb)
    with pytest.raises(CellImageError, match=r"rgb_label\.tiff.*multi-channel label"):
        read_cell_label(tmp_path / "rgb_label.tiff")
    Image.fromarray(rgb).save(tmp_path / "rgb_label.png")
    with pytest.raises(CellImageError, match="multi-channel label"):
        read_cell_label(tmp_path / "rgb_label.png")
    neg = np.zeros((H, W), np.int16)
    neg[3, 4] = -2
    tifffile.imwrite(tmp_path / "neg_label.tiff", neg)
    with pytest.raises(CellImageError, match=r"neg_label\.tiff.*negative"):
        read_cell_label(tmp_path / "neg_label.tiff")
    tifffile.imwrite(tmp_path / "frac_label.tiff", np.full((H, W), 1.5, np.float32))
    with pytest.raises(CellImageError, match=r"frac_label\.tiff.*non-integer"):
        read_cell_label(tmp_path / "frac_label.tiff")
    tifffile.imwrite(tmp_path / "z_label.tiff", np.zeros((6, H, W), np.uint16),
                     photometric="minisblack")
    with pytest.raises(CellImageError, match=r"z_label\.tiff.*stack"):
        read_cell_label(tmp_path / "z_label.tiff")


# ------------------------------------------------------------------------- percentiles
PAIRS = [(1.0, 99.0), (0.0, 100.0), (25.0, 75.0), (50.0, 50.0), (0.5, 99.5), (33.3, 66.7), (1, 99)]


def _reference(channel, lower, upper):
    nz = channel[channel != 0]
    if nz.size == 0:
        return None
    return tuple(float(v) for v in np.percentile(nz, [lower, upper]))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int8, np.int32, np.uint32])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 100, 5000])
def test_histogram_percentiles_equal_numpy(dtype, size):
    for seed in range(6):
        rng = _rng(seed)
        full = _random((size,), dtype, seed)
        ties = rng.integers(0, 4, size=size).astype(dtype)  # many zeros and ties
        for data in (full, ties, full.reshape(1, -1), np.stack([ties, full], axis=-1)[..., 0]):
            for lower, upper in PAIRS:
                assert percentiles_nonzero(data, lower, upper) == _reference(data, lower, upper)


def test_histogram_percentiles_on_2d_strided_views():
    img = _random((64, 80, 3), np.uint16, seed=3)
    img[img < 20000] = 0
    for c in range(3):
        assert percentiles_nonzero(img[..., c]) == _reference(img[..., c], 1, 99)


def test_percentiles_all_zero_wide_ints_and_floats():
    assert percentiles_nonzero(np.zeros((5, 5), np.uint16)) is None
    assert percentiles_nonzero(np.zeros((5, 5), np.float32)) is None
    wide = _random((50, 50), np.uint32)  # range far beyond the histogram limit
    assert percentiles_nonzero(wide) == _reference(wide, 1, 99)
    f = _random((30, 30), np.float32)
    f[:5] = 0
    assert percentiles_nonzero(f, 2, 98) == _reference(f, 2, 98)
    with pytest.raises(ValueError):
        percentiles_nonzero(f, 99, 1)


# ------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_normalise_matches_baseline(dtype):
    img = _random((H, W, 3), dtype, seed=5)
    img[:4] = 0  # zero rows excluded from the percentiles
    before = img.copy()
    out, info = normalise_image(img)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], baseline_channel(img[..., c]))
        assert info["channels"][c]["rule"] == "rescale"
        assert info["channels"][c]["percentiles"] == _reference(img[..., c], 1, 99)
    np.testing.assert_array_equal(img, before)


def test_normalise_channel_counts():
    gray = _random((H, W, 1), np.uint16, seed=1)
    out, info = normalise_image(gray)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], baseline_channel(gray[..., 0]))
    assert any("repeated" in n for n in info["notes"])
    two = _random((H, W, 2), np.uint8, seed=2)
    out, info = normalise_image(two)
    np.testing.assert_array_equal(out[..., 1], baseline_channel(two[..., 1]))
    assert not out[..., 2].any() and info["channels"][2]["rule"] == "zero_padding"
    assert any("padded" in n for n in info["notes"])
    five = _random((H, W, 5), np.uint16, seed=3)
    out, _ = normalise_image(five)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], baseline_channel(five[..., c]))


def test_normalise_degenerate_channels():
    img = np.zeros((H, W, 3), np.uint16)
    img[..., 0] = _random((H, W), np.uint16)
    img[10:20, 10:30, 1] = 65535  # constant non-zero: the baseline casts 65535 -> 255 (wrap)
    img[10:20, 10:30, 2] = 256    # ... and 256 -> 0, losing the object entirely
    out, info = normalise_image(img)
    np.testing.assert_array_equal(out[..., 0], baseline_channel(img[..., 0]))
    expected = np.where(img[..., 1] != 0, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 1], expected)
    np.testing.assert_array_equal(out[..., 2], expected)
    for c in (1, 2):
        assert info["channels"][c]["constant"] and info["channels"][c]["rule"] == "nonzero_to_255"
    assert np.all(img[..., 2].astype(np.uint8) == 0)  # what the baseline would have produced
    zero = np.zeros((H, W, 3), np.uint16)
    zero[..., 0] = 7
    out, info = normalise_image(zero)
    assert not out[..., 1:].any() and info["channels"][1]["all_zero"]
    assert any("all zero" in n for n in info["notes"])


def test_normalise_float_nan_and_read_only_memmap_input(tmp_path):
    f = _random((H, W, 1), np.float32, seed=4)
    f[0, 0, 0] = np.nan
    out, info = normalise_image(f)
    assert out[0, 0, 0] == 0 and any("non-finite" in n for n in info["notes"])
    data = _random((H, W, 3), np.uint16, seed=6)
    tifffile.imwrite(tmp_path / "m.tif", data, photometric="rgb")
    img, _ = read_cell_image(tmp_path / "m.tif")
    out, _ = normalise_image(img)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], baseline_channel(data[..., c]))


# ------------------------------------------------------------------------- real samples
@pytest.mark.skipif(not CELLS2D.is_dir(), reason=f"real CellSeg samples absent ({CELLS2D})")
def test_real_samples():
    images = sorted((CELLS2D / "images").iterdir())
    assert images
    for path in images:
        img, info = read_cell_image(path)
        assert img.ndim == 3 and img.shape[2] in (1, 3), info
        label_path = find_label(CELLS2D / "labels", image_stem(path))
        assert label_path is not None, path
        label = read_cell_label(label_path)
        assert label.shape == img.shape[:2] and label.dtype.kind in "ui" and label.max() > 0
        out, ninfo = normalise_image(img)
        for c in range(3):
            src = img[..., min(c, img.shape[2] - 1)]
            np.testing.assert_array_equal(out[..., c], baseline_channel(src))
        assert all(ch["rule"] == "rescale" for ch in ninfo["channels"])
