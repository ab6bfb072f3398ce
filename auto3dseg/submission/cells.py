"""``--mode submit`` for 2-D cells: one ``<stem>_label.tiff`` per testing image.

The ensemble's probability maps (one per testing image, on the image's own pixel grid)
go through :mod:`auto3dseg.postprocess.cells`; each output is named after the image the
converter read (``datalist_items.json``: its stem and original size, which the output
must match), zlib-compressed, as the challenge expects. Every testing image the conversion
saw must get its file: one without a map in the ensemble, or one that failed at conversion
(``conversion_report.json``), is a ``missing`` row of the report, and the run fails (exit 1
from ``--mode submit``). The folder is rebuilt under a
temporary name and renamed; when the maps and the parameters are unchanged since the
last run it is kept as it is.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auto3dseg.ensembling.probability_maps import maps_signature, read_map_manifest
from auto3dseg.orchestration.workdir import moved_key
from auto3dseg.submission.previous import PARAMS_FILE, REPORT_FILES, keep_previous, params_text
from converters.outputs import atomic_write_text

__all__ = ["CELL_SUBMISSION_DIR", "write_cell_submission"]

#: the folder of ``<stem>_label.tiff`` files inside ``<work_dir>/submission``
CELL_SUBMISSION_DIR = "labels"


def write_cell_submission(ensemble_manifest: str | os.PathLike, datalist: str | os.PathLike,
                          out_dir: str | os.PathLike, *, params: Mapping[str, Any] | None = None,
                          force: bool = False, log=print) -> tuple[Path, list[dict]]:
    """Write ``<out_dir>/labels/<stem>_label.tiff`` for every testing image of the ensemble.

    Parameters
    ----------
    ensemble_manifest : path
        ``ensemble.json`` (channels and one probability map per image).
    datalist : path
        The cell converter's datalist; its ``datalist_items.json`` gives each image's
        stem and original size.
    params : mapping, optional
        :func:`auto3dseg.postprocess.cells.load_cell_params` (the packaged defaults when None).
    force : bool
        Rebuild even when nothing changed.

    Returns
    -------
    (folder of label files, report rows)
    """
    from auto3dseg.orchestration.locks import clean_temporaries, step_lock

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with step_lock(out, "submit", log=log):  # one run at a time; temporaries of a killed one removed first
        clean_temporaries(out)
        return _write_cell_submission(ensemble_manifest, datalist, out, params=params, force=force, log=log)


def _write_cell_submission(ensemble_manifest: str | os.PathLike, datalist: str | os.PathLike, out: Path, *,
                           params: Mapping[str, Any] | None, force: bool, log) -> tuple[Path, list[dict]]:
    from auto3dseg.postprocess.cells import load_cell_params, postprocess_cells

    params = load_cell_params() if params is None else dict(params)
    ens = read_map_manifest(ensemble_manifest)  # a copied work_dir reads its own maps
    dl_path = Path(datalist)
    dl = json.loads(dl_path.read_text())
    items = json.loads((dl_path.parent / dl.get("items_file", "datalist_items.json")).read_text())
    by_image = {str((dl_path.parent / k).resolve()): v for k, v in items.items()}
    final = out / CELL_SUBMISSION_DIR
    report_path = out / "submission_report.json"
    testing = sorted(Path(t["image"] if isinstance(t, dict) else t).name for t in dl.get("testing", []))
    sig = maps_signature(ens, dict(params), testing)  # a testing image added since is reported, not left out
    sig_file = out / "submission_signature.txt"
    if (not force and final.is_dir() and report_path.is_file() and sig_file.is_file()
            and sig_file.read_text().strip() == sig):
        log(f"cell submission in {final} is up to date (same maps and parameters); kept")
        if not (out / PARAMS_FILE).is_file():  # made before submissions recorded them: the signature says these
            atomic_write_text(out / PARAMS_FILE, params_text(params))
        return final, json.loads(report_path.read_text())

    names: dict[str, str] = {}
    shapes: dict[str, list[int]] = {}
    inputs = []
    by_key = {moved_key(k): v for k, v in items.items()}  # the dataset moved since the ensemble
    for it in ens.get("items", []):
        meta = by_image.get(str(Path(it["image"]).resolve())) or by_key.get(moved_key(it["image"]))
        if meta is None:
            log(f"note: {it['image']} is not in {dl_path.parent / 'datalist_items.json'}; named after its file")
        else:
            names[it["probabilities"]] = meta["stem"]
            shapes[it["probabilities"]] = list(meta["original_shape"])
        inputs.append(it["probabilities"])
    if not inputs:
        raise RuntimeError(f"{ensemble_manifest} lists no probability map: run --mode ensemble on a datalist "
                           "with testing images")
    keep_previous(out, [CELL_SUBMISSION_DIR, *REPORT_FILES], log)  # its signature too: removed first, written last
    tmp = out / f".tmp-{os.getpid()}-{CELL_SUBMISSION_DIR}"
    shutil.rmtree(tmp, ignore_errors=True)
    report = postprocess_cells(inputs, tmp, params=params, channels=ens.get("channels"),
                               class_table=dl.get("class_table"), names=names)
    rows = report.rows
    for row in rows:
        want = shapes.get(row["input"])
        if row["status"] == "written" and want and row.get("shape") != want:
            row.update(status="failed",
                       error=f"output {row.get('shape')} differs from the image's original size {want}")
            Path(row["output"]).unlink(missing_ok=True)
        row["output"] = str(final / Path(row["output"]).name)
    rows += _missing_rows(rows, items, dl_path.parent, final, dl.get("testing", []))
    (tmp / "postprocess_report.json").unlink(missing_ok=True)
    os.replace(tmp, final)  # the previous labels/ went to replaced/ (keep_previous)
    atomic_write_text(report_path, json.dumps(rows, indent=1))
    lines = ["# Cell submission", "", f"{len(rows)} images; {sum(r['status'] == 'written' for r in rows)} written, "
             f"{sum(r['status'] == 'missing' for r in rows)} missing.", "",
             "| image | cells | dtype | status | note |", "|---|---|---|---|---|"]
    lines += [f"| {Path(r['output']).name} | {r.get('cells', '')} | {r.get('dtype', '')} | {r['status']} | "
              f"{r.get('error', '')} |" for r in rows]
    atomic_write_text(out / "submission_report.md", "\n".join(lines) + "\n")
    atomic_write_text(out / PARAMS_FILE, params_text(params))
    failed = [r for r in rows if r["status"] != "written"]
    for r in failed:
        log(f"error: {r['input']}: {r['error']}")
    if failed:
        log(f"error: {len(failed)} of {len(rows)} testing image(s) have no {CELL_SUBMISSION_DIR}/<stem>_label.tiff: "
            "the submission is incomplete")
    if not failed:  # a run with failures is never "up to date"
        atomic_write_text(sig_file, sig + "\n")
    return final, rows


def _expected_test_images(items: Mapping[str, Any], conv_dir: Path, testing: Sequence[Any] = ()) -> dict[str, dict]:
    """Every testing image the conversion saw, by stem: ``{"source", "why"}`` (why it has no map, if known).

    The datalist's testing entries (``datalist_items.json``, and ``testing``: the datalist's own
    list, which a hand edit may have grown), and from ``conversion_report.json`` the testing images
    that failed or were skipped at conversion, which the datalist lacks.
    """
    expected = {m["stem"]: {"source": m.get("source", m["stem"]), "why": ""}
                for m in items.values() if m.get("usage") == "test"}
    known = {str((conv_dir / k).resolve()) for k in items}
    for t in testing:
        path = Path(str(t["image"] if isinstance(t, Mapping) else t))
        path = path if path.is_absolute() else conv_dir / path
        stem = path.name.removesuffix(".gz").removesuffix(".nii")
        if str(path.resolve()) not in known and stem not in expected:
            expected[stem] = {"source": str(path), "why": "it was added to the datalist's testing list after the "
                              "ensemble: run --mode ensemble (it predicts only what is missing), then --mode submit"}
    report_path = conv_dir / "conversion_report.json"
    try:
        records = json.loads(report_path.read_text()).get("images", []) if report_path.is_file() else []
    except (OSError, json.JSONDecodeError):
        records = []
    for r in records:
        if r.get("kind") == "test" and r.get("verdict") != "converted" and r.get("stem") not in expected:
            expected[r["stem"]] = {"source": r.get("image", r["stem"]),
                                   "why": f"it was {r.get('verdict')} at conversion ({r.get('reason')}: "
                                          f"{r.get('detail', '')}); fix it, convert again and predict it"}
    return expected


def _missing_rows(rows: list[dict], items: Mapping[str, Any], conv_dir: Path, final: Path,
                  testing: Sequence[Any] = ()) -> list[dict]:
    """A ``missing`` row for every testing image of the conversion (or the datalist) without a row of its own."""
    have = {Path(r["output"]).name for r in rows}
    out = []
    for stem, info in sorted(_expected_test_images(items, conv_dir, testing).items()):
        name = f"{stem}_label.tiff"
        if name in have:
            continue
        why = info["why"] or ("ensemble.json lists no probability map for it: run --mode ensemble again "
                              "(with --force if it says up to date)")
        out.append({"input": info["source"], "output": str(final / name), "kind": None, "cells": None,
                    "dtype": None, "seconds": 0.0, "status": "missing",
                    "error": f"testing image {info['source']} has no {name}: {why}"})
    return out
