"""The duplicate check of a datalist: one image (or label) listed by two items, whether by the
same path, another spelling of it, a symlink, a hard link or a byte-for-byte copy."""

from __future__ import annotations

import os
from typing import Any

from .same_files import file_identity, same_content
from .schema import _LABELLED_SECTIONS, _SECTIONS, _image_paths, _valid_image, _whole

#: How the second entry reaches the first one's image, by the key that matched (see ``_how``).
_HOW = {
    "path": "",
    "inode": " (the same file under another name: a hard link)",
    "bytes": " (a byte-for-byte copy of its file)",
}


def _leak(first: str, second: str) -> str:
    """What listing one crop in places ``first`` and ``second`` does (places from ``_place``)."""
    if first == second:
        return f"both are in {first}, so the crop counts twice"
    if "testing" in (first, second):
        return f"one is in {first}, the other in {second}, so the test score includes a crop seen in training"
    return f"one is in {first}, the other in {second}, so the crop leaks between training and validation"


class DuplicateChecks:
    """The duplicate check of a datalist's images and labels.

    Mixed into the validator's checker, which provides ``root``, ``check_files``, ``problem``,
    ``items`` and ``desc``.
    """

    def _joined(self, path: str) -> str:
        """The path of an item's file: relative paths are under the data root."""
        root = getattr(self, "root", None)
        return os.path.join(str(root), path) if root is not None else path

    def _file_keys(self, paths: list[str]) -> dict[str, tuple[str, Any]]:
        """Path -> key per file: realpath (``./x``, ``x//y``, absolute and symlinked spellings are
        one), and (st_dev, st_ino) too when files are checked (a hard link is the file)."""
        if not getattr(self, "check_files", False):
            return {p: ("path", os.path.realpath(self._joined(p))) for p in paths}
        return {p: file_identity(self._joined(p)) for p in paths}

    def _image_keys(self, paths: list[str], files: dict[str, tuple[str, Any]]) -> dict[str, tuple[str, Any]]:
        """Path -> key per image content: the file's key, or ``("bytes", digest)`` for a file whose
        bytes another image file shares (read only for images of equal size)."""
        if not getattr(self, "check_files", False):
            return dict(files)
        one_name = {files[p]: self._joined(p) for p in paths if files[p][0] == "inode"}
        digests = same_content(one_name.values())
        return {p: ("bytes", digests[one_name[files[p]]]) if one_name.get(files[p]) in digests else files[p]
                for p in paths}

    def _place(self, section: str, item: dict[str, Any]) -> str:
        """Where an item is used: ``fold N`` for a training item with a fold, else its section."""
        fold = _whole(item.get("fold"))
        return f"fold {fold}" if section == "training" and fold is not None and fold >= 0 else section

    @staticmethod
    def _how(keys: list[tuple[str, Any]], paths: list[str], first_paths: list[str]) -> str:
        """Words for how two entries' images are one: another spelling, a hard link or a copy."""
        kinds = {k[0] for k in keys}
        if "bytes" in kinds:
            return _HOW["bytes"]
        real = [os.path.realpath(p) for p in paths] == [os.path.realpath(p) for p in first_paths]
        return _HOW["path"] if real or "inode" not in kinds else _HOW["inode"]

    def check_duplicates(self) -> None:
        """Refuse an image listed by two items (and a label used by two), however it is reached.

        A crop in two folds, or in training and testing, leaks: the model is validated or tested
        on what it trained on. Images are compared by path, by file (st_dev, st_ino) and, among
        files of equal size, by content; labels by path and file only (two crops may well have
        identical labels, e.g. all background).
        """
        entries = [(s, i, it) for s in _SECTIONS for i, it in self.items(s)]
        images = {str(p) for _, _, it in entries if _valid_image(it.get("image")) for p in _image_paths(it)}
        labels = {it["label"] for s, _, it in entries if s in _LABELLED_SECTIONS and _is_label(it.get("label"))}
        files = self._file_keys(sorted(images | labels))
        contents = self._image_keys(sorted(images), files)
        first_image: dict[Any, tuple[str, str, list[str]]] = {}
        first_label: dict[Any, str] = {}
        for section, i, item in entries:
            if _valid_image(item.get("image")):
                self._image_twice(section, i, item, contents, first_image)
            if section in _LABELLED_SECTIONS and _is_label(item.get("label")):
                self._label_twice(section, i, item, files, first_label)

    def _image_twice(self, section: str, i: int, item: dict[str, Any], contents: dict[str, Any],
                     first: dict[Any, tuple[str, str, list[str]]]) -> None:
        """Report this item's image if an earlier item lists it; else remember it."""
        paths = [str(p) for p in _image_paths(item)]
        keys = [contents[p] for p in paths]
        place = self._place(section, item)
        if tuple(keys) not in first:
            first[tuple(keys)] = (self.desc(section, i), place, paths)
            return
        where, first_place, first_paths = first[tuple(keys)]
        how = self._how(keys, [self._joined(p) for p in paths], [self._joined(p) for p in first_paths])
        if how == _HOW["bytes"] and first_place == place:
            return  # two files with equal bytes in one place (two blank testing images, say) leak nothing
        self.problem(
            self.desc(section, i),
            f"the same image is already listed as {where}{how}; {_leak(first_place, place)}; "
            "remove one of the two entries (list each image once)",
        )

    def _label_twice(self, section: str, i: int, item: dict[str, Any], files: dict[str, Any],
                     first: dict[Any, str]) -> None:
        """Report this item's label if an earlier item uses that file, or if it is the image."""
        label = item["label"]
        key = files[label]
        if key in first:
            how = " (the same file under another name)" if key[0] == "inode" else ""
            self.problem(self.desc(section, i),
                         f"label {label!r} is already used by {first[key]}{how}; each item needs its own label")
        else:
            first[key] = f"{section}[{i}]"
        if key in {files[str(p)] for p in _image_paths(item) if str(p) in files}:
            self.problem(self.desc(section, i), "label is the same file as the image; point it at the label file")


def _is_label(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
