"""Reading what the CellMap scorer compares: the submission, the truth and the test manifest.

* :func:`open_submission` opens a submission (a Zarr-2 folder, a folder holding one, or a
  ``.zip``) as a :class:`SubmissionStore`, a read-only listing of its crop folders and
  label arrays that needs no ``.zgroup`` file (the official scorer adds missing ones);
* :func:`find_truth_labels` lists every (crop, label) of a truth store (the flat
  ``crop<N>/<label>`` layout, or CellMap ``recon-*/labels/groundtruth`` groups);
* :func:`read_manifest_grids` reads the toolbox's ``test_crop_manifest.csv`` into the
  target grid of each (crop, label).

Example::

    >>> from converters.geometry import Grid
    >>> attrs = {"resolution": [8, 8, 8]}           # the official scorer's alias of voxel_size
    >>> label_attr(attrs, "voxel_size", "crop1/mito")
    (8.0, 8.0, 8.0)
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import zarr

from auto3dseg.submission.placement import grid_of
from converters.cellmap import zarr_tree as cz
from converters.geometry import Grid

__all__ = [
    "ATTR_ALIASES",
    "CROP_RE",
    "ScoringInputError",
    "SubmissionStore",
    "TruthLabel",
    "array_grid",
    "find_truth_labels",
    "label_attr",
    "open_submission",
    "read_manifest_grids",
]

CROP_RE = re.compile(r"^crop(\d+)$")
# The attribute names the official scorer accepts for each vector, first found wins.
ATTR_ALIASES: dict[str, tuple[str, ...]] = {"voxel_size": ("voxel_size", "resolution", "scale"),
                                            "translation": ("translation", "offset")}


class ScoringInputError(ValueError):
    """A submission or truth store cannot be read as expected; the message names the file."""


@dataclass(frozen=True)
class TruthLabel:
    """One (crop, label) of the ground truth.

    Attributes
    ----------
    crop : int
        Crop number.
    label : str
        Class name (``"mito"``).
    array : array-like
        The label array (z, y, x), a zarr array or an ndarray.
    grid : Grid
        Its physical grid.
    source : str
        Where it was read from (for messages).
    """

    crop: int
    label: str
    array: Any
    grid: Grid
    source: str = ""

    @property
    def key(self) -> str:
        return f"crop{self.crop}/{self.label}"


# --------------------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------------------
def label_attr(attrs: Mapping[str, Any], name: str, where: str, aliases: bool = True
               ) -> tuple[float, float, float] | None:
    """A 3-vector attribute (``voxel_size`` or ``translation``, z, y, x, nm), or None if absent.

    With ``aliases`` the official scorer's other names are accepted too (``resolution``,
    ``scale``; ``offset``).

    Raises
    ------
    ScoringInputError
        If the value is not 3 numbers.

    >>> label_attr({"translation": [1, 2, 3]}, "translation", "crop1/er")
    (1.0, 2.0, 3.0)
    >>> label_attr({}, "translation", "crop1/er") is None
    True
    """
    names = ATTR_ALIASES[name] if aliases else (name,)
    value = next((attrs[n] for n in names if n in attrs), None)
    if value is None:
        return None
    try:
        vec = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ScoringInputError(f"{where}: '{name}' must be 3 numbers (z, y, x, nm), got {value!r}") from None
    if len(vec) != 3:
        raise ScoringInputError(f"{where}: '{name}' must be 3 numbers (z, y, x, nm), got {value!r}")
    if not all(math.isfinite(v) for v in vec) or (name == "voxel_size" and min(vec) <= 0):
        need = "positive sizes" if name == "voxel_size" else "finite numbers"
        raise ScoringInputError(f"{where}: '{name}' {list(vec)} must be {need} (z, y, x, nm): the array cannot be "
                                "placed on the crop; write it with the crop's voxel_size and translation")
    return vec  # type: ignore[return-value]


def array_grid(arr: zarr.Array, where: str) -> Grid:
    """The grid of a plain label array from its ``voxel_size``/``translation`` attrs (both required).

    Raises
    ------
    ScoringInputError
        If the array is not 3D, lacks either attribute, or its ``shape`` attribute disagrees.
    """
    if arr.ndim != 3:
        raise ScoringInputError(f"{where}: expected a 3D (z, y, x) array, got shape {arr.shape}")
    voxel_size = label_attr(arr.attrs, "voxel_size", where, aliases=False)
    translation = label_attr(arr.attrs, "translation", where, aliases=False)
    for name, vec in (("voxel_size", voxel_size), ("translation", translation)):
        if vec is None:
            raise ScoringInputError(f"{where}: .zattrs has no '{name}' (expected z, y, x in nm)")
    shape = arr.attrs.get("shape")
    if shape is not None and tuple(int(v) for v in shape) != tuple(arr.shape):
        raise ScoringInputError(f"{where}: attribute shape {list(shape)} differs from the array's {list(arr.shape)}")
    return grid_of(voxel_size, translation, arr.shape)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------------------
class SubmissionStore:
    """Read-only listing of a submission's ``<crop>/<label>`` nodes, in a folder or a zip.

    Parameters
    ----------
    store : zarr store
        ``zarr.DirectoryStore`` or ``zarr.ZipStore``.
    prefix : str
        Folder of the Zarr root inside the store ('' = the store's root).
    where : str
        Name for messages (the submission path).
    """

    def __init__(self, store: Any, prefix: str, where: str) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.where = where

    def _path(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _children(self, *parts: str) -> list[str]:
        try:
            return sorted(self.store.listdir(self._path(*parts)))
        except (KeyError, FileNotFoundError, NotADirectoryError):
            return []

    def _is_dir(self, *parts: str) -> bool:
        return bool(self._children(*parts)) and parts[-1] not in (".zgroup", ".zattrs", ".zarray")

    def crop_dirs(self) -> list[str]:
        """Names of the folders at the root (``crop1``, or bare ``1`` ...)."""
        return [n for n in self._children() if not n.startswith(".") and self._is_dir(n)]

    def node_kind(self, crop_dir: str, label: str) -> str | None:
        """``"array"`` (a ``.zarray`` is there), ``"group"`` (a folder without one) or None."""
        if f"{self._path(crop_dir, label)}/.zarray" in self.store:
            return "array"
        return "group" if self._is_dir(crop_dir, label) else None

    def labels(self, crop_dir: str) -> dict[str, str]:
        """Every node of a crop folder with its kind (see :meth:`node_kind`)."""
        found = {}
        for name in self._children(crop_dir):
            kind = None if name.startswith(".") else self.node_kind(crop_dir, name)
            if kind:
                found[name] = kind
        return found

    def array(self, crop_dir: str, label: str) -> zarr.Array:
        """The label array at ``<crop_dir>/<label>``."""
        try:
            return zarr.open_array(self.store, mode="r", path=self._path(crop_dir, label))
        except Exception as exc:
            raise ScoringInputError(f"{self.where}:{crop_dir}/{label}: not a readable zarr array ({exc})") from exc


def _zarr_dirs(names: list[str]) -> list[str]:
    """Every folder named ``*.zarr`` (any depth) among the paths of a zip."""
    found = set()
    for name in names:
        parts = name.split("/")[:-1]
        for i, part in enumerate(parts):
            if part.endswith(".zarr"):
                found.add("/".join(parts[: i + 1]))
    return sorted(d for d in found if not d.startswith("__MACOSX"))


def _dir_zarr_dirs(root: Path) -> list[str]:
    """Every folder named ``*.zarr`` below ``root``, not descending into arrays."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        if ".zarray" in filenames:
            dirnames[:] = []
            continue
        for d in dirnames:
            if d.endswith(".zarr"):
                found.append(Path(dirpath, d).relative_to(root).as_posix())
    return sorted(found)


def _pick_root(zarr_dirs: list[str], has_root_group: bool, where: str, rules: str) -> str:
    """The folder holding the Zarr root.

    Official rules: one ``*.zarr`` folder anywhere → that folder; none → the root; more →
    refused. Strict rules: a ``.zgroup`` at the root → the root; else ``submission.zarr``
    or the single ``*.zarr`` folder at the top.
    """
    if rules == "official":
        if len(zarr_dirs) > 1:
            raise ScoringInputError(f"{where}: {len(zarr_dirs)} '*.zarr' folders ({', '.join(zarr_dirs)}); "
                                    "the official scorer refuses more than one")
        return zarr_dirs[0] if zarr_dirs else ""
    if has_root_group:
        return ""
    top = [d for d in zarr_dirs if "/" not in d]
    if "submission.zarr" in top:
        return "submission.zarr"
    if len(top) == 1:
        return top[0]
    raise ScoringInputError(f"{where}: no zarr group at the root or in one '<name>.zarr/' folder inside it "
                            f"(found: {', '.join(top) if top else 'none'})")


def _refuse_probability_maps(p: Path) -> None:
    """The ensemble's output (``*_prob.zarr`` maps, ``ensemble.json``) is no submission: scored, it
    fails with a puzzling "no folder crop<N>"; say what it is and what to give."""
    from auto3dseg.ensembling.probability_maps import is_probability_map

    one = is_probability_map(p)
    if one or (p.is_dir() and ((p / "ensemble.json").is_file() or any(is_probability_map(c) for c in p.iterdir()))):
        what = "a probability map" if one else "a folder of probability maps"
        raise ScoringInputError(f"{p} is {what} (the ensemble's output), not a submission: run "
                                "run_auto3dseg.py --mode submit, which scores submission/submission.zip with "
                                "--truth; or give that zip here")
    if p.is_dir() and any(c.name.endswith("_label.tiff") for c in p.iterdir()):
        raise ScoringInputError(f"{p} holds 2-D cell masks (<stem>_label.tiff), not a CellMap submission: score them "
                                "with python -m auto3dseg.evaluation.cellseg --pred ... --gt ...")


@contextlib.contextmanager
def open_submission(path: str | os.PathLike[str], rules: str = "official") -> Iterator[SubmissionStore]:
    """Open a submission read-only: a zarr folder, a folder holding one, or a ``.zip``.

    Under ``rules="official"`` the root is found as the official scorer does (a folder
    holding exactly one zip is that zip; one ``*.zarr`` folder anywhere is the root; none
    means the given root); under ``"strict"`` a ``.zgroup`` must be at the root or in
    ``submission.zarr/`` (or the single ``<name>.zarr/``). Use as a context manager.

    Raises
    ------
    ScoringInputError
        If the path does not exist or holds no usable store; the message names it.
    """
    p = Path(path)
    if not p.exists():
        raise ScoringInputError(f"{p}: no such submission file or folder")
    _refuse_probability_maps(p)
    if p.is_dir() and rules == "official":
        zips = [f for f in sorted(p.iterdir()) if f.is_file() and zipfile.is_zipfile(f)]
        if len(zips) > 1:
            raise ScoringInputError(f"{p}: {len(zips)} zip files in the folder; the official scorer needs one")
        if zips:
            p = zips[0]
    if p.is_file():
        try:
            store = zarr.ZipStore(str(p), mode="r")
        except Exception as exc:  # zipfile raises BadZipFile, OSError, ...
            raise ScoringInputError(f"{p}: not a readable zip file ({exc})") from exc
        try:
            names = [n for n in store.keys()]
            prefix = _pick_root(_zarr_dirs(names), ".zgroup" in names, str(p), rules)
            yield SubmissionStore(store, prefix, str(p))
        finally:
            store.close()
        return
    prefix = _pick_root(_dir_zarr_dirs(p), (p / ".zgroup").exists(), str(p), rules)
    yield SubmissionStore(zarr.DirectoryStore(str(p)), prefix, str(p))


# --------------------------------------------------------------------------------------
# Truth
# --------------------------------------------------------------------------------------
def _flat_truth(root: zarr.hierarchy.Group, where: str) -> list[TruthLabel]:
    found = []
    for crop_name, crop in root.groups():
        m = CROP_RE.match(crop_name)
        if not m:
            continue
        for label, arr in crop.arrays():
            src = f"{where}/{crop_name}/{label}"
            found.append(TruthLabel(int(m.group(1)), label, arr, array_grid(arr, src), src))
    return found


def _cellmap_truth(path: Path) -> list[TruthLabel]:
    patterns = ["recon-*/labels/groundtruth/crop*"] if path.suffix == ".zarr" else list(cz.GT_GLOBS)
    crop_dirs = sorted({p for pat in patterns for p in path.glob(pat) if (p / ".zgroup").exists()})
    found = []
    for crop_dir in crop_dirs:
        store_path = next(p for p in crop_dir.parents if p.suffix == ".zarr")
        rel = crop_dir.relative_to(store_path).as_posix()
        m = CROP_RE.match(crop_dir.name)
        if not m:
            continue
        root = cz.open_readonly(store_path)
        _, statuses, _ = cz.crop_annotation(root, rel)
        for name, status in sorted(statuses.items()):
            if not status.annotated:
                continue
            where = f"{store_path}/{rel}/{name}"
            level = cz.read_levels(root[rel][name], where)[0]
            arr = root[rel][name][level.path]
            found.append(TruthLabel(int(m.group(1)), name, arr, Grid(level.translation, level.scale, arr.shape),
                                    f"{where}/{level.path}"))
    return found


def find_truth_labels(path: str | os.PathLike[str]) -> list[TruthLabel]:
    """Every (crop, label) of a ground-truth store, sorted by crop then label.

    Parameters
    ----------
    path : path
        Either a flat store ``<truth>.zarr/crop<N>/<label>`` (plain arrays with
        ``voxel_size`` and ``translation`` attrs), or CellMap data: a ``<dataset>.zarr``
        store or a folder of them (``<root>/<ds>/<ds>.zarr`` or ``<root>/<ds>.zarr``),
        whose ``recon-*/labels/groundtruth/crop<N>/<label>`` groups carry OME-NGFF
        multiscales. In CellMap data, the finest level is the truth and only the classes
        the crop annotates are listed.

    Raises
    ------
    ScoringInputError
        If the path holds no truth label, or an array lacks its attributes.
    """
    p = Path(path)
    if not p.exists():
        raise ScoringInputError(f"{p}: no such truth folder")
    found: list[TruthLabel] = []
    if (p / ".zgroup").exists():
        found = _flat_truth(cz.open_readonly(p), str(p))
    if not found:
        try:
            found = _cellmap_truth(p)
        except cz.CellMapFormatError as exc:
            raise ScoringInputError(str(exc)) from exc
    if not found:
        raise ScoringInputError(
            f"{p}: no truth labels found (expected crop<N>/<label> arrays, or CellMap "
            "<dataset>.zarr/recon-*/labels/groundtruth/crop<N>/<label>/s0)")
    keys = [t.key for t in found]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ScoringInputError(f"{p}: the same crop and label found more than once: {', '.join(dupes)}")
    return sorted(found, key=lambda t: (t.crop, t.label))


# --------------------------------------------------------------------------------------
# Test manifest
# --------------------------------------------------------------------------------------
def read_manifest_grids(path: str | os.PathLike[str]) -> dict[tuple[int, str], Grid]:
    """The target grid of every (crop, label) of a toolbox ``test_crop_manifest.csv``.

    The grid's origin is the row's ``translation`` (centre of voxel 0, z, y, x, nm),
    its spacing the ``voxel_size`` and its shape the ``shape``.

    Raises
    ------
    ScoringInputError
        If the file is missing or lacks the toolbox's columns.
    """
    try:
        from converters.cellmap.listings import read_test_manifest_rows

        rows = read_test_manifest_rows(path)
    except (OSError, cz.CellMapFormatError, ValueError) as exc:
        raise ScoringInputError(f"{path}: not a readable test crop manifest ({exc})") from exc
    grids: dict[tuple[int, str], Grid] = {}
    for (_, crop), labels in rows.items():
        for row in labels:
            grids[(crop, row["label"])] = grid_of(row["voxel_size"], row["translation"], row["shape"])
    return grids


def truth_stamp(path: str | os.PathLike[str]) -> list[Any] | None:
    """:func:`~converters.outputs.source_stamp` of the crop groups of the truth at ``path``
    (their arrays and attributes, as a CellMap label group's multiscales voxel size; a CellMap
    dataset's EM is not listed): scores cached against a truth edited since are computed
    again. None when the truth cannot be read (scoring names why)."""
    from converters.outputs import source_stamp

    try:
        found = find_truth_labels(path)
    except ScoringInputError:
        return None
    folders = set()
    for t in found:
        root = getattr(getattr(t.array, "store", None), "path", None)
        if root:
            array = PurePosixPath(t.array.path)
            folders.add(Path(root) / next((a for a in array.parents if CROP_RE.match(a.name)), array))
    return source_stamp(sorted(folders), listing=True)


def truth_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> str | None:
    """The first truth array at ``path`` that is really under ``folder`` (links resolved): a truth
    whose crops link into a submission would score it against itself. None when none is."""
    folder = Path(folder).resolve()
    try:
        found = find_truth_labels(path)
    except ScoringInputError:
        return None
    for t in found:
        root = getattr(getattr(t.array, "store", None), "path", None)
        if root and (folder == (real := (Path(root) / t.array.path).resolve()) or folder in real.parents):
            return str(Path(root) / t.array.path)
    return None
