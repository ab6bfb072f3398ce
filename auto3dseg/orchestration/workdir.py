"""What lives in a work_dir, in one place.

::

    <work_dir>/
      input.yaml                 data source config (modality, datalist, dataroot, generation options;
                                 class_names and sigmoid for other templates, e.g. MONAI's official ones)
      datastats.yaml, datastats_by_case.yaml, datastats_review.md, review/*.png   (--mode analyze)
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
from collections.abc import Iterator, Sequence
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
    "in_directory",
    "list_bundles",
    "move_aside",
    "prefer_templates",
    "read_input",
    "write_input",
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
        """The done record when training finished cleanly, else None."""
        f = self.path / DONE_MARKER
        return json.loads(f.read_text()) if f.is_file() else None

    @property
    def started(self) -> bool:
        """Has training written anything (checkpoint, progress or log)?"""
        model = self.path / "model"
        return (model.is_dir() and any(model.iterdir())) or (self.path / "training.log").is_file()


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
    return yaml.safe_load(f.read_text()) or {}


def write_input(work_dir: str | os.PathLike, data: dict[str, Any]) -> Path:
    from auto3dseg.bundles.config import write_yaml_atomic

    f = Path(work_dir) / INPUT_YAML
    write_yaml_atomic(f, data, header="# data source config of this work_dir (MONAI Auto3DSeg's input.yaml)\n")
    return f


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
