"""What lives in a work_dir, in one place.

::

    <work_dir>/
      input.yaml                 data source config (modality, datalist, dataroot, generation options;
                                 class_names and sigmoid for other templates, e.g. MONAI's official ones)
      datastats.yaml, datastats_by_case.yaml, datastats_review.md, review/*.png   (--mode analyze;
                                 datastats_source.json: the training items they describe)
      algorithm_templates/       copy of the templates the bundles were generated from
      <algo>_<fold>/             one MONAI bundle per network and fold (--mode generate)
        configs/hyper_parameters.yaml, scripts/, algo_object.json
        model/                   checkpoints, progress.yaml, progress.png, tensorboard/ (--mode train)
        training.log             everything the training printed
        training_done.json       written when training exited cleanly: the bundle counts as trained
      ensemble_output/           per-class probability maps of the testing items (--mode ensemble)
      replaced/                  bundles moved aside by --force (never deleted)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DATASTATS",
    "DONE_MARKER",
    "ENSEMBLE_DIR",
    "INPUT_YAML",
    "REPLACED_DIR",
    "Bundle",
    "bundle_ckpt_path",
    "check_input_datalist",
    "moved_key",
    "repoint_bundles",
    "data_kind",
    "in_directory",
    "list_bundles",
    "move_aside",
    "prefer_templates",
    "read_input",
    "write_input",
    "datalist_changed",
]

INPUT_YAML = "input.yaml"
DATASTATS = "datastats.yaml"
DONE_MARKER = "training_done.json"
ENSEMBLE_DIR = "ensemble_output"
REPLACED_DIR = "replaced"


@dataclass(frozen=True)
class Bundle:
    """A generated bundle folder ``<algo>_<fold>``."""

    path: Path
    algo: str
    fold: int

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def done(self) -> dict | None:
        """The done record when training finished cleanly and its weights are there, else None
        (a marker whose weights were deleted vouches for nothing: see :attr:`weights_lost`)."""
        record = self._marker()
        return None if record is None or _lost(self.path, record) else record

    @property
    def weights_lost(self) -> bool:
        """``training_done.json`` is there but the best weights it recorded (``model.pt``; else any
        weights file it recorded) are not: deleted or moved (deleting only ``last.pt`` is fine).
        Markers written before they recorded their weights claim nothing."""
        try:
            record = self._marker()
        except ValueError:  # a damaged marker: reading `done` names it
            return False
        return record is not None and _lost(self.path, record)

    def _marker(self) -> dict | None:
        f = self.path / DONE_MARKER
        if not f.is_file():
            return None
        try:
            record = json.loads(f.read_text())
        except ValueError as exc:
            record = exc
        if isinstance(record, dict):
            return record
        kind = "null" if record is None else f"a {type(record).__name__}"
        why = record if isinstance(record, ValueError) else f"{kind}, not the record of a training"
        raise ValueError(f"{f} is damaged ({why}): delete it and run --mode train (the bundle resumes from its "
                         "last checkpoint), or restore it")

    @property
    def started(self) -> bool:
        """Has training written anything (checkpoint, progress or log)?"""
        model = self.path / "model"
        return (model.is_dir() and any(model.iterdir())) or (self.path / "training.log").is_file()


def _lost(bundle: Path, record: Mapping[str, Any]) -> bool:
    recorded = record.get("weights") or []
    if not isinstance(recorded, list):  # a marker edited by hand: it vouches for nothing
        return False
    recorded = [str(n) for n in recorded]
    best = [n for n in recorded if Path(n).name == "model.pt"] or recorded  # the weights inference uses
    return bool(best) and not any((bundle / name).is_file() for name in best)


def weight_files(bundle: str | os.PathLike) -> list[str]:
    """The weights files (``*.pt``, ``*.pth``, ``*.ckpt``) under a bundle's ``model/`` and its
    ``ckpt_path``, relative to the bundle."""
    root = Path(bundle).resolve()
    folders = {root / "model"}
    try:
        folders.add(Path(bundle_ckpt_path(root)).resolve())
    except Exception:  # noqa: BLE001 - a foreign config we cannot evaluate: model/ only
        pass
    found = {f for d in folders if d.is_dir() for ext in ("*.pt", "*.pth", "*.ckpt") for f in d.glob(ext)}
    return sorted(str(f.relative_to(root)) for f in found if root in f.parents)


def list_bundles(work_dir: str | os.PathLike) -> list[Bundle]:
    """Bundles of ``work_dir`` (folders with ``algo_object.json``), sorted by name."""
    out = []
    work = Path(work_dir)
    if not work.is_dir():
        return out
    for p in sorted(work.iterdir()):
        if not (p / "algo_object.json").is_file():
            continue
        algo, _, fold = p.name.partition("_")
        if fold.split("_")[0].isdigit():
            out.append(Bundle(p, algo, int(fold.split("_")[0])))
    return out


def read_input(work_dir: str | os.PathLike) -> dict[str, Any]:
    """``input.yaml`` of a work_dir; tells what to do when it is missing."""
    f = Path(work_dir) / INPUT_YAML
    if not f.is_file():
        raise FileNotFoundError(f"{f} not found: run --mode generate (or full) with --datalist first")
    from auto3dseg.bundles.config import read_yaml_file

    fix = "fix it there, or delete it and run --mode generate --datalist <your datalist.json> (bundles are kept)"
    data = read_yaml_file(f, fix) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{f}: holds {type(data).__name__}, not the work_dir's record of its datalist; {fix}")
    return data


def data_kind(datalist: str | os.PathLike | None, source: dict[str, Any] | None = None) -> str | None:
    """``"cells"`` or ``"cellmap"`` for a datalist (read from its file, else from the ``name``
    an ``input.yaml`` recorded), None when neither tells."""
    from datalists.cell_classes import is_cell_datalist

    try:
        return "cells" if is_cell_datalist(json.loads(Path(datalist or "").read_text())) else "cellmap"
    except (OSError, ValueError, AttributeError):
        pass
    name = str((source or {}).get("name") or "")
    return "cells" if name == "cells2d" else "cellmap" if name == "cellmap" else None


def _same_file_content(a: Path, b: Path) -> bool:
    try:
        return json.loads(a.read_text()) == json.loads(b.read_text())
    except (OSError, ValueError):
        return False


def check_input_datalist(work_dir: str | os.PathLike, datalist: str | os.PathLike, dataroot: str | os.PathLike, *,
                         allow_other: bool = False) -> str | None:
    """Refuse (``ValueError``) a ``--datalist`` other than the one ``<work_dir>/input.yaml`` names:
    the work_dir's statistics, bundles, ensemble and submission belong to that one, and a run
    would re-point ``input.yaml`` at the new one. Nothing is changed or moved.

    The same file (or a copy with the same content and data root) is accepted. With
    ``allow_other`` (``--force_new_datalist``) another datalist of the same kind is accepted (the
    same data moved or re-converted); one of another kind (2-D cells in a CellMap work_dir) never
    is. Returns a note to print when the datalist was accepted though its path changed.
    """
    work = Path(work_dir)
    f = work / INPUT_YAML
    if not f.is_file():
        return None
    try:
        src = yaml.safe_load(f.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None  # read_input reports a damaged input.yaml where it matters
    recorded = src.get("datalist")
    if not recorded:
        return None
    old, new = Path(str(recorded)).resolve(), Path(datalist).resolve()
    if old == new:
        return None
    same_root = Path(str(src.get("dataroot") or old.parent)).resolve() == Path(dataroot).resolve()
    if same_root and _same_file_content(old, new):
        return f"note: {f} named {old}; {new} has the same content: using it"
    kind_old, kind_new = data_kind(old, src), data_kind(new)
    names = {"cells": "2-D cell", "cellmap": "CellMap"}
    if kind_old and kind_new and kind_old != kind_new:
        raise ValueError(f"--work_dir {work} holds {names[kind_old]} work for {old} ({f}), not for the "
                         f"{names[kind_new]} datalist {new}: a work_dir holds one data set; use another --work_dir "
                         "for it (nothing was changed)")
    if allow_other:
        from auto3dseg.bundles.checks import check_class_tables

        try:  # before anything is re-pointed: bundles of another class table cannot work on it
            check_class_tables(list_bundles(work), new, work)
        except ValueError as exc:
            raise ValueError(f"--force_new_datalist: {new} has another class table than the bundles of {work} "
                             f"(nothing was changed; it still works on {old}): {exc}") from exc
        return (f"note: --force_new_datalist: {work} now works on {new} (was {old}; its statistics and bundles are "
                "kept, and the bundles' configs name the new datalist)")
    same_text = old.is_file() and _same_file_content(old, new)
    state = ("; that one no longer exists" if not old.is_file() else
             "; the same datalist text in another folder (its images may differ)" if same_text else "")
    raise ValueError(f"--work_dir {work} was set up for the datalist {old} ({f}{state}), not {new}"
                     + ": use another --work_dir for another data set, or, if this is the same data moved or "
                     "re-converted, add --force_new_datalist (analyze/generate --force redo the statistics and "
                     "bundles; nothing was changed)")


def repoint_input(work_dir: str | os.PathLike, datalist: str | os.PathLike, dataroot: str | os.PathLike) -> Path:
    """Make ``<work_dir>/input.yaml`` name ``datalist`` and ``dataroot`` (absolute), keeping its
    other keys: what a run accepted with ``--force_new_datalist`` (or a same-content copy) uses."""
    src = yaml.safe_load((Path(work_dir) / INPUT_YAML).read_text()) or {}
    new = {"datalist": str(Path(datalist).resolve()), "dataroot": str(Path(dataroot).resolve())}
    repoint_bundles(work_dir, {str(src.get("datalist")): new["datalist"], str(src.get("dataroot")): new["dataroot"]})
    return write_input(work_dir, {**src, **new})


#: the keys of a bundle's configs that name the data: ours, and MONAI's official templates'
DATA_KEYS = ("data_list_file_path", "dataroot", "data_file_base_dir")


def repoint_bundles(work_dir: str | os.PathLike, moves: Mapping[str, str]) -> list[Path]:
    """Make the bundles' configs name the data where ``input.yaml`` now does: each top-level
    :data:`DATA_KEYS` line whose value is a key of ``moves`` gets its value (their training
    scripts read these, not input.yaml). Other lines, comments included, are kept; each file is
    written under a temporary name and renamed. Returns the files changed."""
    import re

    from converters.outputs import atomic_write_text

    pattern = re.compile(rf"^({'|'.join(DATA_KEYS)}):[ \t]*(.*?)[ \t]*$", re.M)

    def swap(m: re.Match) -> str:
        value = m.group(2).strip("'\"")
        return f"{m.group(1)}: {json.dumps(moves[value])}" if value in moves else m.group(0)

    changed = []
    for bundle in list_bundles(work_dir):
        for f in sorted((bundle.path / "configs").glob("*.yaml")):
            text = f.read_text()
            new = pattern.sub(swap, text)
            if new != text:
                atomic_write_text(f, new)
                changed.append(f)
    return changed


def write_input(work_dir: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``input.yaml``; it records a digest of the datalist's content (``datalist_sha1``), so
    that a datalist re-converted in place is noticed (:func:`datalist_changed`)."""
    from auto3dseg.bundles.config import write_yaml_atomic

    f = Path(work_dir) / INPUT_YAML
    digest = _sha1(data.get("datalist"))
    data = {**data, **({"datalist_sha1": digest} if digest else {})}
    write_yaml_atomic(f, data, header="# data source config of this work_dir (MONAI Auto3DSeg's input.yaml)\n")
    return f


def _sha1(path: Any) -> str | None:
    import hashlib

    try:
        return hashlib.sha1(Path(str(path)).read_bytes()).hexdigest()
    except (OSError, TypeError):
        return None


def datalist_changed(work_dir: str | os.PathLike) -> str | None:
    """A warning when the datalist ``input.yaml`` names no longer has the content it had when the
    work_dir was set up (re-converted in place), else None."""
    try:
        src = yaml.safe_load((Path(work_dir) / INPUT_YAML).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    recorded, now = src.get("datalist_sha1"), _sha1(src.get("datalist"))
    if not recorded or not now or recorded == now:
        return None
    dl = Path(str(src["datalist"]))
    try:  # the training items and files as analysed: when they are the same, only the testing list changed
        from auto3dseg.analysis.source_record import DATASTATS_SOURCE, stale_datastats

        if (Path(work_dir) / DATASTATS_SOURCE).is_file() and stale_datastats(work_dir, dl, src.get("dataroot")) is None:
            from auto3dseg.bundles.checks import check_class_tables

            try:
                check_class_tables(list_bundles(Path(work_dir).resolve()), dl, work_dir)
            except ValueError:
                return (f"warning: {dl} changed since {work_dir} was set up with it: not its training items or files, "
                        "but its class table, which is not the one the bundles were generated for (ensemble and "
                        "submit refuse them, saying what to do)")
            from auto3dseg.orchestration.train_bundles import trained_on_other_files

            bundles = list_bundles(Path(work_dir).resolve())
            if stale := [b.name for b in bundles if trained_on_other_files(b)]:  # analysed again since: not news
                one = len(stale) == 1
                return (f"note: {dl} changed since {work_dir} was set up with it, and its analysis was made again "
                        f"for its files now; {', '.join(stale[:4])}{' and more' if len(stale) > 4 else ''} "
                        f"{'was' if one else 'were'} trained on earlier ones: --mode train --force retrains "
                        f"{'it' if one else 'them'}")
            what = ("the bundles stand; --mode ensemble predicts any new testing item" if bundles
                    else "its analysis stands (the review follows the datalist's class table)")
            return f"note: {dl} changed since {work_dir} was set up with it, but not its training items or files: {what}"
    except (OSError, ValueError, AttributeError):
        pass
    return (f"warning: {dl} changed since {work_dir} was set up with it (re-converted in place?): its statistics "
            f"and bundles were made for the earlier one (a converter keeps it in {dl.parent / 'replaced'}/). "
            "--mode oof refuses changed folds; to start over on this one, run --mode analyze (it analyses the changed "
            "files again), then generate with --force")


def move_aside(path: Path, work_dir: str | os.PathLike) -> Path:
    """Move ``path`` into ``<work_dir>/replaced/<name>-<time>`` (nothing is deleted)."""
    dest_dir = Path(work_dir) / REPLACED_DIR
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while dest.exists():
        dest = dest_dir / f"{path.name}-{time.strftime('%Y%m%d-%H%M%S')}-{n}"
        n += 1
    shutil.move(str(path), str(dest))
    return dest


def bundle_ckpt_path(bundle: str | os.PathLike) -> Path:
    """The bundle's ``ckpt_path`` (where ``progress.yaml`` and the weights are), evaluated.

    Our templates write a plain path (re-rooted to where the bundle is now); MONAI's official
    ones write an expression (``$@bundle_root + '/model'``), which is evaluated as MONAI's
    ``get_score`` does, with ``bundle_root`` set to the bundle's current folder.

    Examples
    --------
    >>> bundle_ckpt_path("work_dir/segresnet_0")  # doctest: +SKIP
    PosixPath('/abs/work_dir/segresnet_0/model')
    """
    from monai.bundle import ConfigParser

    from auto3dseg.bundles.config import load_bundle_config

    root = Path(bundle).resolve()
    files = sorted(str(f) for f in (root / "configs").glob("*.yaml")) + sorted(
        str(f) for f in (root / "configs").glob("*.json"))
    value = load_bundle_config(files).get("ckpt_path") if files else None
    if isinstance(value, str) and value.startswith(("$", "@")):
        parser = ConfigParser()
        parser.read_config(files)
        if "bundle_root" in parser:
            parser["bundle_root"] = str(root)
        value = parser.get_parsed_content("ckpt_path")
    return Path(value) if value else root


@contextlib.contextmanager
def in_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Run a block in ``path`` as the current directory (what ``contextlib.chdir`` does from
    Python 3.11): official segresnet writes ``runner.log`` into the current directory.

    Examples
    --------
    >>> with in_directory("/tmp"):  # doctest: +SKIP
    ...     Path.cwd()
    PosixPath('/tmp')
    """
    old = os.getcwd()
    os.chdir(path)
    try:
        yield Path(path)
    finally:
        os.chdir(old)


def prefer_templates(template_dir: str | os.PathLike, names: Sequence[str]) -> None:
    """Make ``import <name>.scripts.algo`` load the templates of ``template_dir``.

    MONAI's BundleGen and ``algo_from_json`` import a template as the package ``<name>``
    (e.g. ``segresnet``) from folders appended to ``sys.path``; in one process a same-named
    template imported earlier from another folder (the project's own, then MONAI's official
    one) would be reused silently. This puts ``template_dir`` first on ``sys.path`` and
    forgets modules ``<name>`` and ``<name>.*`` loaded from elsewhere.

    Examples
    --------
    >>> prefer_templates("work_dir/algorithm_templates", ["segresnet"])  # doctest: +SKIP
    """
    folder = os.path.abspath(os.fspath(template_dir))
    while folder in sys.path:
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    tops = set(names)
    for mod in [m for m in sys.modules if m.split(".")[0] in tops]:
        origin = getattr(sys.modules[mod], "__file__", None)
        if not origin or not os.path.abspath(origin).startswith(folder + os.sep):
            del sys.modules[mod]


def recorded_folds(work_dir: str | os.PathLike, src: dict[str, Any]) -> int:
    """``num_fold`` of ``input.yaml`` (0 when it records none); a value that is no whole number
    is a ``ValueError`` naming the file."""
    value = src.get("num_fold") or 0
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{Path(work_dir) / INPUT_YAML}: num_fold {value!r} is not a whole number: fix it there (the "
                         "number of folds its bundles were generated with)") from None


def moved_key(path: str | os.PathLike) -> str:
    """An image's name that survives moving the data (``--force_new_datalist``): its folder and
    file name.

    >>> moved_key("/old/nifti/images/crop1.nii.gz") == moved_key("/new/place/images/crop1.nii.gz")
    True
    """
    return "/".join(Path(path).parts[-2:])
