"""The datalist contract's plumbing: the JSON Schema shipped beside it, ``DatalistError``, loading a
datalist file with messages that name the line, and the small readers the checks share."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

#: The JSON Schema shipped next to this module.
SCHEMA_PATH: Path = Path(__file__).with_name("datalist.schema.json")
#: ``format`` values look like ``"cellmap-auto3dseg-datalist/1"``.
FORMAT_PREFIX = "cellmap-auto3dseg-datalist/"
#: The newest format version this validator understands.
FORMAT_VERSION = 1

_SECTIONS = ("training", "validation", "testing")
_LABELLED_SECTIONS = ("training", "validation")
_PATH_KEYS = ("image", "label")
_KNOWN_ITEM_KEYS = ("image", "label", "fold", "annotated", "annotated_mask")
_ITEM_EXAMPLE = '{"image": "images/x.nii.gz"}'
_TRAIN_EXAMPLE = '{"image": "images/x.nii.gz", "label": "labels/x.nii.gz", "fold": 0}'
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_TIFF_SUFFIXES = (".tif", ".tiff")

# What to do when a known key has the wrong type; appended to schema messages.
_KEY_FIXES = {
    "image": "give a path relative to the data root, or a list of such paths (one per channel)",
    "label": "give the label file's path relative to the data root",
    "fold": "use a whole number in 0..num_folds-1",
    "annotated": "annotated must be a list of integer class ids from class_table, e.g. [1, 2]",
    "annotated_mask": "use an integer whose bit (id-1) is set for each annotated class id",
    "spacing": "give 3 positive numbers (2 for 2D images), e.g. [8.0, 8.0, 8.0]",
    "num_folds": "use a whole number >= 1 (5 is usual)",
    "class_table": 'each row looks like {"id": 1, "name": "mito_mem", "parts": []}',
    "labels": 'map str(class id) to its name, e.g. {"0": "background", "1": "mito_mem"}',
    "format": 'use "cellmap-auto3dseg-datalist/1"',
    "items_file": "give the side file's path relative to the datalist's folder",
}
_REQUIRED_FIXES = {
    "training": f"add a 'training' list of items like {_TRAIN_EXAMPLE}",
    "image": "every item needs an 'image' path relative to the data root",
    "label": "training and validation items need a 'label' path relative to the data root",
    "id": "every class_table row needs an integer 'id' (1..K)",
    "name": "every class_table row needs a 'name'",
}


class DatalistError(ValueError):
    """A datalist has one or more problems.

    Parameters
    ----------
    problems : sequence of str
        One plain-language message per problem; each names the file and the item.
    source : str, optional
        The datalist file (or ``"<datalist>"`` for an in-memory dict).

    Attributes
    ----------
    problems : list of str
        Every problem found, in the order found.
    source : str or None
        As given.
    """

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems: list[str] = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        n = len(self.problems)
        where = f" in {self.source}" if self.source else ""
        head = f"{n} datalist problem{'s' if n != 1 else ''}{where}:"
        return "\n".join([head] + [f"  {i}. {p}" for i, p in enumerate(self.problems, 1)])


# --------------------------------------------------------------------------- loading


def _binary_kind(p: Path) -> str:
    """``", but a gzip file (a NIfTI image?)"`` and the like, from the first bytes of ``p``."""
    with open(p, "rb") as f:
        head = f.read(8)
    kinds = {b"\x1f\x8b": "a gzip file (a NIfTI image .nii.gz?)", b"II*\x00": "a TIFF image", b"MM\x00*": "a TIFF image",
             b"\x89PNG": "a PNG image", b"PK\x03\x04": "a zip file", b"\xff\xd8": "a JPEG image"}
    found = next((k for m, k in kinds.items() if head.startswith(m)), None)
    return f", but {found}" if found else ", but a binary file"


def load_datalist(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a datalist JSON file.

    Parameters
    ----------
    path : str or path-like
        The datalist file.

    Returns
    -------
    dict
        The parsed top-level object.

    Raises
    ------
    DatalistError
        If the file is missing or unreadable, is not valid JSON (the message gives
        the line and column), or its top level is not a JSON object.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a folder, not a file" if p.is_dir() else "not found"
        raise DatalistError(
            [f"{p}: datalist file {what} (absolute path {p.absolute()}); check the path, "
             "or write the datalist with python -m converters.cellmap.convert"],
            source=str(p),
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:  # binary: say what it looks like, not the codec's complaint
        raise DatalistError([f"{p}: not a datalist (a JSON text file){_binary_kind(p)}: give the converter's "
                             "datalist.json"], source=str(p)) from exc
    except OSError as exc:
        raise DatalistError([f"{p}: cannot read the datalist: {exc}"], source=str(p)) from exc
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except RepeatedKey as exc:
        raise DatalistError([f"{p}: {exc}"], source=str(p)) from None
    except json.JSONDecodeError as exc:
        raise DatalistError(
            [f"{p}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
             f"fix the file there (python -m json.tool {p} points at the same spot)"],
            source=str(p),
        ) from exc
    if not isinstance(data, dict):
        raise DatalistError(
            [f"{p}: the top level must be a JSON object with a 'training' list, "
             f"got {_json_type(data)}; wrap it as {{\"training\": [...]}}"],
            source=str(p),
        )
    return data


class RepeatedKey(ValueError):
    """A JSON object that gives one key twice (``json`` keeps the last value without a word)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing a key given twice, naming the object (by its ``image`` when
    it is an item).

    >>> json.loads('{"fold": 0, "image": "a.nii.gz", "fold": 1}', object_pairs_hook=_unique_keys)
    Traceback (most recent call last):
    ...
    datalists.schema.RepeatedKey: key 'fold' given twice in the item of image 'a.nii.gz' (values 0 and 1): JSON keeps the last one without a word; keep one
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            keys = dict(pairs)
            if isinstance(keys.get("image"), str):
                where = f"the item of image {keys['image']!r}"
            elif "training" in keys or "testing" in keys:
                where = "the top level"
            elif "id" in keys and "name" in keys:
                where = f"the class-table row of id {keys['id']!r}"
            else:
                where = "one object"
            shown = [_brief(out[key]), _brief(value)]
            raise RepeatedKey(f"key {key!r} given twice in {where} (values {shown[0]} and {shown[1]}): JSON keeps the "
                              "last one without a word; keep one")
        out[key] = value
    return out


def _brief(value: Any) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else repr(value)[:40]


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """Return the datalist JSON Schema (``datalists/datalist.schema.json``).

    Returns
    -------
    dict
        The schema, parsed; cached, do not modify.
    """
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- helpers


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


_TYPE_WORDS = {
    "string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
    "array": "a list", "object": "an object", "null": "null",
}


def _type_words(types: Any) -> str:
    if isinstance(types, str):
        types = [types]
    words = [_TYPE_WORDS.get(t, t) for t in types]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_path(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole(value: Any) -> int | None:
    """The whole number a JSON number stands for, or None.

    Parameters
    ----------
    value : Any
        An item or datalist value.

    Returns
    -------
    int or None
        ``1`` for ``1`` and for ``1.0`` (JSON Schema's "integer" accepts both, and training reads
        ``int(value)``); None for ``1.5``, booleans and non-numbers.
    """
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _valid_image(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)


def _image_paths(item: Mapping[str, Any]) -> list[str]:
    image = item.get("image")
    if isinstance(image, str):
        return [image]
    return list(image) if isinstance(image, list) else []


def _read_shape(path: Path) -> tuple[int, ...] | None:
    """Header-only shape of an image file, or None when it cannot be had cheaply."""
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        import nibabel as nib

        return tuple(int(s) for s in nib.load(str(path)).shape)
    if name.endswith(_TIFF_SUFFIXES):
        try:
            import tifffile
        except ImportError:
            return None
        with tifffile.TiffFile(str(path)) as tif:
            return tuple(int(s) for s in tif.series[0].shape)
    if name.endswith(".npy"):
        return tuple(int(s) for s in np.load(str(path), mmap_mode="r").shape)
    return None


def _read_affine(path: Path) -> np.ndarray | None:
    """Header-only voxel-to-world affine of a NIfTI file, or None for other formats."""
    if not path.name.lower().endswith(_NIFTI_SUFFIXES):
        return None
    import nibabel as nib

    return np.asarray(nib.load(str(path)).affine, dtype=float)


def _grids_differ(image: np.ndarray, label: np.ndarray) -> str | None:
    """How two affines differ (spacing, then origin), or None when they describe the same grid.

    >>> _grids_differ(np.diag([8.0, 8, 8, 1]), np.diag([8.0, 8, 8, 1])) is None
    True
    >>> print(_grids_differ(np.diag([8.0, 8, 8, 1]), np.diag([16.0, 16, 16, 1])))
    spacing [16.0, 16.0, 16.0] vs the image's [8.0, 8.0, 8.0]
    """
    si, sl = np.sqrt((image[:3, :3] ** 2).sum(0)), np.sqrt((label[:3, :3] ** 2).sum(0))
    tol = 1e-3 * float(max(si.max(), 1e-6))
    if not np.allclose(si, sl, rtol=1e-4, atol=tol):
        return f"spacing {np.round(sl, 4).tolist()} vs the image's {np.round(si, 4).tolist()}"
    if not np.allclose(image[:3, :3], label[:3, :3], atol=tol):
        return "axis directions differ from the image's"
    if not np.allclose(image[:3, 3], label[:3, 3], atol=max(tol, 0.01 * float(si.min()))):
        return f"origin {np.round(label[:3, 3], 3).tolist()} vs the image's {np.round(image[:3, 3], 3).tolist()}"
    return None


def _read_array(path: Path) -> np.ndarray | None:
    """The voxel data of a label file, or None for a format this module does not read."""
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        import nibabel as nib

        return np.asanyarray(nib.load(str(path)).dataobj)
    if name.endswith(_TIFF_SUFFIXES):
        try:
            import tifffile
        except ImportError:
            return None
        return tifffile.imread(str(path))
    if name.endswith(".npy"):
        return np.load(str(path), mmap_mode="r")
    return None


def _squeeze_trailing(shape: tuple[int, ...]) -> tuple[int, ...]:
    out = list(shape)
    while len(out) > 1 and out[-1] == 1:
        out.pop()
    return tuple(out)


def _shapes_match(image: tuple[int, ...], label: tuple[int, ...], channel_first_ok: bool) -> bool:
    a, b = _squeeze_trailing(image), _squeeze_trailing(label)
    if a == b:
        return True
    if len(a) == len(b) + 1:  # one channel axis on the image
        if a[: len(b)] == b:  # channel last (NIfTI 4D, RGB TIFF)
            return True
        if channel_first_ok and a[1:] == b:
            return True
    if len(image) >= 2 and _squeeze_trailing(image[:-1]) == b:  # x, y, 1, channel: a 2-D image
        return True
    return False


# --------------------------------------------------------------------------- the checker


