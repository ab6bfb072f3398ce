"""What lives in a work_dir, in one place.

::

    <work_dir>/
      input.yaml                 data source config (modality, datalist, dataroot, generation options)
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

import json
import os
import shutil
import time
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
    "list_bundles",
    "move_aside",
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
    from auto3dseg.bundle_config import write_yaml_atomic

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
