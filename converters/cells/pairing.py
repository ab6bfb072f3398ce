"""Label files that pair with no image: misnamed labels and orphans.

A CellSeg label must be named ``<stem>_label.tiff`` (:func:`converters.cells.images.find_label`).
A file in ``--labels`` that is not the label of any image is either

* a **near miss** of an image's label: its name, with the extension and a label-like suffix
  (``_label``, ``_labels``, ``_mask``, ``_masks``, ``_seg``, ``_gt``, ``_instances``...) removed,
  equals an image stem up to case (``a_labels.tiff``, ``a_mask.png``, ``A_Label.tif``,
  ``a_label.jpg``, ``a.tiff``). Left alone, the image would silently become a *testing* image;
  the converter fails it instead and says which name the label should have; or
* an **orphan**: no image has that stem. It is reported as a warning with the image stems it
  is closest to.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["LABEL_SUFFIX", "label_base", "misnamed_detail", "unmatched_labels"]

#: a label-like suffix at the end of a file's stem (case-insensitive)
LABEL_SUFFIX = re.compile(r"[_\-. ]?(?:labels?|masks?|seg|segmentation|instances?|inst|gt|groundtruth|"
                          r"annotations?|ann)$", re.IGNORECASE)
#: files looked at in ``--labels`` (case-insensitive): images and masks, not notes or tables
_LABEL_FILE_EXTENSIONS = (".tiff", ".tif", ".png", ".jpg", ".jpeg", ".bmp", ".npy")


def _without_extension(name: str) -> str | None:
    low = name.lower()
    for ext in _LABEL_FILE_EXTENSIONS:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return None


def label_base(name: str) -> str | None:
    """The image stem a label file's name points at, or None when it is no image/mask file.

    Examples
    --------
    >>> label_base("cell_01_labels.tiff"), label_base("cell_01-mask.PNG"), label_base("cell_01.tif")
    ('cell_01', 'cell_01', 'cell_01')
    >>> label_base("notes.txt") is None
    True
    """
    base = _without_extension(name)
    if base is None:
        return None
    stripped = LABEL_SUFFIX.sub("", base)
    return stripped or base


def unmatched_labels(labels_dir: str | Path, image_stems: Iterable[str], used: Iterable[str | Path],
                     labelled: Iterable[str]) -> tuple[dict[str, list[Path]], list[dict]]:
    """Label files of ``labels_dir`` that no image uses: near misses and orphans.

    Parameters
    ----------
    labels_dir : path
        The ``--labels`` folder.
    image_stems : iterable of str
        The stems of every image in ``--images``.
    used : iterable of path
        The label files already paired with an image (by their proper name).
    labelled : iterable of str
        The stems that already have a properly named label.

    Returns
    -------
    misnamed : dict
        Image stem (without a proper label) -> the near-miss label files naming it.
    orphans : list of dict
        ``{"label", "could_match", "detail"}`` for every other unused file.
    """
    root = Path(labels_dir)
    if not root.is_dir():
        return {}, []
    stems = sorted(set(image_stems))
    by_lower: dict[str, list[str]] = {}
    for s in stems:
        by_lower.setdefault(s.lower(), []).append(s)
    used_names = {Path(p).resolve() for p in used}
    have_label = set(labelled)
    misnamed: dict[str, list[Path]] = {}
    orphans: list[dict] = []
    for f in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        base = label_base(f.name)
        if base is None or f.resolve() in used_names:
            continue
        same = by_lower.get(base.lower(), [])
        free = [s for s in same if s not in have_label]
        if len(free) == 1:
            misnamed.setdefault(free[0], []).append(f)
            continue
        orphans.append(_orphan(f, base, same, stems, have_label))
    return misnamed, orphans


def _orphan(f: Path, base: str, same: list[str], stems: list[str], have_label: set[str]) -> dict:
    if same and all(s in have_label for s in same):
        could = same
        detail = (f"{f} is not used: the image {same[0]} already has its label {same[0]}_label.tiff; "
                  "remove the extra file or check which one is right")
    else:
        low = {s.lower(): s for s in stems}
        could = [low[m] for m in difflib.get_close_matches(base.lower(), list(low), n=3, cutoff=0.6)]
        hint = (f"closest image stems: {', '.join(could)}; rename it to <stem>_label.tiff of its image"
                if could else "no image stem is close; add its image to --images or remove the file")
        if len(same) > 1:
            hint = f"image stems {', '.join(same)} differ only by case; rename the images or the label"
        detail = f"{f} matches no image in --images (no image named {base}.*): it is not used; {hint}"
    return {"label": str(f), "could_match": could, "detail": detail}


def misnamed_detail(stem: str, image: str, files: Iterable[Path]) -> str:
    """The message of an image whose label is misnamed: which file, which name it needs."""
    names = ", ".join(str(p) for p in files)
    return (f"{names} looks like the label of {image} but a label must be named {stem}_label.tiff: rename it "
            f"(save it as TIFF if it is not one) and run the same command again; the image is not used, "
            "not even as a testing image, until then")
