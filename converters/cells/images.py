"""Reading and intensity normalisation of NeurIPS 2022 CellSeg images and instance masks.

Images come back as ``(H, W, C)`` in their original dtype (TIFFs memory-mapped when
possible) and become ``uint8 (H, W, 3)`` inputs by the baseline's per-channel percentile rule.

Layouts: singleton axes other than Y/X are squeezed. Named TIFF axes win: ``C``/``S`` are
channels, any other named axis (``Z``, ``T``...) of size > 1 is a stack and an error. Without
names (tifffile ``Q``/``I``) sizes decide for ``(a, b, c)``: channel-last when ``c <= 16`` and
``c < a, b`` (the challenge's layout, tried first), channel-first when ``a <= 4`` and
``a < b, c``, else an error. Alpha is dropped; more than 3 channels keep the first 3.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "CellImageError", "find_label", "image_stem", "normalise_image",
           "percentiles_nonzero", "read_cell_image", "read_cell_label"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".tiff", ".tif", ".png", ".jpg", ".jpeg", ".bmp")
LABEL_EXTENSIONS: tuple[str, ...] = (".tiff", ".tif", ".png", ".TIFF", ".TIF", ".PNG")
MAX_LEADING_CHANNELS = 4     # (C, H, W) without axes metadata
MAX_TRAILING_CHANNELS = 16   # (H, W, C) without axes metadata
EMPTY_RANGE = 0.001          # the baseline's threshold on p_upper - p_lower
_BLOCK_ELEMENTS = 1 << 22    # pixels per row block (~32 MiB of intp/float64 temporaries)
_HIST_MAX_BINS = 1 << 20     # widest value range histogrammed for 32/64-bit integers
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PIL_CONVERT = {"P": "RGB", "PA": "RGBA", "1": "L", "CMYK": "RGB", "YCbCr": "RGB",
                "LAB": "RGB", "HSV": "RGB", "RGBX": "RGB", "RGBa": "RGBA", "La": "LA"}
RGB, PALETTE = int(tifffile.PHOTOMETRIC.RGB), int(tifffile.PHOTOMETRIC.PALETTE)


class CellImageError(ValueError):
    """A CellSeg image or label file that cannot be used; the message names the file."""


def _err(path: Path | str, what: str, todo: str) -> CellImageError:
    return CellImageError(f"{path}: {what}; {todo}")


def image_stem(path: str | Path) -> str:
    """The stem pairing ``<stem>.<ext>`` with ``<stem>_label.tiff``.

    Only the final known extension is removed (case-insensitive): ``"a.b.tif"`` -> ``"a.b"``.

    Examples
    --------
    >>> image_stem("images/cell_00001.TIFF")
    'cell_00001'
    """
    name = Path(path).name
    for ext in IMAGE_EXTENSIONS:
        if name.lower().endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    raise _err(path, "not a CellSeg image name",
               f"use one of the extensions {', '.join(IMAGE_EXTENSIONS)}")


def find_label(labels_dir: str | Path, stem: str) -> Path | None:
    """The label of ``stem`` in ``labels_dir``, or None (also when the folder is absent).

    Tries ``<stem>_label.tiff``, ``.tif``, ``.png``, then the upper-case extensions.

    Examples
    --------
    >>> find_label("/nonexistent", "cell_00001") is None
    True
    """
    candidates = (Path(labels_dir) / f"{stem}_label{ext}" for ext in LABEL_EXTENSIONS)
    return next((c for c in candidates if c.is_file()), None)


# ----------------------------------------------------------------------------- reading
def _read_tiff(path: Path, *, memmap: bool, colours: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Series 0 of a TIFF (memory-mapped when possible) with its axes and sample info."""
    notes: list[str] = []
    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            page = series.pages[0] if series.pages else tf.pages[0]
            meta = {"axes": series.axes, "photometric": int(page.photometric),
                    "extrasamples": tuple(int(e) for e in (page.extrasamples or ()))}
            arr = None
            if memmap and series.dataoffset is not None:  # uncompressed and contiguous
                with contextlib.suppress(ValueError, OSError):  # else read it below
                    arr = tifffile.memmap(path, series=0, mode="r")
                    notes.append("read memory-mapped (read-only)")
            if arr is None:
                arr = series.asarray()
            if colours and meta["photometric"] == PALETTE and page.colormap is not None:
                arr = np.ascontiguousarray(page.colormap.T)[np.asarray(arr)]  # (H, W, 3)
                meta.update(axes=series.axes + "S", photometric=RGB, layout="palette")
                notes.append("palette colours expanded to RGB (uint16 colormap values)")
            if len(tf.series) > 1:
                notes.append(f"file has {len(tf.series)} series; only the first is used")
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, zlib.error, RuntimeError) as exc:
        # zlib.error / imagecodecs' RuntimeErrors: compressed data cut short (a truncated file)
        raise _err(path, f"cannot read TIFF ({exc})", "check that the file is a complete TIFF") \
            from exc
    meta["notes"] = notes
    return arr, meta


def _read_pil(path: Path, *, colours: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """PNG/JPEG/BMP via Pillow; palette images as colours (images) or indices (labels)."""
    notes: list[str] = []
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if colours and mode in _PIL_CONVERT:
                target = "RGBA" if mode == "P" and "transparency" in im.info else _PIL_CONVERT[mode]
                im = im.convert(target)
                notes.append(f"{mode!r} mode converted to {target!r}")
            arr = np.asarray(im)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _err(path, f"cannot read image ({exc})",
                   "check that the file is a complete PNG/JPEG/BMP") from exc
    n = arr.shape[2] if arr.ndim == 3 else 1
    return arr, {"axes": "YXS" if arr.ndim == 3 else "YX", "photometric": RGB if n >= 3 else 1,
                 "extrasamples": (2,) if n in (2, 4) else (), "notes": notes,
                 "layout": "palette" if colours and mode in ("P", "PA") else None}


def _read_any(path: Path, *, memmap: bool, colours: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Dispatch on the file's magic bytes (a mis-named PNG still reads), not its extension."""
    if not path.is_file():
        raise _err(path, "file does not exist", "check the path and the images/ labels/ folders")
    image_stem(path)  # raises for unsupported extensions
    with open(path, "rb") as fh:
        is_tiff = fh.read(4) in _TIFF_MAGIC
    return _read_tiff(path, memmap=memmap, colours=colours) if is_tiff \
        else _read_pil(path, colours=colours)


def _squeeze(arr: np.ndarray, axes: str | None) -> tuple[np.ndarray, str | None]:
    """Drop singleton axes, never a named Y/X; generic Q/I axes count as unnamed."""
    if axes is None or len(axes) != arr.ndim or any(a in "QI" for a in axes):
        axes = None  # tifffile's Q/I series put Y/X on the last two dims whatever they hold
    keep = [i for i, n in enumerate(arr.shape) if n > 1 or (axes is not None and axes[i] in "YX")]
    if len(keep) < 2:  # e.g. a 1 x W image: keep the last two axes
        keep = list(range(max(0, arr.ndim - 2), arr.ndim))
    drop = tuple(i for i in range(arr.ndim) if i not in keep)
    new_axes = None if axes is None else "".join(axes[i] for i in keep)
    return (np.squeeze(arr, axis=drop) if drop else arr), new_axes


def _channel_axis(path: Path, shape: tuple[int, ...], axes: str | None, kind: str) -> int | None:
    """Index of the channel axis of a squeezed array (None for a single 2-D plane)."""
    if len(shape) == 2:
        return None
    if len(shape) != 3:
        raise _err(path, f"{kind} has {len(shape)} non-singleton axes {shape} (axes {axes})",
                   "save a single 2-D plane, (H, W, C) or (C, H, W)")
    other = [i for i, a in enumerate(axes or "") if a not in "YX"]
    if len(other) == 1:
        if axes[other[0]] in "CS":
            return other[0]
        raise _err(path, f"{kind} is a stack along axis {axes[other[0]]!r} of size "
                   f"{shape[other[0]]} (shape {shape}, axes {axes})",
                   "2-D images only: save one plane, or mark channels with TIFF axes 'CYX'")
    a, b, c = shape
    if c <= MAX_TRAILING_CHANNELS and c < a and c < b:
        return 2
    if a <= MAX_LEADING_CHANNELS and a < b and a < c:
        return 0
    todo = "save a single 2-D (H, W) mask" if kind == "label" else (
        f"2-D images only: channels must be a leading axis <= {MAX_LEADING_CHANNELS} or a "
        f"trailing axis <= {MAX_TRAILING_CHANNELS}, or be declared with TIFF axes 'CYX'")
    raise _err(path, f"{kind} of shape {shape} looks like a 3-D stack, not channels", todo)


def read_cell_image(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a CellSeg image as ``(H, W, C)``, ``1 <= C <= 3``, in its original dtype.

    Uncompressed contiguous TIFFs are memory-mapped read-only (an ``np.memmap`` or a view
    of one): never write into the result. Palette PNG/TIFF images give RGB colours.

    Returns
    -------
    image : np.ndarray
        ``(H, W, C)``, the file's dtype; alpha dropped, at most the first 3 channels.
    info : dict
        ``file, original_shape, dtype, layout, channels_in, channels_used, axes, memmap,
        notes`` (human-readable list of what was done).

    Raises
    ------
    CellImageError
        Missing/unreadable file, unsupported dtype, 3-D stack or ambiguous layout.

    Examples
    --------
    >>> img, info = read_cell_image("images/cell_00001.tif")  # doctest: +SKIP
    >>> img.shape, info["layout"]  # doctest: +SKIP
    ((512, 512, 3), 'rgb')
    """
    path = Path(path)
    raw, meta = _read_any(path, memmap=True, colours=True)
    notes = list(meta["notes"])
    original_shape = tuple(int(n) for n in raw.shape)
    if raw.dtype.kind == "b":
        raw = raw.view(np.uint8)
        notes.append("boolean image read as uint8 0/1")
    if raw.dtype.kind not in "uif":
        raise _err(path, f"unsupported pixel type {raw.dtype}", "convert to integers or floats")
    arr, axes = _squeeze(raw, meta["axes"])
    if arr.shape != raw.shape:
        notes.append(f"squeezed singleton axes {original_shape} -> {arr.shape}")
    ch_axis = _channel_axis(path, arr.shape, axes, "image")
    if ch_axis is None:
        layout, image = "grayscale", arr[:, :, np.newaxis]
    else:
        image = arr if ch_axis == 2 else np.moveaxis(arr, 0, -1)
        n = image.shape[2]
        is_rgb = meta["photometric"] == RGB and n >= 3
        extras = meta["extrasamples"]
        if extras and extras[0] in (1, 2) and n == (4 if is_rgb else 2):  # assoc./unassoc. alpha
            layout = "rgba" if is_rgb else "grayscale_alpha"
            image = image[:, :, : n - 1]
            notes.append(f"alpha channel dropped ({layout})")
        elif is_rgb and n == 3 and ch_axis == 2:
            layout = "rgb"
        else:
            layout = "channel_last" if ch_axis == 2 else "channel_first"
        if ch_axis == 0:
            notes.append(f"channel-first {arr.shape} viewed as (H, W, C)")
        if image.shape[2] > 3:
            notes.append(f"kept the first 3 of {image.shape[2]} channels")
            image = image[:, :, :3]
    info = {"file": str(path), "original_shape": original_shape, "dtype": image.dtype.name,
            "layout": meta.get("layout") or layout,
            "channels_in": 1 if ch_axis is None else int(arr.shape[ch_axis]),
            "channels_used": int(image.shape[2]), "axes": meta["axes"],
            "memmap": isinstance(image, np.memmap) or isinstance(image.base, np.memmap),
            "notes": notes}
    return image, info


def read_cell_label(path: str | Path) -> np.ndarray:
    """Read an instance mask as a 2-D integer array (0 background).

    Integer dtypes are kept; integer-valued float labels become int32 (int64 if needed);
    palette PNGs give their index values; singleton axes are squeezed.

    Raises
    ------
    CellImageError
        Multi-channel (e.g. RGB) or 3-D labels, negative ids, non-integer float values.

    Examples
    --------
    >>> read_cell_label("labels/cell_00001_label.tiff").shape  # doctest: +SKIP
    (512, 512)
    """
    path = Path(path)
    raw, meta = _read_any(path, memmap=False, colours=False)
    arr, axes = _squeeze(raw, meta["axes"])
    if arr.ndim != 2:
        _channel_axis(path, arr.shape, axes, "label")  # raises for stacks and N-D labels
        raise _err(path, f"multi-channel label of shape {arr.shape}",
                   "save instance ids as a single-channel integer image (H, W)")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.floor(arr)):
            raise _err(path, "float label with non-integer or non-finite values",
                       "save instance ids as an integer image")
        big = arr.size and max(abs(float(arr.min())), float(arr.max())) >= 2**31
        arr = arr.astype(np.int64 if big else np.int32)
    elif arr.dtype.kind not in "ui":
        raise _err(path, f"unsupported label type {arr.dtype}", "save an integer image")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise _err(path, f"negative instance ids (minimum {int(arr.min())})",
                   "labels must be 0 for background and positive ids for cells")
    return arr


# ----------------------------------------------------------------------------- intensity
def _row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    step = max(1, _BLOCK_ELEMENTS // max(1, n_cols))
    for r0 in range(0, n_rows, step):
        yield slice(r0, min(n_rows, r0 + step))


def _dtype_offset(dt: np.dtype) -> int:
    """The smallest value of an 8/16-bit integer type (the value of LUT/histogram bin 0)."""
    return 0 if dt.kind == "u" else -(1 << (8 * dt.itemsize - 1))


def _histogram(c2: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Counts of every value of a 2-D integer channel and the value of bin 0 (None: too wide)."""
    dt = c2.dtype
    if dt.itemsize <= 2:
        offset, size = _dtype_offset(dt), 1 << (8 * dt.itemsize)
    elif c2.size == 0:
        return np.zeros(1, np.int64), 0
    else:
        offset, top = int(c2.min()), int(c2.max())
        if top - offset >= _HIST_MAX_BINS:
            return None
        size = top - offset + 1
    counts = np.zeros(size, dtype=np.int64)
    for rows in _row_blocks(*c2.shape):
        block = c2[rows]
        if dt.itemsize > 2:
            block = (block - dt.type(offset)).astype(np.intp)
        elif offset:
            block = np.subtract(block, offset, dtype=np.int32)
        counts += np.bincount(block.ravel(), minlength=size)
    return counts, offset


def _percentiles_from_histogram(counts: np.ndarray, offset: int, dtype: np.dtype,
                                lower: float, upper: float) -> tuple[float, float] | None:
    """numpy's 'linear' percentile from cumulative counts, with numpy's own float operations."""
    if 0 <= -offset < counts.size:
        counts[-offset] = 0  # zeros do not count
    cum = np.cumsum(counts)
    n = int(cum[-1])
    if n == 0:
        return None
    virtual = (n - 1) * np.true_divide([lower, upper], 100)  # as numpy's _quantile/_get_indexes
    prev = np.floor(virtual)
    nxt = prev + 1
    prev[virtual >= n - 1], nxt[virtual >= n - 1] = -1, -1
    prev[virtual < 0], nxt[virtual < 0] = 0, 0
    prev, nxt = prev.astype(np.intp), nxt.astype(np.intp)
    gamma = np.asarray(virtual - prev, dtype=virtual.dtype)

    def order_stats(k: np.ndarray) -> np.ndarray:  # k-th smallest non-zero values
        bins = np.searchsorted(cum, np.where(k < 0, n + k, k), side="right")
        return np.array([int(i) + offset for i in bins], dtype=dtype)

    a, b = order_stats(prev), order_stats(nxt)
    diff = b - a  # in the channel's dtype, as in numpy's _lerp (int16 wraps there too)
    result = np.add(a, diff * gamma)
    np.subtract(b, diff * (1 - gamma), out=result, where=gamma >= 0.5, casting="unsafe",
                dtype=result.dtype)
    return float(result[0]), float(result[1])


def percentiles_nonzero(channel: np.ndarray, lower: float = 1.0,
                        upper: float = 99.0) -> tuple[float, float] | None:
    """The ``lower``/``upper`` percentiles of the non-zero pixels, or None if all are zero.

    Equals ``np.percentile(channel[channel != 0], [lower, upper])`` exactly. Integer channels
    are histogrammed in row blocks and the order statistics read off the cumulative counts
    (no sort, no float copy); floats and 32/64-bit integers spanning more than 2**20 values
    use ``np.percentile``. Non-finite float pixels are ignored like zeros.

    Examples
    --------
    >>> percentiles_nonzero(np.array([[0, 1, 2], [3, 4, 0]], dtype=np.uint16), 0, 100)
    (1.0, 4.0)
    """
    if not 0 <= lower <= upper <= 100:
        raise ValueError(f"need 0 <= lower <= upper <= 100, got {lower}, {upper}")
    channel = np.asarray(channel)
    if channel.dtype.kind == "b":
        channel = channel.view(np.uint8)
    if channel.dtype.kind in "ui":
        c2 = channel if channel.ndim == 2 else channel.reshape(-1, channel.shape[-1]) \
            if channel.ndim > 2 else channel.reshape(1, -1)
        hist = _histogram(c2)
        if hist is not None:
            native = channel.dtype.newbyteorder("=")
            return _percentiles_from_histogram(hist[0], hist[1], native, lower, upper)
        values = channel[channel != 0]
    elif channel.dtype.kind == "f":
        values = channel[(channel != 0) & np.isfinite(channel)]
    else:
        raise ValueError(f"unsupported channel dtype {channel.dtype}")
    if values.size == 0:
        return None
    p = np.percentile(values, [lower, upper], overwrite_input=True)
    return float(p[0]), float(p[1])


def _rescale_into(out: np.ndarray, channel: np.ndarray, imin: float, imax: float) -> None:
    """The element-wise operations of ``rescale_intensity(channel, in_range=(imin, imax),
    out_range='uint8')`` (clip, - imin, / range, * 255 + 0, truncate) into the uint8 view
    ``out`` in row blocks; 8/16-bit integers via a lookup table made with those float64 ops.
    """
    dt = channel.dtype
    if dt.kind in "ui" and dt.itemsize <= 2:
        offset = _dtype_offset(dt)
        values = np.arange(offset, offset + (1 << (8 * dt.itemsize)), dtype=np.float64)
        lut = ((np.clip(values, imin, imax) - imin) / (imax - imin) * 255.0 + 0.0).astype(np.uint8)
        for rows in _row_blocks(*channel.shape):
            block = channel[rows]
            out[rows] = lut[np.subtract(block, offset, dtype=np.int32) if offset else block]
        return
    for rows in _row_blocks(*channel.shape):  # same ops as skimage, in the input's float type
        block = np.clip(channel[rows], imin, imax)
        block = (block - imin) / (imax - imin) * 255.0 + 0.0
        block[np.isnan(block)] = 0
        np.copyto(out[rows], block, casting="unsafe")


def _nonzero_to_255(out: np.ndarray, channel: np.ndarray) -> None:
    for rows in _row_blocks(*channel.shape):
        block = channel[rows]
        flag = (block != 0) & ~np.isnan(block) if block.dtype.kind == "f" else block != 0
        np.multiply(flag, np.uint8(255), out=out[rows])


def normalise_image(image: np.ndarray, lower: float = 1.0,
                    upper: float = 99.0) -> tuple[np.ndarray, dict[str, Any]]:
    """Baseline intensity normalisation: ``(H, W, C)`` -> ``uint8 (H, W, 3)``.

    Grayscale is repeated to 3 channels, 2 channels get a zero third one, more than 3 keep
    the first 3. Each channel is mapped linearly from ``[p_lower, p_upper]`` of its non-zero
    pixels to ``[0, 255]``, clipped and truncated: pixel for pixel the baseline's
    ``normalize_channel``, except where that goes wrong:

    * all-zero channel: stays 0 (as in the baseline), noted;
    * empty range ``p_upper - p_lower <= 0.001``: the baseline casts raw values to uint8
      (uint16 256 -> 0, 300 -> 44); here non-zero pixels -> 255, zeros -> 0, noted;
    * float NaN -> 0; non-finite pixels are left out of the percentiles.

    Channel by channel, in row blocks, into a preallocated output; the input is not written.

    Returns
    -------
    out : np.ndarray
        ``uint8 (H, W, 3)``.
    info : dict
        ``lower, upper, dtype_in, channels_in, channels`` (per output channel: ``source``,
        ``percentiles``, ``all_zero``, ``constant``, ``rule``) and ``notes``.

    Examples
    --------
    >>> img = np.array([[[0], [100]], [[200], [300]]], dtype=np.uint16)
    >>> normalise_image(img)[0][..., 0]
    array([[  0,   0],
           [127, 255]], dtype=uint8)
    """
    image = np.asarray(image)
    image = image[:, :, np.newaxis] if image.ndim == 2 else image
    if image.ndim != 3 or image.shape[2] < 1:
        raise ValueError(f"expected an (H, W, C) image, got shape {image.shape}")
    image = image.view(np.uint8) if image.dtype.kind == "b" else image
    if image.dtype.kind not in "uif":
        raise ValueError(f"unsupported image dtype {image.dtype}")
    h, w, n_in = image.shape
    out = np.zeros((h, w, 3), dtype=np.uint8)
    sources, notes = {1: ([0, 0, 0], ["grayscale repeated to 3 channels"]),
                      2: ([0, 1, None], ["2 channels: third channel padded with zeros"])}.get(
        n_in, ([0, 1, 2], [f"kept the first 3 of {n_in} channels"] if n_in > 3 else []))
    channels: list[dict[str, Any]] = []
    for i, src in enumerate(sources):
        if src is None:
            channels.append({"source": None, "percentiles": None, "all_zero": True,
                             "constant": False, "rule": "zero_padding"})
        elif n_in == 1 and i > 0:
            out[:, :, i] = out[:, :, 0]
            channels.append(dict(channels[0]))
        else:
            channel = image[:, :, src]
            p = percentiles_nonzero(channel, lower, upper)
            rec = {"source": src, "percentiles": p, "all_zero": p is None,
                   "constant": p is not None and not p[1] - p[0] > EMPTY_RANGE, "rule": "rescale"}
            if p is None:
                rec["rule"] = "all_zero"
                notes.append(f"channel {src} is all zero: output stays 0")
            elif rec["constant"]:
                rec["rule"] = "nonzero_to_255"
                notes.append(f"channel {src} has an empty percentile range {p}: non-zero pixels "
                             "set to 255 (the baseline would cast raw values to uint8)")
                _nonzero_to_255(out[:, :, i], channel)
            else:
                _rescale_into(out[:, :, i], channel, p[0], p[1])
                if channel.dtype.kind == "f" and not np.isfinite(channel).all():
                    notes.append(f"channel {src}: non-finite pixels left out of the "
                                 "percentiles, NaN set to 0")
            channels.append(rec)
    info = {"lower": float(lower), "upper": float(upper), "dtype_in": image.dtype.name,
            "channels_in": n_in, "channels": channels, "notes": notes}
    return out, info
