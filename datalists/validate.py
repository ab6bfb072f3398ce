"""Validate a datalist before MONAI Auto3DSeg reads it.

MONAI reads a datalist with ``monai.auto3dseg.utils.datafold_read``, which is
unforgiving in quiet ways: it joins *every* string inside an item with the data
root, calls ``os.path.join(dataroot, v)`` on every element of every list value
(so a list of numbers raises ``TypeError``), and puts items without a ``fold``
into training, so a datalist without folds has no validation set. This module
checks a datalist for those traps and for the CellMap additions (``class_table``,
``labels``, ``annotated``) and reports *all* problems at once, each naming the
file, the item and what to do.

Examples
--------
>>> from datalists.validate import validate_datalist            # doctest: +SKIP
>>> validate_datalist("nifti/datalist.json")                    # doctest: +SKIP
{'n_training': 12, 'n_testing': 2, 'folds': {0: 3, 1: 3, ...}, ...}

From the shell::

    python -m datalists.validate nifti/datalist.json --label-values
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DatalistError",
    "SCHEMA_PATH",
    "FORMAT_PREFIX",
    "FORMAT_VERSION",
    "load_datalist",
    "load_schema",
    "validate_datalist",
    "format_summary",
    "main",
]

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
             "or write the datalist with python -m converters.convert_zarr_to_nifti"],
            source=str(p),
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatalistError([f"{p}: cannot read the datalist: {exc}"], source=str(p)) from exc
    try:
        data = json.loads(text)
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


class _Checker:
    """Collects problems and warnings for one datalist."""

    def __init__(
        self,
        data: dict[str, Any],
        source: str,
        datalist_dir: Path | None,
        root: Path | None,
        *,
        check_files: bool,
        check_shapes: bool,
        check_label_values: bool,
        num_folds: int | None,
        allow_number_lists: bool,
        allow_single_fold: bool = False,
    ) -> None:
        self.data = data
        self.src = source
        self.datalist_dir = datalist_dir
        self.root = root
        self.check_files = check_files and root is not None
        self.check_shapes = check_shapes and self.check_files
        self.check_label_values = check_label_values and self.check_files
        self.num_folds_arg = num_folds
        self.allow_number_lists = allow_number_lists
        self.allow_single_fold = allow_single_fold
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.class_names: dict[int, str] = {}
        self.class_info_known = False
        self.num_folds: int | None = None
        self.fold_counts: dict[int, int] = {}

    # ----------------------------------------------------------------- plumbing

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{self.src}: {where}: {text}")

    def items(self, section: str) -> list[tuple[int, dict[str, Any]]]:
        seq = self.data.get(section)
        if not isinstance(seq, list):
            return []
        return [(i, it) for i, it in enumerate(seq) if isinstance(it, dict)]

    def desc(self, section: str, index: int) -> str:
        seq = self.data.get(section)
        item = seq[index] if isinstance(seq, list) and 0 <= index < len(seq) else None
        if isinstance(item, dict) and _valid_image(item.get("image")):
            image = item["image"]
            shown = repr(image) if isinstance(image, str) else _short(image, 120)
            return f"{section}[{index}] (image {shown})"
        return f"{section}[{index}]"

    # ----------------------------------------------------------------- schema

    def check_schema(self) -> None:
        from jsonschema import Draft202012Validator

        validator = Draft202012Validator(load_schema())
        errors = sorted(
            validator.iter_errors(self.data),
            key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator)),
        )
        list_of_strings_done: set[str] = set()
        joined_done: set[tuple[Any, ...]] = set()
        seen: set[str] = set()
        for err in errors:
            path = list(err.absolute_path)
            section = path[0] if path and path[0] in _SECTIONS else None
            in_item = section is not None and len(path) >= 2 and isinstance(path[1], int)

            # "testing": ["images/a.nii.gz", ...]: one message for the whole list.
            if in_item and len(path) == 2 and err.validator == "type" and isinstance(err.instance, str):
                if section in list_of_strings_done:
                    continue
                list_of_strings_done.add(section)
                example = _ITEM_EXAMPLE if section == "testing" else _TRAIN_EXAMPLE
                self.problem(
                    f"'{section}'",
                    f"{section} must be a list of objects like {example}; got a list of strings "
                    f"(e.g. {section}[{path[1]}] = {err.instance!r}); wrap each path in an object",
                )
                continue

            # A string where datafold_read would join it with the data root.
            if (
                in_item and len(path) >= 3 and path[2] not in _KNOWN_ITEM_KEYS
                and isinstance(err.instance, str)
            ):
                key = path[2]
                if (section, path[1], key) in joined_done:
                    continue
                joined_done.add((section, path[1], key))
                root = str(self.root) if self.root is not None else "<dataroot>"
                self.problem(
                    self.desc(section, path[1]),
                    f"'{_json_path(path[2:])}' is a string ({err.instance!r}); MONAI's datafold_read "
                    f"joins every string in an item with the data root (it would become "
                    f"{os.path.join(root, err.instance)!r}); move '{key}' to a side file keyed by "
                    f"image path (the datalist's items_file) or store it as a number",
                )
                continue

            if in_item:
                where = self.desc(section, path[1])
                field = path[2:]
            else:
                where = f"'{_json_path(path)}'" if path else "top level"
                field = []
            text = self._schema_words(err, field, path)
            message = f"{self.src}: {where}: {text}"
            if message not in seen:
                seen.add(message)
                self.problems.append(message)

    def _schema_words(self, err: Any, field: list[Any], path: list[Any]) -> str:
        name = f"'{_json_path(field)}'" if field else ""
        subject = name or "it"
        key = next((p for p in reversed(path) if isinstance(p, str)), None)
        fix = _KEY_FIXES.get(key or "")
        v, inst = err.validator, err.instance
        if v == "required":
            missing = [k for k in err.validator_value if isinstance(inst, dict) and k not in inst]
            k = missing[0] if missing else err.validator_value[0]
            text = f"{name + ' ' if name else ''}has no '{k}' key"
            fix = _REQUIRED_FIXES.get(k)
        elif v == "type":
            text = f"{subject} must be {_type_words(err.validator_value)}, got {_json_type(inst)} {_short(inst)}"
        elif v in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[v]
            text = f"{subject} must be {op} {err.validator_value}, got {_short(inst)}"
        elif v == "minItems":
            text = (f"{subject} is empty" if not inst else f"{subject} has {len(inst)} values")
            text += f"; it needs at least {err.validator_value}"
            if path == ["training"]:
                fix = f"add at least one training item like {_TRAIN_EXAMPLE}"
        elif v == "maxItems":
            text = f"{subject} has {len(inst)} values; at most {err.validator_value} are allowed"
        elif v == "minLength":
            text = f"{subject} is an empty string"
        elif v == "pattern":
            if key == "labels" or (path and path[0] == "labels"):
                text = f"labels key {inst!r} is not a class id"
                fix = "keys must be class ids written as whole numbers: '0', '1', ..."
            else:
                text = f"{subject} is {inst!r}, which does not have the form {err.validator_value!r}"
        elif v == "uniqueItems":
            dups = sorted({json.dumps(x) for x, n in Counter(json.dumps(y) for y in inst).items() if n > 1})
            text = f"{subject} repeats {', '.join(dups)}"
            fix = "list each id once"
        else:
            text = err.message
        return f"{text}; {fix}" if fix else text

    # ----------------------------------------------------------------- format

    def check_format(self) -> None:
        fmt = self.data.get("format")
        if isinstance(fmt, str) and fmt.startswith(FORMAT_PREFIX):
            version = fmt[len(FORMAT_PREFIX):]
            if version.isdigit() and int(version) > FORMAT_VERSION:
                self.problem(
                    "'format'",
                    f"format version {version} is newer than this validator understands "
                    f"({FORMAT_VERSION}); update the project or re-convert with this version",
                )

    # ----------------------------------------------------------------- classes

    def check_classes(self) -> None:
        table = self.data.get("class_table")
        labels = self.data.get("labels")
        names: dict[int, str] = {}
        if isinstance(table, list):
            self.class_info_known = True
            if not table:
                self.problem("'class_table'", "class_table is empty; list the classes or drop the key")
            rows = [
                (j, r) for j, r in enumerate(table)
                if isinstance(r, dict) and _is_int(r.get("id")) and isinstance(r.get("name"), str)
            ]
            by_id: dict[int, list[int]] = defaultdict(list)
            by_name: dict[str, list[int]] = defaultdict(list)
            for j, r in rows:
                by_id[r["id"]].append(j)
                by_name[r["name"]].append(j)
                names.setdefault(r["id"], r["name"])
            for cid, js in sorted(by_id.items()):
                if len(js) > 1:
                    self.problem(
                        "'class_table'",
                        f"id {cid} is used by rows {js} ({', '.join(repr(table[j]['name']) for j in js)}); "
                        "give each class its own id",
                    )
            for cname, js in sorted(by_name.items()):
                if len(js) > 1:
                    self.problem("'class_table'", f"name {cname!r} is used by rows {js}; give each class its own name")
            k = len(table)
            ids = set(by_id)
            if ids and ids != set(range(1, k + 1)):
                missing = sorted(set(range(1, k + 1)) - ids)
                extra = sorted(ids - set(range(1, k + 1)))
                detail = []
                if missing:
                    detail.append(f"missing {missing}")
                if extra:
                    detail.append(f"out of range {extra}")
                self.problem(
                    "'class_table'",
                    f"ids must be 1..{k} without gaps (label value k means class k), got "
                    f"{sorted(ids)} ({'; '.join(detail)}); renumber the rows 1..{k}",
                )
            for j, r in rows:
                parts = r.get("parts")
                if not isinstance(parts, list):
                    continue
                bad = [p for p in parts if _is_int(p) and p not in ids]
                if bad:
                    self.problem(
                        f"'class_table[{j}]' ({r['name']!r})",
                        f"parts {parts} name id(s) {bad} that class_table does not define; "
                        "parts must be ids of other class_table rows (our ids, not CellMap ids)",
                    )
                if r["id"] in parts:
                    self.problem(f"'class_table[{j}]' ({r['name']!r})", "lists itself among its parts; remove it")
        if isinstance(labels, dict):
            self.class_info_known = True
            lab = {int(k): v for k, v in labels.items() if isinstance(k, str) and k.isdigit()}
            if isinstance(table, list):
                for cid, cname in sorted(names.items()):
                    if cid not in lab:
                        self.problem(
                            "'labels'",
                            f"has no entry for class id {cid} ({cname!r}) of class_table; "
                            f"add \"{cid}\": \"{cname}\" or drop 'labels'",
                        )
                    elif lab[cid] != cname:
                        self.problem(
                            "'labels'",
                            f"labels[\"{cid}\"] is {lab[cid]!r} but class_table id {cid} is {cname!r}; "
                            "make them agree (re-convert, or fix one of them)",
                        )
                for cid in sorted(set(lab) - set(names) - {0}):
                    self.problem(
                        "'labels'",
                        f"labels[\"{cid}\"] ({lab[cid]!r}) is not a class_table id; "
                        "remove it or add the class to class_table",
                    )
            else:
                names = {cid: n for cid, n in lab.items() if cid != 0}
        self.class_names = dict(sorted(names.items()))

    # ----------------------------------------------------------------- items

    def check_item_values(self) -> None:
        for section in _SECTIONS:
            for i, item in self.items(section):
                if self.allow_number_lists:
                    continue
                for key, value in item.items():
                    if key in _PATH_KEYS or not isinstance(value, list) or not value:
                        continue
                    if any(isinstance(x, str) for x in value):
                        continue  # reported by the schema as strings to be joined
                    alt = (" or store it as the integer bitmask 'annotated_mask' (bit id-1 set per class)"
                           if key == "annotated" else "")
                    self.problem(
                        self.desc(section, i),
                        f"'{key}' is a list of numbers {_short(value)}; MONAI's datafold_read (used by "
                        f"DataAnalyzer and the Auto3DSeg templates) calls os.path.join(dataroot, v) on every "
                        f"element of a list value and raises TypeError on numbers; move '{key}' to the "
                        f"items_file side file keyed by image path{alt}; pass allow_number_lists=True "
                        f"(--allow-number-lists) only if such keys are removed before MONAI reads the datalist",
                    )

    def check_folds(self) -> None:
        train = self.items("training")
        if not train:
            return
        with_fold = [(i, it) for i, it in train if "fold" in it]
        if not with_fold:
            validation = self.data.get("validation")
            if isinstance(validation, list) and validation:
                self.warnings.append(
                    f"{self.src}: no training item has a 'fold'; MONAI's AutoRunner will use the "
                    "'validation' list as a single fold, but datafold_read alone gives no validation set"
                )
                return
            self.problems.append(
                f"{self.src}: no folds: add a 'fold' to every training item, e.g. convert with "
                "--num_folds 5; without folds there is no validation set (MONAI's datafold_read puts "
                "items without a fold into training, and an Auto3DSeg template then divides by zero)"
            )
            return
        folds = [(i, it["fold"]) for i, it in with_fold if _is_int(it["fold"]) and it["fold"] >= 0]

        if self.num_folds_arg is not None:
            nf, origin = int(self.num_folds_arg), "the num_folds argument"
        elif _is_int(self.data.get("num_folds")) and self.data["num_folds"] >= 1:
            nf, origin = int(self.data["num_folds"]), "the datalist's num_folds"
        elif folds:
            nf, origin = max(f for _, f in folds) + 1, "the largest fold + 1"
        else:
            return
        self.num_folds = nf

        if len(with_fold) < len(train):
            for i, it in train:
                if "fold" not in it:
                    self.problem(
                        self.desc("training", i),
                        f"has no 'fold' while {len(with_fold)} other training item(s) have one; "
                        f"datafold_read would always put it in training; give it a fold in 0..{nf - 1} "
                        "(or re-convert with --num_folds)",
                    )

        counts = Counter(f for _, f in folds)
        self.fold_counts = dict(sorted(counts.items()))
        used = sorted(f for f in counts if f < nf)
        for i, f in folds:
            if f >= nf:
                self.problem(
                    self.desc("training", i),
                    f"fold {f} is outside 0..{nf - 1} (num_folds {nf} from {origin}); "
                    f"set it to a fold in that range or set num_folds to at least {f + 1}",
                )
        if len(used) == 1:
            self._single_fold(used[0], nf, origin)
            return
        for f in range(nf):
            if counts.get(f, 0) == 0:
                self.problems.append(
                    f"{self.src}: fold {f} has no training item (num_folds {nf} from {origin}); move items into "
                    f"fold {f}, or number the {len(used)} folds that have items 0..{len(used) - 1} and set "
                    f"num_folds to {len(used)}"
                )

    def _single_fold(self, fold: int, nf: int, origin: str) -> None:
        """Every training item is in one fold: that fold's training set is empty."""
        if self.data.get("kind") == "cells2d":
            fix = ("re-convert with python -m converters.convert_cells_to_nifti --num_folds 2 (or more) from at "
                   "least 2 labelled images (an image and its tiles stay in one fold)")
        elif str(self.data.get("format", "")).startswith(FORMAT_PREFIX):
            fix = ("re-convert with python -m converters.convert_zarr_to_nifti ... --num_folds 2 (or more): with "
                   "fewer crops than folds it cuts crops into slabs along their longest axis, one fold each, "
                   "--fold_gap voxels apart (its conversion_report.md says why when a crop is too small to cut)")
        else:
            fix = 'give the training items at least 2 different folds ("fold": 0 for some, 1 for the others)'
        text = (f"{self.src}: cannot be cross-validated: every training item is in fold {fold} (num_folds {nf} "
                f"from {origin}), so when fold {fold} validates no item is left to train on; {fix}")
        if self.allow_single_fold:
            self.warnings.append(f"{text} (accepted for analysis only: allow_single_fold)")
        else:
            self.problems.append(f"{text}; to check it for analysis only (no training): python -m datalists.validate "
                                 "--allow-single-fold, or validate_datalist(..., allow_single_fold=True)")

    def check_duplicates(self) -> None:
        first_image: dict[Any, str] = {}
        first_label: dict[str, str] = {}
        for section in _SECTIONS:
            for i, item in self.items(section):
                image = item.get("image")
                if _valid_image(image):
                    key = image if isinstance(image, str) else tuple(image)
                    if key in first_image:
                        self.problem(
                            self.desc(section, i),
                            f"the same image is already listed as {first_image[key]}; list each image "
                            "once (a crop in two places leaks between training and validation)",
                        )
                    else:
                        first_image[key] = f"{section}[{i}]"
                label = item.get("label")
                if isinstance(label, str) and label and section in _LABELLED_SECTIONS:
                    if label in first_label:
                        self.problem(
                            self.desc(section, i),
                            f"label {label!r} is already used by {first_label[label]}; each item needs its own label",
                        )
                    else:
                        first_label[label] = f"{section}[{i}]"
                    if label in _image_paths(item):
                        self.problem(self.desc(section, i),
                                     "label is the same file as the image; point it at the label file")

    def _check_annotated_ids(self, where: str, ids: list[int], key: str) -> None:
        if not self.class_names:
            return
        unknown = [c for c in ids if c not in self.class_names]
        if not unknown:
            return
        k = max(self.class_names)
        hint = ""
        table = self.data.get("class_table")
        if isinstance(table, list):
            by_cellmap = {r.get("cellmap_id"): r for r in table if isinstance(r, dict)}
            looks = [f"{c} is CellMap's id of {by_cellmap[c]['name']!r} (our id {by_cellmap[c].get('id')})"
                     for c in unknown if c in by_cellmap]
            if looks:
                hint = "; these look like CellMap ids: " + ", ".join(looks)
        self.problem(
            where,
            f"{key} lists class id(s) {unknown} that class_table does not define (ids are 1..{k}); "
            f"use ids from class_table, not CellMap ids, or add the classes{hint}",
        )

    def check_annotated(self) -> None:
        warned_unknown = False
        for section in _SECTIONS:
            for i, item in self.items(section):
                where = self.desc(section, i)
                ann = item.get("annotated")
                ann_ids: set[int] | None = None
                if isinstance(ann, list) and all(_is_int(a) for a in ann):
                    ann_ids = set(ann)
                    if not ann:
                        self.warnings.append(f"{self.src}: {where}: annotated is empty: the item annotates no class")
                    self._check_annotated_ids(where, list(ann), "annotated")
                mask = item.get("annotated_mask")
                if _is_int(mask) and mask >= 0:
                    mask_ids = {b + 1 for b in range(mask.bit_length()) if mask >> b & 1}
                    self._check_annotated_ids(where, sorted(mask_ids), f"annotated_mask {mask}")
                    if ann_ids is not None and ann_ids != mask_ids:
                        self.problem(
                            where,
                            f"annotated {sorted(ann_ids)} and annotated_mask {mask} (ids {sorted(mask_ids)}) "
                            "disagree; keep one of them",
                        )
                if (ann is not None or mask is not None) and not self.class_info_known and not warned_unknown:
                    warned_unknown = True
                    self.warnings.append(
                        f"{self.src}: items list annotated classes but the datalist has no class_table or "
                        "labels, so their ids were not checked"
                    )

    # ----------------------------------------------------------------- side file

    def check_items_file(self) -> None:
        name = self.data.get("items_file")
        if not isinstance(name, str) or not name or not self.check_files:
            return
        bases = [b for b in (self.datalist_dir, self.root) if b is not None]
        candidates = list(dict.fromkeys(b / name for b in bases))
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            self.problem(
                "'items_file'",
                f"{name!r} not found (looked at {', '.join(str(c) for c in candidates)}); "
                "write it next to the datalist or drop the key",
            )
            return
        try:
            side = json.loads(found.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            self.problem("'items_file'", f"cannot read {found}: {exc}")
            return
        except json.JSONDecodeError as exc:
            self.problem(
                "'items_file'",
                f"{found} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; fix or re-write it",
            )
            return
        masks = {
            item["image"]: (f"{section}[{i}]", item["annotated_mask"])
            for section in _SECTIONS for i, item in self.items(section)
            if isinstance(item.get("image"), str) and _is_int(item.get("annotated_mask"))
        }
        for key, entry in self._side_entries(side):
            if not isinstance(entry, dict) or "annotated" not in entry:
                continue
            ann = entry["annotated"]
            where = f"items_file {found.name} entry {key!r}"
            if not isinstance(ann, list) or not all(_is_int(a) for a in ann):
                self.problem(where, "annotated must be a list of integer class ids from class_table, e.g. [1, 2]; "
                             f"got {_short(ann)}")
                continue
            self._check_annotated_ids(where, ann, "annotated")
            if key in masks:
                item_where, mask = masks[key]
                mask_ids = [b + 1 for b in range(mask.bit_length()) if mask >> b & 1]
                if sorted(set(ann)) != mask_ids:
                    self.problem(
                        where,
                        f"annotated {sorted(set(ann))} disagrees with annotated_mask {mask} (ids {mask_ids}) "
                        f"of {item_where}; re-convert so that both come from the same crop",
                    )

    @staticmethod
    def _side_entries(side: Any) -> list[tuple[str, Any]]:
        """(key, entry) pairs from a side file: {image: {...}}, [{"image": ...}], or {"items"/section: [...]}."""
        lists: list[Any] = []
        if isinstance(side, list):
            lists.append(side)
        elif isinstance(side, dict):
            sub = [side[k] for k in ("items",) + _SECTIONS if isinstance(side.get(k), list)]
            if sub:
                lists.extend(sub)
            else:
                return [(str(k), v) for k, v in side.items() if isinstance(v, dict)]
        out = []
        for seq in lists:
            for j, entry in enumerate(seq):
                if isinstance(entry, dict):
                    out.append((str(entry.get("image", f"[{j}]")), entry))
        return out

    # ----------------------------------------------------------------- files

    def check_files_on_disk(self) -> None:
        if not self.check_files:
            return
        assert self.root is not None
        root = self.root
        n_checked = n_missing = 0
        shape_cache: dict[Path, tuple[int, ...] | None] = {}
        label_value_skipped = False

        def shape_of(p: Path, where: str) -> tuple[int, ...] | None:
            if p not in shape_cache:
                try:
                    shape_cache[p] = _read_shape(p)
                except Exception as exc:  # noqa: BLE001 - any reader error is a problem to report
                    shape_cache[p] = None
                    self.problem(where, f"cannot read the header of {p}: {exc}; the file may be truncated, "
                                 "re-convert it")
            return shape_cache[p]

        for section in _SECTIONS:
            for i, item in self.items(section):
                where = self.desc(section, i)
                images = _image_paths(item) if _valid_image(item.get("image")) else []
                label = item.get("label") if isinstance(item.get("label"), str) and item.get("label") else None
                present: dict[str, Path] = {}
                for key, rel in [("image", p) for p in images] + ([("label", label)] if label else []):
                    full = root / rel
                    n_checked += 1
                    if full.is_file():
                        present[rel] = full
                    else:
                        n_missing += 1
                        self.problem(
                            where,
                            f"{key} file not found: {full}; fix the path (relative to the data root {root}) "
                            "or re-run the converter",
                        )
                if self.check_shapes and label and label in present and images and all(p in present for p in images):
                    lshape = shape_of(present[label], where)
                    for rel in images:
                        ishape = shape_of(present[rel], where)
                        if lshape is None or ishape is None:
                            continue
                        channel_first_ok = not rel.lower().endswith(_NIFTI_SUFFIXES)
                        if not _shapes_match(ishape, lshape, channel_first_ok):
                            self.problem(
                                where,
                                f"label shape {lshape} differs from image shape {ishape} ({rel}); "
                                "image and label must cover the same voxel grid: re-convert this crop",
                            )
                if self.check_label_values and label and label in present and section in _LABELLED_SECTIONS:
                    if not self.class_info_known:
                        label_value_skipped = True
                        continue
                    self._check_label_values(where, present[label])
        if label_value_skipped:
            self.warnings.append(
                f"{self.src}: label values were not checked: the datalist has no class_table or labels"
            )
        if n_missing and n_missing == n_checked and n_checked > 1:
            self.problems.append(
                f"{self.src}: none of the {n_checked} files exist under the data root {root}: is the data "
                "root right? (--dataroot; by default it is the datalist's folder)"
            )

    def _check_label_values(self, where: str, path: Path) -> None:
        try:
            arr = _read_array(path)
        except Exception as exc:  # noqa: BLE001
            self.problem(where, f"cannot read the label data of {path}: {exc}; re-convert it")
            return
        if arr is None:
            return
        values = np.unique(np.asarray(arr))
        allowed = {0, *self.class_names}
        k = max(self.class_names) if self.class_names else 0
        if values.dtype.kind == "f":
            non_integer = values[values != np.round(values)]
            if non_integer.size:
                self.problem(
                    where,
                    f"label {path} has non-integer values {non_integer[:10].tolist()}; labels must hold "
                    "class ids 0..K: re-convert it (nearest-neighbour resampling)",
                )
            values = values[values == np.round(values)]
        bad = [v for v in values.tolist() if int(v) not in allowed]
        if bad:
            shown = [int(v) for v in bad[:10]] + (["..."] if len(bad) > 10 else [])
            self.problem(
                where,
                f"label {path} has values {shown} that are not class ids (allowed: 0..{k}); re-convert "
                "the label or fix class_table",
            )

    # ----------------------------------------------------------------- summary

    def run(self) -> None:
        self.check_schema()
        self.check_format()
        self.check_classes()
        self.check_item_values()
        self.check_folds()
        self.check_duplicates()
        self.check_annotated()
        self.check_items_file()
        self.check_files_on_disk()

    def summary(self) -> dict[str, Any]:
        def count(section: str) -> int:
            seq = self.data.get(section)
            return len(seq) if isinstance(seq, list) else 0

        return {
            "datalist": self.src,
            "dataroot": str(self.root) if self.root is not None else None,
            "n_training": count("training"),
            "n_validation": count("validation"),
            "n_testing": count("testing"),
            "num_folds": self.num_folds,
            "folds": dict(self.fold_counts),
            "classes": dict(self.class_names),
            "checked": {
                "files": self.check_files,
                "shapes": self.check_shapes,
                "label_values": self.check_label_values and self.class_info_known,
            },
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- public entry


def validate_datalist(
    datalist: Mapping[str, Any] | str | os.PathLike[str],
    dataroot: str | os.PathLike[str] | None = None,
    *,
    check_files: bool = True,
    check_shapes: bool = True,
    check_label_values: bool = False,
    num_folds: int | None = None,
    allow_number_lists: bool = False,
    allow_single_fold: bool = False,
) -> dict[str, Any]:
    """Check a datalist and report every problem at once.

    Parameters
    ----------
    datalist : dict, str or path-like
        The datalist, or the path of its JSON file.
    dataroot : str or path-like, optional
        Folder the item paths are relative to (MONAI's ``dataroot``). Defaults to the
        datalist file's folder; required for file checks when ``datalist`` is a dict.
    check_files : bool, default True
        Check that every image, label and the ``items_file`` exist.
    check_shapes : bool, default True
        Check that each label's shape equals its image's (NIfTI headers via nibabel,
        TIFF via tifffile, ``.npy`` memory-mapped; other formats are skipped). Needs
        ``check_files``.
    check_label_values : bool, default False
        Read every training/validation label and check its values are class ids
        ``0..K`` (slow on big data). Needs ``check_files`` and a class_table or labels.
    num_folds : int, optional
        Expected number of folds; defaults to the datalist's ``num_folds``, else the
        largest fold + 1.
    allow_number_lists : bool, default False
        Accept list-of-number item values (e.g. ``"annotated": [1, 2]``). MONAI's
        ``datafold_read`` raises ``TypeError`` on them, so allow them only when those
        keys are stripped before MONAI reads the datalist.
    allow_single_fold : bool, default False
        Accept a datalist whose training items are all in one fold (a warning, not a
        problem): fine for analysis, but no fold can be trained (its training set is empty).

    Returns
    -------
    dict
        Summary with keys ``datalist``, ``dataroot``, ``n_training``, ``n_validation``,
        ``n_testing``, ``num_folds``, ``folds`` (fold -> number of training items),
        ``classes`` (class id -> name), ``checked`` and ``warnings``.

    Raises
    ------
    DatalistError
        Listing every problem found (``.problems``); also for a missing or invalid file.
    ValueError
        If ``datalist`` is a dict, ``dataroot`` is None and file checks are asked for.
    TypeError
        If ``datalist`` is neither a mapping nor a path.
    """
    if num_folds is not None and (not _is_int(num_folds) or num_folds < 1):
        raise ValueError(f"num_folds must be a whole number >= 1, got {num_folds!r}")
    datalist_dir: Path | None = None
    if isinstance(datalist, (str, os.PathLike)):
        path = Path(datalist)
        data = load_datalist(path)
        source = str(path)
        datalist_dir = path.parent
    elif isinstance(datalist, Mapping):
        data = dict(datalist)
        source = "<datalist>"
    else:
        raise TypeError(f"datalist must be a dict or a path, got {type(datalist).__name__}")

    if dataroot is not None:
        root: Path | None = Path(dataroot)
    elif datalist_dir is not None:
        root = datalist_dir
    elif check_files:
        raise ValueError(
            "dataroot is required to check files when the datalist is given as a dict; "
            "pass dataroot=... or check_files=False"
        )
    else:
        root = None

    checker = _Checker(
        data, source, datalist_dir, root,
        check_files=check_files, check_shapes=check_shapes, check_label_values=check_label_values,
        num_folds=num_folds, allow_number_lists=allow_number_lists, allow_single_fold=allow_single_fold,
    )
    checker.run()
    if checker.problems:
        raise DatalistError(checker.problems, source=source)
    return checker.summary()


def format_summary(summary: Mapping[str, Any]) -> str:
    """One line describing a :func:`validate_datalist` summary.

    Parameters
    ----------
    summary : mapping
        As returned by :func:`validate_datalist`.

    Returns
    -------
    str
        E.g. ``"datalist.json: 12 training items in 5 folds (0:3 1:3 2:2 3:2 4:2), 2 testing, 3 classes"``.
    """
    parts = [f"{summary['datalist']}: {summary['n_training']} training items"]
    if summary.get("num_folds"):
        folds = " ".join(f"{f}:{n}" for f, n in summary["folds"].items())
        parts[0] += f" in {summary['num_folds']} folds ({folds})"
    if summary.get("n_validation"):
        parts.append(f"{summary['n_validation']} validation")
    parts.append(f"{summary['n_testing']} testing")
    classes = summary.get("classes") or {}
    if classes:
        parts.append(f"{len(classes)} classes ({', '.join(classes.values())})")
    checked = [k.replace("_", " ") for k, v in summary.get("checked", {}).items() if v]
    parts.append(f"checked: {', '.join(checked)}" if checked else "files not checked")
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m datalists.validate DATALIST [options]``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when the datalist is fine, 1 when it has problems.
    """
    parser = argparse.ArgumentParser(
        prog="python -m datalists.validate",
        description="Check a MONAI Auto3DSeg / CellMap datalist and list every problem found.",
    )
    parser.add_argument("datalist", metavar="DATALIST", help="the datalist JSON file")
    parser.add_argument(
        "--dataroot", metavar="DIR", default=None,
        help="folder the item paths are relative to (default: the datalist's folder)",
    )
    parser.add_argument(
        "--no-files", action="store_true",
        help="do not check that image/label files exist (also skips shape and label-value checks)",
    )
    parser.add_argument(
        "--no-shapes", action="store_true", help="do not compare label and image shapes (NIfTI/TIFF headers)",
    )
    parser.add_argument(
        "--label-values", action="store_true",
        help="read every label and check its values are class ids 0..K (slow on big data)",
    )
    parser.add_argument(
        "--num-folds", type=int, default=None, metavar="N",
        help="expected number of folds (default: the datalist's num_folds, else the largest fold + 1)",
    )
    parser.add_argument(
        "--allow-number-lists", action="store_true",
        help="accept list-of-number item values such as \"annotated\": [1, 2] (MONAI's datafold_read "
             "raises TypeError on them; use only if they are stripped before MONAI reads the datalist)",
    )
    parser.add_argument(
        "--allow-single-fold", "--allow_single_fold", action="store_true",
        help="accept a datalist whose training items are all in one fold, for analysis only (no fold can be "
             "trained: its training set would be empty)",
    )
    args = parser.parse_args(argv)
    try:
        summary = validate_datalist(
            args.datalist, args.dataroot,
            check_files=not args.no_files, check_shapes=not args.no_shapes,
            check_label_values=args.label_values, num_folds=args.num_folds,
            allow_number_lists=args.allow_number_lists, allow_single_fold=args.allow_single_fold,
        )
    except DatalistError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in summary["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"OK: {format_summary(summary)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
