"""Files in subfolders of ``--images`` or ``--labels``: never read, but named.

The converter reads only the files directly in ``--images`` and ``--labels`` (a subfolder may
hold older versions, another data set, or a tool's outputs). A file in a subfolder used to be
dropped without a word: an image in ``images/sub/`` was not converted, and a label in
``labels/sub/`` made its image a testing image. :func:`unread_subfolders` names them, for a
warning in the report and on the console. Hidden files and folders (``.name``) are not named.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["files_in_subfolders", "unread_subfolders"]

#: files named in a subfolder of --labels (what pairing.py looks at in --labels itself)
_LABEL_EXTENSIONS = (".tiff", ".tif", ".png", ".jpg", ".jpeg", ".bmp", ".npy")
#: names shown in a message before "... and N more"
_SHOWN = 3


def files_in_subfolders(folder: str | os.PathLike, extensions: tuple[str, ...],
                        skip: Iterable[str | os.PathLike] = ()) -> list[str]:
    """The files of ``folder``'s subfolders (at any depth) whose names end with ``extensions``.

    Parameters
    ----------
    folder : path
        An input folder (``--images`` or ``--labels``).
    extensions : tuple of str
        Lower-case endings, e.g. ``(".tif", ".png")``; compared case-insensitively.
    skip : iterable of path
        Folders not to look into (the other input folder when it lies inside this one).

    Returns
    -------
    list of str
        Paths relative to ``folder`` (``"sub/a.tif"``), sorted; hidden files and folders left out.

    Examples
    --------
    >>> files_in_subfolders("/nonexistent", (".tif",))
    []
    """
    root = Path(folder)
    skipped = {Path(p).resolve() for p in skip}
    found: list[str] = []
    for here, dirs, names in os.walk(root):  # symlinked folders are not followed
        here_path = Path(here)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here_path / d).resolve() not in skipped)
        if here_path == root:
            continue
        found += [(here_path / n).relative_to(root).as_posix() for n in sorted(names)
                  if not n.startswith(".") and n.lower().endswith(extensions)]
    return sorted(found)


def _shown(files: Sequence[str]) -> str:
    more = f", ... and {len(files) - _SHOWN} more" if len(files) > _SHOWN else ""
    return ", ".join(files[:_SHOWN]) + more


def _message(flag: str, folder: str, files: Sequence[str], testing: Sequence[str]) -> str:
    """The warning for the unread files of one input folder."""
    one = len(files) == 1
    text = (f"{flag} {folder}: {len(files)} file{'' if one else 's'} in subfolders {'is' if one else 'are'} not read "
            f"({_shown(files)}); move {'it' if one else 'them'} into {folder} itself to use {'it' if one else 'them'}")
    if testing:
        which = (f"the image {testing[0]} therefore becomes a testing image" if len(testing) == 1 else
                 f"the images {_shown(testing)} therefore become testing images")
        text += f"; {which} (no <stem>_label.tiff in {folder} itself)"
    return text


def _testing_stems(files: Sequence[str], sources: Sequence[dict], suffixed_only: bool) -> list[str]:
    """Stems of the images without a label whose label, by its name, is among ``files`` (only
    names with a label-like suffix when ``suffixed_only``: images and labels share the folder)."""
    from converters.cells.pairing import label_base

    names = [Path(f).name for f in files]
    bases = {(label_base(n) or "").lower() for n in names
             if not suffixed_only or label_base(n) != n[: n.rfind(".")]}
    return [s["stem"] for s in sources if not s.get("label") and s["stem"].lower() in bases]


def unread_subfolders(images_dir: str | os.PathLike, labels_dir: str | os.PathLike | None,
                      sources: Sequence[dict], image_extensions: tuple[str, ...]) -> list[dict]:
    """One warning for each input folder whose subfolders hold images or labels, which are not read.

    Parameters
    ----------
    images_dir, labels_dir : path
        ``--images`` and ``--labels`` (or None).
    sources : sequence of dict
        The paired images (``{"stem", "image", "label"}``): an image without a label whose label
        lies in a subfolder of ``--labels`` is named, as it becomes a testing image.
    image_extensions : tuple of str
        The image files looked for in ``--images``.

    Returns
    -------
    list of dict
        ``{"flag", "folder", "files", "testing_images", "detail"}``; ``files`` relative to ``folder``.
    """
    images = Path(images_dir)
    labels = Path(labels_dir) if labels_dir else None
    same = labels is not None and labels.resolve() == images.resolve()
    folders = [("--images", images, image_extensions + _LABEL_EXTENSIONS if same else image_extensions, labels)]
    if labels is not None and not same:
        folders.append(("--labels", labels, _LABEL_EXTENSIONS, images))
    found = []
    for flag, folder, extensions, other in folders:
        files = files_in_subfolders(folder, extensions, skip=[other] if other is not None else [])
        if not files:
            continue
        testing = _testing_stems(files, sources, suffixed_only=same) if flag == "--labels" or same else []
        found.append({"flag": flag, "folder": str(folder), "files": files, "testing_images": testing,
                      "detail": _message(flag, str(folder), files, testing)})
    return found
