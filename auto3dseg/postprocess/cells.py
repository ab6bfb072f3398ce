"""2-D cells: probability maps or converter targets → ``<stem>_label.tiff`` instance masks.

Command line::

    python -m auto3dseg.postprocess.cells work_dir/ensemble_output --output_dir labels_pred
    python -m auto3dseg.postprocess.cells nifti/labels/*.nii.gz --output_dir roundtrip   # targets
    python -m auto3dseg.postprocess.cells preds/ --output_dir out --params my_cells.yaml

Inputs are maps written by this project: the ensemble's probability maps
(``<stem>_prob.zarr``, ``class, y, x``, channel names in the map or the ``ensemble.json`` beside
it; older ensembles wrote 4-D NIfTI ``<stem>_prob.nii.gz``, still read) or the cell converter's
target maps (``labels/<stem>.nii.gz``, values 0/1/2). A folder stands for its ``*_prob.zarr``
(or ``*_prob.nii.gz``) maps, or for its ``*.nii.gz`` files when it has none; an
``ensemble.json`` for its items. Each output is written on the image's own pixel
grid (rows, columns), zlib-compressed, under a temporary name and then renamed. One bad
input is reported and the others go on (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from auto3dseg.postprocess.cell_instances import cells_from_probabilities, cells_from_target
from auto3dseg.postprocess.params import ParamsTypeError, expected_type, read_user_yaml
from datalists.cell_classes import CELL_CLASS_TABLE

__all__ = [
    "CELL_PARAM_TYPES",
    "CellReport",
    "label_stem",
    "load_cell_params",
    "main",
    "postprocess_cells",
    "read_cell_map",
    "write_label_tiff",
]

#: every key of ``resources/postprocess_cells.yaml`` and the type its value must have
CELL_PARAM_TYPES: dict[str, tuple[type, ...]] = {
    "threshold": (int, float), "seed_threshold": (int, float), "min_seed_px": (int,),
    "max_hole_px": (int,), "min_cell_px": (int,),
}


def _check_params(entries: Any, source: str) -> dict[str, Any]:
    if entries is None:
        return {}
    if not isinstance(entries, Mapping):
        raise ParamsTypeError(f"{source}: expected a mapping of parameter names to values")
    for key, value in entries.items():
        if key not in CELL_PARAM_TYPES:
            raise ValueError(f"{source}: unknown key {key!r}; known keys: {', '.join(CELL_PARAM_TYPES)}")
        if isinstance(value, bool) or not isinstance(value, CELL_PARAM_TYPES[key]):
            raise ParamsTypeError(f"{source}: {key} = {value!r} has the wrong type: expected "
                                  f"{expected_type(CELL_PARAM_TYPES[key])}")
        if key.endswith("threshold") and not 0.0 <= value <= 1.0:
            raise ValueError(f"{source}: {key} = {value} is not in [0, 1]")
        if key.endswith("_px") and value < 0:
            raise ValueError(f"{source}: {key} = {value} is negative")
    return dict(entries)


def load_cell_params(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Cell post-processing parameters: packaged defaults ← ``path`` ← ``overrides``.

    >>> load_cell_params(overrides={"min_cell_px": 4})["min_cell_px"]
    4
    """
    text = resources.files("auto3dseg").joinpath("resources/postprocess_cells.yaml").read_text()
    params = _check_params(yaml.safe_load(text), "auto3dseg/resources/postprocess_cells.yaml")
    if path is not None:
        params.update(_check_params(read_user_yaml(path), str(path)))
    params.update(_check_params(overrides, "overrides"))
    return params


def label_stem(path: str | os.PathLike) -> str:
    """The image stem of a map: ``a/b_prob.zarr`` → ``b``; ``labels/b.nii.gz`` → ``b``.

    >>> label_stem("out/img_01_prob.zarr"), label_stem("labels/img_01.nii"), label_stem("o/img_01_prob.nii.gz")
    ('img_01', 'img_01', 'img_01')
    """
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".zarr"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name[: -len("_prob")] if name.endswith("_prob") else name


def _channels_beside(path: Path) -> list[str] | None:
    manifest = path.parent / "ensemble.json"
    if manifest.is_file():
        channels = json.loads(manifest.read_text()).get("channels")
        return list(channels) if channels else None
    return None


def read_cell_map(path: str | os.PathLike, channels: Sequence[str] | None = None
                  ) -> tuple[str, np.ndarray, list[str] | None, float]:
    """Read a map on the image's (row, column) grid.

    Returns
    -------
    kind : {"target", "probabilities"}
    data : ndarray
        ``(H, W)`` target values, or ``(C, H, W)`` probabilities (uint8 when stored so).
    channels : list of str or None
        Channel names of probabilities (from ``channels`` or ``ensemble.json``).
    scale : float
        Value of probability 1 in ``data`` (255 for uint8 maps, else 1).
    """
    import nibabel as nib

    path = Path(path)
    if path.name.endswith(".zarr"):
        from auto3dseg.ensembling.probability_maps import open_probability_map

        pmap = open_probability_map(path)
        if len(pmap.shape) != 2:
            raise ValueError(f"{path}: a {len(pmap.shape)}-D probability map; 3-D volumes are post-processed by "
                             "--mode submit")
        data = np.stack([pmap.channel(c) for c in range(pmap.n_channels)])
        names = list(channels) if channels else (pmap.channels or _channels_beside(path))
        if names is None or len(names) != data.shape[0]:
            raise ValueError(f"{path}: {data.shape[0]} probability channels, but no matching channel names "
                             f"({names}); put the ensemble.json that lists them beside it, or pass --channels")
        return "probabilities", data, names, 255.0
    img = nib.load(str(path))
    shape = img.shape
    if len(shape) == 4 and shape[2] == 1:  # x, y, 1, class
        raw = np.asarray(img.dataobj.get_unscaled())
        slope, inter = img.dataobj.slope, img.dataobj.inter
        if raw.dtype == np.uint8 and np.isclose(slope, 1 / 255) and inter == 0:
            data, scale = raw[:, :, 0, :], 255.0
        else:
            data, scale = np.asarray(img.dataobj, dtype=np.float32)[:, :, 0, :], 1.0
        data = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
        names = list(channels) if channels else _channels_beside(path)
        if names is None and data.shape[0] == len(CELL_CLASS_TABLE):
            names = [r["name"] for r in CELL_CLASS_TABLE]
        if names is None or len(names) != data.shape[0]:
            raise ValueError(f"{path}: {data.shape[0]} probability channels, but no matching channel names "
                             f"({names}); put the ensemble.json that lists them beside it, or pass --channels")
        return "probabilities", data, names, scale
    if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1):
        raw = np.asarray(img.dataobj)
        if not np.issubdtype(raw.dtype, np.integer):
            if not np.array_equal(raw, np.round(raw)):
                raise ValueError(f"{path}: a 2-D map with non-integer values is neither a target map nor probabilities")
            raw = raw.astype(np.int64)
        return "target", np.ascontiguousarray(raw.reshape(shape[:2]).T), None, 1.0
    raise ValueError(f"{path}: shape {shape} is neither a 2-D target map (x, y[, 1]) nor a probability map "
                     "(x, y, 1, class); 3-D volumes are post-processed by --mode submit")


def write_label_tiff(labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an instance mask as a zlib-compressed TIFF, via a temporary name."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        tifffile.imwrite(tmp, labels, compression="zlib")
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc  # tifffile's errors name no file
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass
class CellReport:
    """One row per input: ``input``, ``output``, ``kind``, ``cells``, ``dtype``, ``seconds``,
    ``status`` (``written`` or ``failed``) and ``error``."""

    rows: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]

    def lines(self) -> list[str]:
        out = [f"{r['output']}: {r['cells']} cells ({r['kind']}, {r['seconds']:.1f} s)" for r in self.rows
               if r["status"] == "written"]
        return out + [f"FAILED {r['input']}: {r['error']}" for r in self.failed]


def _expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for entry in inputs:
        p = Path(entry)
        if p.is_dir() and not p.name.endswith(".zarr"):  # a folder of maps, not a map
            found = (sorted(p.glob("*_prob.zarr")) or sorted(p.glob("*_prob.nii.gz")) or sorted(p.glob("*.nii.gz"))
                     or sorted(p.glob("*.nii")))
            if not found:
                raise FileNotFoundError(f"{p}: no *_prob.zarr, *_prob.nii.gz or *.nii.gz in this folder")
            files += found
        elif p.name == "ensemble.json" and p.is_file():
            files += [Path(it["probabilities"]) for it in json.loads(p.read_text()).get("items", [])]
        else:  # a missing file is reported with the others, it does not stop the batch
            files.append(p)
    return files


def postprocess_cells(inputs: Sequence[str | os.PathLike], output_dir: str | os.PathLike, *,
                      params: Mapping[str, Any] | None = None, channels: Sequence[str] | None = None,
                      class_table: Sequence[Mapping[str, Any]] | None = None,
                      names: Mapping[str, str] | None = None, progress: bool = True) -> CellReport:
    """Write ``<output_dir>/<stem>_label.tiff`` for every input map; never stops at a bad one.

    Parameters
    ----------
    inputs : sequence of path
        Files, folders or ``ensemble.json`` (see the module docstring).
    params : mapping, optional
        From :func:`load_cell_params` (the packaged defaults when None).
    channels : sequence of str, optional
        Channel names of probability maps without an ``ensemble.json`` beside them.
    class_table : sequence of dict, optional
        The datalist's class table (default: :data:`datalists.cell_classes.CELL_CLASS_TABLE`).
    names : mapping of str to str, optional
        Output stem per input file (default: :func:`label_stem`).
    """
    from tqdm import tqdm

    params = load_cell_params() if params is None else dict(params)
    table = list(class_table or CELL_CLASS_TABLE)
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = CellReport()
    for f in tqdm(_expand_inputs(inputs), desc="Cell instances", unit="image", disable=not progress):
        stem = (names or {}).get(str(f)) or label_stem(f)
        row: dict[str, Any] = {"input": str(f), "output": str(out_dir / f"{stem}_label.tiff"), "kind": None,
                               "cells": None, "dtype": None, "seconds": 0.0, "status": "failed", "error": ""}
        t0 = time.perf_counter()
        try:
            if not f.exists():
                raise FileNotFoundError(f"{f}: no such file (was the ensemble interrupted? re-run --mode ensemble)")
            kind, data, names_f, scale = read_cell_map(f, channels)
            row["kind"] = kind
            if kind == "target":
                labels = cells_from_target(data, params)
            else:
                labels = cells_from_probabilities(data, names_f or [], table, params, scale=scale)
            del data
            write_label_tiff(labels, row["output"])
            row.update(cells=int(labels.max(initial=0)), dtype=labels.dtype.name, status="written",
                       shape=list(labels.shape))
        except Exception as exc:  # one bad map must not stop the batch (nibabel raises its own error types)
            row["error"] = f"{type(exc).__name__}: {exc}"
        row["seconds"] = round(time.perf_counter() - t0, 3)
        report.rows.append(row)
    tmp = out_dir / f".tmp-{os.getpid()}-postprocess_report.json"
    tmp.write_text(json.dumps({"params": params, "rows": report.rows}, indent=1))
    os.replace(tmp, out_dir / "postprocess_report.json")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m auto3dseg.postprocess.cells", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="probability maps (*_prob.zarr), converter target maps "
                   "(labels/*.nii.gz), folders of them, or an ensemble.json")
    p.add_argument("--output_dir", required=True, help="where <stem>_label.tiff files and postprocess_report.json go")
    p.add_argument("--params", help="YAML with the keys of auto3dseg/resources/postprocess_cells.yaml to change "
                   "(threshold, seed_threshold, min_seed_px, max_hole_px, min_cell_px)")
    p.add_argument("--channels", nargs="+", metavar="NAME", help="channel names of probability maps that have no "
                   "ensemble.json beside them (default: cell_interior cell_contact cell when there are 3)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


_RAW_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def output_dir_problem(out: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> str | None:
    """Why ``out`` must not receive ``<stem>_label.tiff`` files, or None: a folder of the inputs,
    a converted dataset, or a folder holding images or label files this tool did not write (no
    ``postprocess_report.json``: the ground truth, say), which would be overwritten."""
    out = Path(out).resolve()
    for i in inputs:
        p = Path(i).resolve()
        if out in (p, p.parent):
            return f"--output_dir {out} is the folder of the input {p}"
    for f in (out, *out.parents):
        if (f / "datalist.json").is_file():
            return f"--output_dir {out} is {'' if f == out else 'inside '}the converted dataset {f}"
    if out.is_dir() and not (out / "postprocess_report.json").is_file():
        found = sorted(p.name for p in out.iterdir() if p.suffix.lower() in _RAW_SUFFIXES)
        if found:
            return (f"--output_dir {out} holds {len(found)} image or label file(s) this tool did not write (e.g. "
                    f"{found[0]}; there is no postprocess_report.json): the ground truth or the raw images? They "
                    "would be overwritten")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = output_dir_problem(args.output_dir, args.inputs)
    if problem:
        print(f"error: {problem}; give a folder of its own", file=sys.stderr)
        return 2
    try:
        params = load_cell_params(args.params)
        report = postprocess_cells(args.inputs, args.output_dir, params=params, channels=args.channels,
                                   progress=not args.no_progress)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    print(f"{len(report.rows) - len(report.failed)} written, {len(report.failed)} failed; "
          f"report: {Path(args.output_dir) / 'postprocess_report.json'}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
