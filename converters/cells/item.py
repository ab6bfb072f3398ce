"""Convert one 2-D cell image (and its instance mask) to NIfTI: the converter's worker.

An image becomes ``images/<stem>.nii.gz``: uint8, three channels normalised between the
1st and 99th percentile of each channel's non-zero pixels (:mod:`converters.cells.images`),
stored as NIfTI ``x, y, 1, channel`` — the layout MONAI's ``LoadImage`` reads as a
channel-first ``[3, x, y, 1]`` array, which 2-D bundles squeeze to ``[3, x, y]``. Its
target goes to ``labels/<stem>.nii.gz`` (``x, y, 1``, values of
:mod:`datalists.cell_classes`) and the instance mask as it was read to
``instances/<stem>_label.tiff`` (for scoring). Row ``r``, column ``c`` of the image is
voxel ``(c, r, 0)``: NIfTI's x is the column. The affine carries the pixel size (1 unless
the TIFF states one, then µm) and, for a tile, its offset.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from converters.outputs import OutputError, atomic_write

__all__ = ["SKIP_REASONS", "binary_mask_problem", "constant_image_value", "convert_cell_image",
           "label_is_image_problem", "nifti_2d_affine", "tiff_pixel_size", "tile_grid", "tile_starts"]

#: reasons to skip an image that are no defect of the input (exit 0); every other problem is a failure (exit 1)
SKIP_REASONS = ("empty_label",)


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``n`` with at least ``overlap``.

    >>> tile_starts(100, 100, 10), tile_starts(250, 100, 20)
    ([0], [0, 80, 150])
    """
    if n <= tile:
        return [0]
    step = max(1, tile - overlap)
    starts = list(range(0, n - tile, step))
    return starts + [n - tile]


def tile_grid(shape: tuple[int, int], max_pixels: int | None, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles ``(y0, y1, x0, x1)`` of at most ``max_pixels`` pixels covering ``shape``.

    Square-ish tiles of side ``√max_pixels`` (a thin image gets long tiles), neighbours
    overlapping by ``overlap`` pixels; one tile when the image is small enough.

    >>> tile_grid((300, 200), 10_000, 20)[:2]
    [(0, 100, 0, 100), (0, 100, 80, 180)]
    >>> len(tile_grid((300, 200), None, 20))
    1
    """
    h, w = shape
    if not max_pixels or h * w <= max_pixels:
        return [(0, h, 0, w)]
    th = min(h, max(1, math.isqrt(int(max_pixels))))
    tw = min(w, max(1, int(max_pixels) // th))
    if tw == w:
        th = min(h, max(1, int(max_pixels) // w))
    return [(y, y + th, x, x + tw) for y in tile_starts(h, th, overlap) for x in tile_starts(w, tw, overlap)]


def tiff_pixel_size(path: str | os.PathLike) -> tuple[float, float] | None:
    """Pixel size (y, x) in µm when a TIFF states it in inches or centimetres, else None."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            tags = tif.pages[0].tags
            unit = tags.get("ResolutionUnit")
            xres, yres = tags.get("XResolution"), tags.get("YResolution")
            if unit is None or xres is None or yres is None:
                return None
            per_unit = {2: 25_400.0, 3: 10_000.0}.get(int(unit.value))  # µm per inch / per cm
            if per_unit is None:
                return None
            (xn, xd), (yn, yd) = xres.value, yres.value
            if not (xn and xd and yn and yd):
                return None
            return per_unit * yd / yn, per_unit * xd / xn
    except (tifffile.TiffFileError, OSError, ValueError, TypeError, KeyError):
        return None


def nifti_2d_affine(pixel_size: tuple[float, float], offset_yx: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The 4x4 affine of an ``x, y, 1`` slice: x = column, y = row, origin at ``offset``.

    >>> nifti_2d_affine((0.5, 0.25), (10, 4))[:2]
    array([[0.25, 0.  , 0.  , 1.  ],
           [0.  , 0.5 , 0.  , 5.  ]])
    """
    sy, sx = (float(v) for v in pixel_size)
    a = np.diag([sx, sy, 1.0, 1.0])
    a[0, 3], a[1, 3] = offset_yx[1] * sx, offset_yx[0] * sy
    return a


def _write_nifti(path: Path, data_yx: np.ndarray, affine: np.ndarray) -> None:
    """Write ``(H, W[, C])`` as NIfTI ``(W, H, 1[, C])``, via a temporary name."""
    import nibabel as nib

    arr = np.swapaxes(data_yx, 0, 1)
    arr = arr[:, :, None] if arr.ndim == 2 else arr[:, :, None, :]
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units(xyz="micron")
    atomic_write(path, lambda tmp: nib.save(img, str(tmp)))


def _skip(rec: dict, reason: str, detail: str) -> None:
    assert reason in SKIP_REASONS, reason
    rec.update(verdict="skipped", reason=reason, detail=detail)


def _fail(rec: dict, reason: str, detail: str) -> None:
    rec.update(verdict="failed", reason=reason, detail=detail)


def _warn(rec: dict, text: str) -> None:
    """Record a warning: printed by the converter and listed in the report; the image still converts."""
    rec["warnings"].append(text)


def _check_ids(rec: dict, labels: np.ndarray, path: str) -> bool:
    """Fail (return True) or warn about a label whose ids would convert wrong: a non-zero
    background, or ids wrapped around (:mod:`converters.cells.label_checks`)."""
    from converters.cells.label_checks import background_problem, wrapped_ids_problem

    background = background_problem(labels, path)
    if background and background.startswith(f"{path}: the cell with id "):  # one large real cell, most likely
        _warn(rec, background)
    elif background:
        _fail(rec, "background_not_zero", background)
        return True
    wrapped = wrapped_ids_problem(labels, path)
    if wrapped and wrapped[1]:
        _fail(rec, "ids_wrapped", wrapped[0])
        return True
    if wrapped:
        _warn(rec, wrapped[0])
    return False


def convert_cell_image(src: dict, output_dir: str | os.PathLike, max_pixels: int | None = None,
                       overlap: int = 64) -> dict:
    """Convert one image; return its record. Never raises for a bad image.

    Parameters
    ----------
    src : dict
        ``{"stem", "image", "label" (path or None)}``.
    output_dir : path
        The converter's output folder (``images/``, ``labels/``, ``instances/`` exist).
    max_pixels : int, optional
        Training images with more pixels are cut into overlapping tiles.
    overlap : int
        Overlap of neighbouring tiles in pixels.

    Returns
    -------
    dict
        ``verdict`` (converted, skipped, failed), ``reason``, ``detail``, the image's
        original shape and dtype, what was done to its channels, ``notes``, ``warnings``
        (things the user should check: a tiny image, ids split into many blobs) and its ``items``.
    """
    rec: dict[str, Any] = {"stem": src["stem"], "image": str(src["image"]), "label": src.get("label"),
                           "kind": "train" if src.get("label") else "test", "verdict": None, "reason": "",
                           "detail": "", "notes": [], "warnings": [], "items": []}
    t0 = time.perf_counter()
    out = Path(output_dir)
    try:
        _convert(src, out, rec, max_pixels, overlap)
    except OutputError:  # a full disk stops every image alike: the converter stops
        _remove_items(out, rec)
        raise
    except Exception as exc:  # one bad image must not abort the batch
        rec.update(verdict="failed", reason="error", detail=f"{type(exc).__name__}: {exc}",
                   traceback=traceback.format_exc(limit=4))
        _remove_items(out, rec)
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def _remove_items(out: Path, rec: dict) -> None:
    for item in rec["items"]:
        for key in ("image", "label"):
            if item.get(key):
                (out / item[key]).unlink(missing_ok=True)
    rec["items"] = []


def _non_finite(image: np.ndarray, path: str) -> str | None:
    """Why a float image cannot be converted (NaN/inf pixels), else None."""
    if image.dtype.kind != "f":
        return None
    bad = int(image.size - np.count_nonzero(np.isfinite(image)))
    if not bad:
        return None
    return (f"{path} has {bad} non-finite (NaN/inf) pixel value(s): their intensity is unknown. Fix or re-export "
            "the image (or remove it from --images), then run the same command again")


def constant_image_value(image: np.ndarray) -> str | None:
    """The value of an image whose every channel is constant (``"0"``, ``"(3, 0, 0)"``), else None."""
    flat = image.reshape(-1, image.shape[-1]) if image.ndim == 3 else image.reshape(-1, 1)
    if flat.shape[0] == 0:
        return "no pixel"
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    if not bool(np.all(lo == hi)):
        return None
    values = [v.item() for v in lo]
    return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


def binary_mask_problem(labels: np.ndarray, path: str) -> str | None:
    """Why an instance mask looks like a binary (semantic) mask, else None.

    A mask with exactly one non-zero value whose pixels form several separate blobs
    (8-connected) is a foreground mask, not one id per cell: converted as is, every
    blob would be one and the same cell. So is one whose only value is the largest of its
    type (255 in 8 bits, 65535 in 16), what image editors save for "foreground", even as
    one blob (cells that all touch); one cell alone has id 1.

    >>> m = np.zeros((6, 6), np.uint8); m[1:5, 1:5] = 255
    >>> binary_mask_problem(m, "a_label.tif")[:44]
    'a_label.tif looks like a binary mask, not in'
    >>> m[m > 0] = 1; binary_mask_problem(m, "a_label.tif") is None
    True
    """
    import fastremap
    from scipy import ndimage as ndi

    ids = fastremap.unique(labels)
    ids = ids[ids != 0]
    if ids.size != 1:
        return None
    value = ids[0].item()
    _, blobs = ndi.label(labels != 0, structure=np.ones((3, 3), bool))
    saturated = labels.dtype.kind == "u" and labels.dtype.itemsize <= 2 and value == np.iinfo(labels.dtype).max
    if blobs < 2 and not saturated:
        return None
    what = (f"one value ({value}) covers {blobs} separate blobs, which would all be one cell" if blobs >= 2 else
            f"its only value is {value}, the largest a {labels.dtype} pixel holds (what a foreground mask is saved "
            "as), and it would be one cell")
    return (f"{path} looks like a binary mask, not instance ids: {what}. Give each cell its own id (e.g. "
            "skimage.measure.label(mask > 0), or a watershed where cells touch) and save that as <stem>_label.tiff: "
            "the CellSeg format needs one id per cell")


def label_is_image_problem(labels: np.ndarray, image: np.ndarray, label_path: str, image_path: str) -> str | None:
    """Why a "label" is its image's pixels (a copy of the image, or of one of its channels), else None.

    Read as instance ids, every grey level of such a file would be one "cell": the label
    would be accepted with hundreds of cells that are no cells at all.

    >>> img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    >>> label_is_image_problem(img.copy(), np.stack([img] * 3, -1), "a_label.tif", "a.tif") is not None
    True
    >>> label_is_image_problem(np.zeros((3, 4), np.uint8), img, "a_label.tif", "a.tif") is None
    True
    """
    planes = [image] if image.ndim == 2 else [image[..., c] for c in range(image.shape[-1])]
    if any(p.shape == labels.shape and np.array_equal(p, labels) for p in planes):
        how = "holds the same pixels as"
    elif planes[0].shape == labels.shape and _derived_from(planes[0], labels):
        how = "is its grey levels rescaled: one label value for each value of"
    else:
        return None
    return (f"{label_path} {how} its image {image_path}: it is a copy of the image, not an instance mask (each "
            "grey level would become a cell). Give the image's real <stem>_label.tiff (one id per cell, 0 = "
            "background), or remove the file to use the image for testing")


def _derived_from(plane: np.ndarray, labels: np.ndarray, max_pixels: int = 1_000_000) -> bool:
    """Is ``labels`` a monotone function of the image's values (an 8-bit rescaled copy, say)?

    In a real instance mask one grey level falls in many cells and in the background. Being a
    function alone proves nothing when nearly every pixel has a grey level of its own (a 32-bit
    image): any label is then a function of the image. A rescaled copy is also monotone (its
    values rise, or fall, with the grey level), which cell ids interleaved along the grey
    levels are not. Checked on a regular sample of pixels; needs at least 16 grey levels and
    3 label values.

    Examples
    --------
    >>> img = np.arange(400, dtype=np.uint32).reshape(20, 20) * 1000  # every pixel its own grey level
    >>> _derived_from(img, (img // 25_000).astype(np.uint8)), _derived_from(img, (img % 7).astype(np.uint8))
    (True, False)
    """
    import fastremap  # its unique is ~15x numpy's on a million int64 values (sorting vs hashing)

    step = max(1, int(np.ceil(np.sqrt(plane.size / max_pixels))))
    img, lab = plane[::step, ::step].ravel().astype(np.int64), labels[::step, ::step].ravel().astype(np.int64)
    levels = fastremap.unique(img)
    if levels.size < 16 or fastremap.unique(lab).size < 3:
        return False
    base = np.int64(lab.max()) + np.int64(1)  # label values are 0..lab.max() (negative ids were refused on reading)
    pairs = np.sort(fastremap.unique(img * base + lab))  # by grey level: one pair per level when a function
    if pairs.size != levels.size:
        return False
    steps = np.diff(np.mod(pairs, base))  # the label value of each grey level, in the order of the grey levels
    return bool((steps >= 0).all() or (steps <= 0).all())


def _convert(src: dict, out: Path, rec: dict, max_pixels: int | None, overlap: int) -> None:
    from converters.cells.images import CellImageError, normalise_image, read_cell_image, read_cell_label
    from converters.cells.label_checks import small_image_note
    from converters.cells.targets import cell_targets

    stem = src["stem"]
    try:
        image, info = read_cell_image(src["image"])
    except CellImageError as exc:
        return _fail(rec, "unreadable", str(exc))
    h, w = int(image.shape[0]), int(image.shape[1])
    rec.update(original_shape=list(info.get("original_shape", image.shape)), shape=[h, w],
               dtype=str(info.get("dtype", image.dtype)), layout=info.get("layout"),
               channels_in=info.get("channels_in"), channels_used=info.get("channels_used"))
    rec["notes"] += list(info.get("notes", []))
    small = small_image_note((h, w), str(src["image"]), bool(src.get("label")))
    if small and src.get("label"):
        _warn(rec, small)
    elif small:
        rec["notes"].append(small)
    nonfinite = _non_finite(image, str(src["image"]))
    if nonfinite:
        return _fail(rec, "non_finite_pixels", nonfinite)
    constant = constant_image_value(image)
    if constant is not None and src.get("label"):
        return _fail(rec, "constant_image", f"{src['image']} is constant ({constant} everywhere): nothing to learn "
                     f"from it with {src['label']}; remove the pair or fix the image file")
    if constant is not None:  # a testing image still needs its <stem>_label.tiff in the submission
        rec["blank"] = True
        rec["notes"].append(f"blank image ({constant} everywhere): converted anyway so that the submission has its "
                            "<stem>_label.tiff; an empty prediction is the right answer for it")

    labels = None
    if src.get("label"):
        try:
            labels = read_cell_label(src["label"])
        except CellImageError as exc:
            reason = "multi_channel_label" if "multi-channel" in str(exc) else "unreadable_label"
            return _fail(rec, reason, str(exc))
        if tuple(labels.shape) != (h, w):
            return _fail(rec, "label_shape_mismatch", f"{src['label']} is {tuple(labels.shape)}, the image is "
                         f"{(h, w)}: pair each image with its own <stem>_label.tiff")
        if not labels.any():
            return _skip(rec, "empty_label", f"{src['label']} has no cell (all 0); remove it to use the image "
                         "for testing, or label its cells")
        copy = label_is_image_problem(labels, image, str(src["label"]), str(src["image"]))
        if copy:
            return _fail(rec, "label_is_image", copy)
        binary = binary_mask_problem(labels, src["label"])
        if binary:
            return _fail(rec, "binary_mask", binary)
        if _check_ids(rec, labels, str(src["label"])):
            return None

    norm, ninfo = normalise_image(image)
    del image
    rec["notes"] += list(ninfo.get("notes", []))
    rec["channel_percentiles"] = [c.get("percentiles") for c in ninfo.get("channels", [])] or None
    pixel = tiff_pixel_size(src["image"]) if str(src["image"]).lower().endswith((".tif", ".tiff")) else None
    rec["pixel_size"] = list(pixel) if pixel else [1.0, 1.0]
    if pixel:
        rec["notes"].append(f"pixel size {pixel[0]:.4g} x {pixel[1]:.4g} µm (from the TIFF)")

    if labels is None:  # a testing image: whole, never tiled (sliding windows cover any size)
        item = {"image": f"images/{stem}.nii.gz", "tile_start": [0, 0], "tile_stop": [h, w]}
        _write_nifti(out / item["image"], norm, nifti_2d_affine(rec["pixel_size"]))
        rec["items"].append(item)
        rec["verdict"] = "converted"
        return None

    import fastremap
    import tifffile

    target = cell_targets(labels)
    ids = fastremap.unique(labels)
    rec["cells"] = int(np.count_nonzero(ids))
    counts = np.bincount(target.ravel(), minlength=3)
    rec["class_pixels"] = {"background": int(counts[0]), "cell_interior": int(counts[1]),
                           "cell_contact": int(counts[2])}
    inst = out / "instances" / f"{stem}_label.tiff"
    atomic_write(inst, lambda tmp: tifffile.imwrite(tmp, labels, compression="zlib"))
    rec["instances"] = f"instances/{stem}_label.tiff"
    tiles = tile_grid((h, w), max_pixels, overlap)
    for i, (y0, y1, x0, x1) in enumerate(tiles):
        name = stem if len(tiles) == 1 else f"{stem}_t{i:03d}"
        item = {"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz",
                "tile_start": [y0, x0], "tile_stop": [y1, x1]}
        affine = nifti_2d_affine(rec["pixel_size"], (y0, x0))
        _write_nifti(out / item["image"], norm[y0:y1, x0:x1], affine)
        _write_nifti(out / item["label"], target[y0:y1, x0:x1], affine)
        rec["items"].append(item)
    rec["tiled"] = len(tiles) > 1
    if rec["tiled"]:
        rec["notes"].append(f"cut into {len(tiles)} tiles of at most {max_pixels} pixels, overlap {overlap} px")
    rec["verdict"] = "converted"
    return None
