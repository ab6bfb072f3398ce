"""Checks against the files a datalist names: the side items file, images and labels on disk,
their shapes, and label values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .annotated import UNANNOTATED
from .schema import (
    _LABELLED_SECTIONS,
    _NIFTI_SUFFIXES,
    _SECTIONS,
    _grids_differ,
    _image_paths,
    _is_int,
    _read_affine,
    _read_array,
    _read_shape,
    _shapes_match,
    _short,
    _valid_image,
    _whole,
)


#: file endings MONAI's image readers (and this project's) take: a path with none of them is no image
_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff", ".npy", ".npz", ".nrrd", ".nhdr", ".mha", ".mhd", ".png",
                   ".jpg", ".jpeg", ".bmp", ".dcm", ".hdr", ".img")


def odd_label_values(values: np.ndarray, allowed: set[int]) -> tuple[list[float], list[int]]:
    """Of a label's distinct ``values``: the non-whole ones, and the whole ones not in ``allowed``
    (what training would take as background).

    >>> odd_label_values(np.array([0.0, 1.0, 1.5, 40.0]), {0, 1, 255})
    ([1.5], [40])
    """
    values = np.asarray(values)
    non_integer: list[float] = []
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
        non_integer = values[values != np.round(values)].tolist()
        values = values[values == np.round(values)]
    return non_integer, [int(v) for v in values.tolist() if int(v) not in allowed]


class FileChecks:
    """Checks against the files a datalist names: the side items file, images and labels on disk,
    their shapes, and label values.

    Mixed into the validator's checker, which provides ``data``, ``src``, ``problem``, ``items``
    and ``desc``.
    """

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
        masks = {  # 4.0 is 4 to training (int(value)): checked as 4
            item["image"]: (f"{section}[{i}]", _whole(item["annotated_mask"]))
            for section in _SECTIONS for i, item in self.items(section)
            if isinstance(item.get("image"), str) and _whole(item.get("annotated_mask")) is not None
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
        self._channels: list[tuple[str, str, tuple[int, ...], int]] = []
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
                        if not full.name.lower().endswith(_IMAGE_SUFFIXES):  # /etc/passwd: MONAI fails in a transform
                            self.problem(where, f"{key} {full} is not an image file by its name (give .nii.gz, as "
                                         "the converters write, or .nii, .tif, .tiff, .npy, .nrrd, .mha, .png): fix "
                                         "the path or convert the image")
                    else:
                        n_missing += 1
                        what = "is a folder, not a file" if full.is_dir() else "file not found"
                        self.problem(
                            where,
                            f"{key} {what}: {full}; fix the path (relative to the data root {root}) "
                            "or re-run the converter",
                        )
                if self.check_shapes:
                    for rel in (r for r in images if r in present and r.lower().endswith(_NIFTI_SUFFIXES)):
                        if (ishape := shape_of(present[rel], where)) is not None:
                            self._check_dims(where, rel, ishape)
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
                        elif ishape[:3] == lshape[:3]:
                            self._check_same_grid(where, present[rel], present[label])
                if self.check_label_values and label and label in present and section in _LABELLED_SECTIONS:
                    if not self.class_info_known:
                        label_value_skipped = True
                        continue
                    self._check_label_values(where, present[label])
        self._check_channels()
        if label_value_skipped:
            self.warnings.append(
                f"{self.src}: label values were not checked: the datalist has no class_table or labels"
            )
        if n_missing and n_missing == n_checked and n_checked > 1:
            self.problems.append(
                f"{self.src}: none of the {n_checked} files exist under the data root {root}: is the data "
                "root right? (--dataroot; by default it is the datalist's folder)"
            )

    def _check_dims(self, where: str, rel: str, shape: tuple[int, ...]) -> None:
        """A 2-D image in a 3-D datalist, or a volume in a 2-D one (``spatial_dims``: 2 for cell
        images, as their converter writes them ``x, y, 1, channel``): training or prediction
        would refuse it later, item by item."""
        try:
            dims = int(self.data.get("spatial_dims") or 3)
        except (TypeError, ValueError):  # the schema check names a bad value
            dims = 3
        if dims == 3 and len(shape) == 2:
            self.problem(where, f"image {rel} is 2-D {tuple(shape)}, while the datalist's images are 3-D: give a "
                         "volume converted like the others (or predict 2-D images with a model trained on them)")
        elif dims == 2 and len(shape) >= 3 and shape[2] > 1:
            self.problem(where, f"image {rel} is a volume {tuple(shape)}, while the datalist's images are 2-D (x, y, "
                         "1, channel as the cells converter writes them): convert it with python -m "
                         "converters.cells.convert")
        else:  # compared with the training images' once all are read (_check_channels)
            self._channels.append((where, rel, tuple(shape), int(shape[3]) if len(shape) > 3 else 1))

    def _check_channels(self) -> None:
        """An image with another channel count than the training images' (a 2-channel volume among
        1-channel EM): the network takes a fixed number of input channels."""
        from collections import Counter

        train = Counter(ch for where, _, _, ch in self._channels if where.startswith("training"))
        if not train:
            return
        usual = train.most_common(1)[0][0]
        for where, rel, shape, ch in self._channels:
            if ch != usual:
                self.problem(where, f"image {rel} has {ch} channel(s) {shape}, while the training images have "
                             f"{usual}: the network takes {usual}; give an image converted like the others")

    def _check_same_grid(self, where: str, image: Path, label: Path) -> None:
        """Same shape is not enough: MONAI pairs image and label voxel by voxel, so a label on
        another spacing or origin would train shifted or scaled without a word."""
        try:
            ia, la = _read_affine(image), _read_affine(label)
        except Exception:  # noqa: BLE001 - an unreadable header is reported by the shape check
            return
        if ia is None or la is None:
            return
        how = _grids_differ(ia, la)
        if how:
            self.problem(where, f"label {label} is on another grid than image {image} ({how}); MONAI pairs them "
                         "voxel by voxel, so the label would be misplaced: re-convert this crop (or resample the "
                         "label onto the image's grid)")

    def _check_label_values(self, where: str, path: Path) -> None:
        try:
            arr = _read_array(path)
        except Exception as exc:  # noqa: BLE001
            self.problem(where, f"cannot read the label data of {path}: {exc}; re-convert it")
            return
        if arr is None:
            return
        k = max(self.class_names) if self.class_names else 0
        non_integer, bad = odd_label_values(np.unique(np.asarray(arr)), {0, UNANNOTATED, *self.class_names})
        if non_integer:
            self.problem(
                where,
                f"label {path} has non-integer values {non_integer[:10]}; labels must hold "
                "class ids 0..K: re-convert it (nearest-neighbour resampling)",
            )
        if bad:
            shown = bad[:10] + (["..."] if len(bad) > 10 else [])
            self.problem(
                where,
                f"label {path} has values {shown} that are not class ids (allowed: 0..{k}, and "
                f"{UNANNOTATED} for not annotated); re-convert "
                "the label or fix class_table",
            )
