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
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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

from .checks_content import ContentChecks
from .checks_duplicates import DuplicateChecks
from .checks_files import FileChecks
from .checks_schema import SchemaChecks
from .schema import (
    FORMAT_PREFIX,
    FORMAT_VERSION,
    SCHEMA_PATH,
    DatalistError,
    _is_int,
    _short,
    _valid_image,
    load_datalist,
    load_schema,
)

# --------------------------------------------------------------------------- the checker


class _Checker(SchemaChecks, ContentChecks, DuplicateChecks, FileChecks):
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

    # ----------------------------------------------------------------- summary

    def run(self) -> None:
        self.check_schema()
        self.check_format()
        self.check_classes()
        self.check_label_rules()
        self.check_item_values()
        self.check_folds()
        self.check_duplicates()
        self.check_annotated()
        self.check_annotated_mask_everywhere()
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
    source: str | None = None,
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

    source : str, optional
        The name messages give an in-memory datalist (the file it is about to be written to);
        ``"<datalist>"`` when not given. Ignored for a path.

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
        source = source or "<datalist>"
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
    text = ", ".join(parts)
    if summary.get("checked", {}).get("files"):  # a truncated image passes a header read (probe F8)
        text += " (images: headers only; the analysis reads every voxel)"
    return text


def _folds_arg(text: str) -> int:
    """argparse type of ``--num-folds``: a whole number >= 1."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give a number of folds >= 1")
    return value


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
        "--num-folds", type=_folds_arg, default=None, metavar="N",
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
