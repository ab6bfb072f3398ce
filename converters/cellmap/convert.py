"""Convert CellMap Zarr crops to NIfTI images and labels with a MONAI datalist.

Run ``python -m converters.cellmap.convert --help`` for the options. The steps:

1. **Find crops** from a toolbox ``datasplit.csv`` or by scanning a data root.
2. **Inspect** each crop (metadata only): its ground-truth grid, which classes it
   annotates, which EM levels have data in its region.
3. **Choose classes** (default: every most-specific class annotated somewhere) and
   build the class table and the CellMap-id → label-id lookup table.
4. **Convert** crops in parallel, slab by slab: EM resampled linearly, labels by nearest
   neighbour, to ``--target_spacing`` on the crop's physical box; written atomically;
   finished crops are skipped on a re-run.
5. **Folds, datalist, report**: ``datalist.json`` (validated), ``datalist_items.json``
   (per-item strings MONAI must not see), ``conversion_report.{json,md}``. With fewer
   crops than folds, crops are cut into spatial folds before step 4
   (:func:`converters.folds.plan_spatial_folds`): slabs along the longest axis, one fold
   each, ``--fold_gap`` voxels apart.

Output axis order: NIfTI arrays are x, y, z with a diagonal affine in nm carrying the
voxel size and the crop's physical origin (see :mod:`converters.geometry`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from converters.cellmap import zarr_tree as cz
from converters.cellmap.class_mapping import annotated_ids, build_class_table, default_classes
from converters.cellmap.flags import build_parser
from converters.cellmap.listings import read_datasplit, read_test_manifest
from converters.cellmap.crop import (
    ConvertSettings,
    cleanup_items,
    gt_stamp,
    convert_crop,
    em_plan,
    labels_plan,
    inspect_crop,
    listed_classes,
    record_base,
    source_fields,
    worker,
)
from converters.datalist_writer import build_datalist, validate_new_datalist
from converters.cellmap.em_level import choose_em_level, em_stamp, refuse_unknown_scale
from converters.cellmap.input_checks import check_max_voxels, refuse_repeated_crops, training_overlap_warnings
from converters.folds import DEFAULT_FOLD_GAP, CropExtent, SplitPlan, plan_spatial_folds
from converters.geometry import Grid, output_grid
from converters.outputs import (
    OutputError,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temporaries,
    hold_previous_datalist,
    settle_previous_datalist,
    write_datalist_marker,
)
from converters.cli import EveryItemFailed, path_flag_problems, print_outputs, run_reported
from converters.pool import WorkerPoolBroken, imap_pool
from converters.cellmap.report import (
    build_report,
    dry_run_report,
    render_dry_run_text,
    render_report_markdown,
    unknown_and_level_warnings,
)
from datalists.cellmap_classes import LABEL_RULES, uncovered_overlaps

__all__ = ["ConvertSettings", "convert", "convert_crop", "choose_em_level", "main"]


class SettingsMismatch(RuntimeError):
    """The output folder holds a conversion made with other settings."""


# --------------------------------------------------------------------------- orchestration
def _previous_record(output_dir: Path, src: cz.CropSource | cz.TestCrop, fingerprint: str,
                     classes: Sequence[str] = ()) -> dict | None:
    """The record a previous run left for ``src`` with the same settings and class list (any verdict),
    and, for a crop annotating two overlapping ``classes``, the same label rules."""
    path = output_dir / "records" / f"{src.name}.json"
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if rec.get("settings_fingerprint") != fingerprint:
        return None
    if rec.get("listed_classes") != listed_classes(src):  # its datasplit row lists other classes now
        return None
    if int(rec.get("label_rules") or 1) < LABEL_RULES and uncovered_overlaps(
            [n for n in rec.get("annotated") or [] if n in classes]):
        print(f"note: {src.name}: converted by an older version, which labelled a voxel of two overlapping classes as "
              "one of them: converting it again", file=sys.stderr)
        return None
    if rec.get("source_stamp") is not None and rec.get("verdict") != "failed" \
            and rec["source_stamp"] != gt_stamp(src):
        print(f"note: {src.name}: its ground truth changed in the store since it was converted: converting it again",
              file=sys.stderr)
        return None
    grid = rec.get("output_grid")
    if rec.get("em_stamp") is not None and grid and rec.get("em_level") and rec["em_stamp"] != em_stamp(
            src.em_zarr, src.em_group, rec["em_level"], Grid(grid["origin"], grid["spacing"], grid["shape"])):
        print(f"note: {src.name}: its EM changed in the store since it was converted: converting it again",
              file=sys.stderr)
        return None
    for level, stamp in (rec.get("em_partial_stamps") or {}).items():
        if grid and stamp != em_stamp(src.em_zarr, src.em_group, level,
                                      Grid(grid["origin"], grid["spacing"], grid["shape"])):
            print(f"note: {src.name}: EM level {level}, incomplete here when it was converted, changed since (its "
                  "missing chunks fetched?): converting it again", file=sys.stderr)
            return None
    return rec


def _is_finished(output_dir: Path, rec: dict | None) -> bool:
    """A previous record to resume: not failed, and every file it wrote still there."""
    if rec is None or rec.get("verdict") == "failed":
        return False
    return all((output_dir / item[k]).exists() for item in rec.get("items", []) for k in ("image", "label")
               if k in item)


def _inspect_all(crops: Sequence[cz.CropSource]) -> tuple[dict[str, tuple], dict[str, str]]:
    """Each crop's ``(grid, statuses, notes)``, and the crops that could not be read."""
    inspected, errors = {}, {}
    for src in crops:
        try:
            inspected[src.name] = inspect_crop(src)
        except Exception as exc:  # reported again, as a failure, when the crop is converted
            errors[src.name] = f"{type(exc).__name__}: {exc}"
    return inspected, errors


def _resolve_classes(requested: Sequence[str] | None, crops: Sequence[cz.CropSource], statuses: dict) -> list[str]:
    from datalists.cellmap_classes import class_by_name

    if requested:
        for n in requested:
            class_by_name(n)  # clear error on a typo
        return list(dict.fromkeys(requested))
    from_split = [c for src in crops for c in (src.requested_classes or ())]
    found = default_classes(statuses.values())
    if from_split:
        wanted = set(from_split)
        return [c for c in found if c in wanted] or found
    return found


def _progress(total: int, desc: str):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="crop", file=sys.stderr, dynamic_ncols=True)
    except ImportError:  # pragma: no cover
        return None


def _check_settings(output_dir: Path, settings: ConvertSettings, force: bool) -> None:
    path = output_dir / "conversion_settings.json"
    if not path.exists() or force:
        return
    old = json.loads(path.read_text())
    new = asdict(settings)
    diffs = [k for k in new if json.dumps(old.get(k), sort_keys=True) != json.dumps(new[k], sort_keys=True)]
    if diffs:
        detail = "; ".join(f"{k}: {old.get(k) if k != 'class_table' else [r['name'] for r in old.get(k, [])]} -> "
                           f"{new[k] if k != 'class_table' else [r['name'] for r in new[k]]}" for k in diffs)
        raise SettingsMismatch(
            f"{output_dir} holds a conversion made with other settings ({detail}). "
            "Use a new --output_dir, or --force to reconvert everything there.")


def convert(
    output_dir: str | os.PathLike,
    crops: Sequence[cz.CropSource],
    test_crops: Sequence[cz.TestCrop] = (),
    *,
    target_spacing: Sequence[float] = (8.0, 8.0, 8.0),
    classes: Sequence[str] | None = None,
    num_folds: int = 5,
    scale: str = "auto",
    max_voxels: int | None = None,
    max_em_upsample: float = 2.0,
    workers: int = 1,
    force: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    fold_gap: int = DEFAULT_FOLD_GAP,
) -> dict:
    """Convert crops and write the datalist and report; return the report dict.

    Parameters
    ----------
    output_dir : path
        Where ``images/``, ``labels/``, ``datalist.json`` and the report go.
    crops, test_crops : sequences
        Training crops (:func:`converters.cellmap.zarr_tree.discover_crops` or
        :func:`~converters.cellmap.listings.read_datasplit`) and test crops
        (:func:`~converters.cellmap.listings.read_test_manifest`).
    target_spacing : (z, y, x) nm
    classes : list of str, optional
        Class names to keep; default every most-specific class annotated in some crop.
    num_folds : int
        Folds to make. With fewer crops than folds, crops are cut into slabs along their
        longest axis, one fold each (see :func:`converters.folds.plan_spatial_folds`).
    scale : str
        EM level, ``"auto"`` or ``"sN"``; a level no readable EM group has raises ValueError.
    max_voxels : int, optional
        Crops with more output voxels are written as several tiles; at least
        :data:`~converters.cellmap.input_checks.MIN_TILE_VOXELS` (else ValueError).
    max_em_upsample : float
        Largest factor by which EM may be upsampled (when only coarser EM has data).
    workers : int
        Crops converted in parallel (processes).
    force : bool
        Reconvert finished crops and accept different settings in ``output_dir``.
    dry_run : bool
        Inspect and plan only (tiles, their boxes and folds); write nothing.
    progress : bool
        Show a progress bar.
    fold_gap : int
        Output voxels left out between two spatial folds of one crop.

    Returns
    -------
    dict
        The report (also written as ``conversion_report.json``).

    Raises
    ------
    ValueError
        For a bad setting, or a crop listed twice (also as a training and a test crop).
    """
    if num_folds < 1 or fold_gap < 0:
        raise ValueError(f"--num_folds must be >= 1 and --fold_gap >= 0, got {num_folds} and {fold_gap}")
    check_max_voxels(max_voxels)
    refuse_repeated_crops(crops, test_crops)
    refuse_unknown_scale(scale, [*crops, *test_crops])
    out_dir = Path(output_dir)
    inspected, inspect_errors = _inspect_all(crops)
    for warning in training_overlap_warnings(test_crops, [(s.name, s.dataset, inspected[s.name][0]) for s in crops
                                                          if inspected.get(s.name, (None,))[0] is not None]):
        print(f"warning: {warning}", file=sys.stderr)
    statuses = {name: found[1] for name, found in inspected.items()}
    names = _resolve_classes(classes, crops, statuses)
    if not names and not dry_run:
        if inspect_errors:  # say why: "nothing annotated" would hide that the crops could not be read
            shown = "; ".join(f"{k}: {v}" for k, v in list(inspect_errors.items())[:5])
            more = f" (and {len(inspect_errors) - 5} more)" if len(inspect_errors) > 5 else ""
            raise EveryItemFailed(f"no crop could be read, {len(inspect_errors)} failed: {shown}{more}")
        raise ValueError("no class is annotated in any crop: nothing to train on (see --dry_run for details)")
    settings = ConvertSettings(tuple(float(v) for v in target_spacing), scale, max_voxels, max_em_upsample,
                               build_class_table(names))
    extents = _extents(crops, inspected, settings)
    if dry_run:  # the EM level each crop would use: a crop its EM cannot serve is shown skipped, as the run skips it
        em = {src.name: em_plan(src, output_grid(inspected[src.name][0], settings.target_spacing), settings)
              for src in crops if src.name in {e.name for e in extents}}
        for src in crops:  # labels the run could not read (a float array, say) fail the crop there too
            if src.name in em and "verdict" not in em[src.name]:
                em[src.name].update(labels_plan(src, inspected[src.name][1], inspected[src.name][0]))
        extents = [e for e in extents if "verdict" not in em[e.name]]
        plan = plan_spatial_folds(extents, num_folds, fold_gap)
        return dry_run_report(crops, test_crops, statuses, inspect_errors, settings, extents, plan, num_folds, em)
    _refuse_inside_inputs(out_dir, [*crops, *test_crops])
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(out_dir, settings, force)
    for sub in ("images", "labels", "records"):
        (out_dir / sub).mkdir(exist_ok=True)
    _start_writing(out_dir, ("images", "labels", "records"))
    atomic_write_json(out_dir / "conversion_settings.json", asdict(settings))

    fingerprint = settings.fingerprint()
    table_names = [r["name"] for r in settings.class_table]
    previous = {} if force else {s.name: _previous_record(out_dir, s, fingerprint, table_names)
                                for s in [*crops, *test_crops]}
    done = {name: rec for name, rec in previous.items() if _is_finished(out_dir, rec)}
    # crops a previous run skipped or failed give no fold group: plan without them, as that run ended up doing
    # (a failed crop is tried again; should it convert now, the others are cut again below)
    plan = plan_spatial_folds([e for e in extents if (previous.get(e.name) or {}).get("verdict")
                               not in ("skipped", "failed")], num_folds, fold_gap)
    records: dict[str, dict] = {}
    jobs = []
    for kind, items in (("train", crops), ("test", test_crops)):
        for src in items:
            rec = done.get(src.name)
            if rec is not None and (kind == "test" or rec["verdict"] != "converted"
                                    or rec.get("split") == _split_dict(plan, src.name)):
                rec["resumed"] = True
                rec.update(source_fields(src))  # records of older versions lack where the truth is
                records[src.name] = rec
                continue
            if rec is not None:  # converted with other spatial folds: its files go
                cleanup_items(out_dir, rec)
            jobs.append((kind, src, settings, str(out_dir), inspected.get(src.name), plan.split_of(src.name)))
    records.update(_run_jobs(jobs, workers, progress))
    # a crop skipped now leaves fewer fold groups than planned: cut the others again if that changes
    converted = [r for r in (records[s.name] for s in crops) if r["verdict"] == "converted"]
    replan = plan_spatial_folds([CropExtent(r["name"], r["dataset"], tuple(r["output_grid"]["shape"]))
                                 for r in converted], num_folds, fold_gap)
    redo = [s for s in crops if records[s.name]["verdict"] == "converted"
            and records[s.name].get("split") != _split_dict(replan, s.name)]
    for src in redo:
        cleanup_items(out_dir, records[src.name])
    records.update(_run_jobs([("train", s, settings, str(out_dir), inspected.get(s.name), replan.split_of(s.name))
                              for s in redo], workers, progress))

    ordered = [records[s.name] for s in crops] + [records[s.name] for s in test_crops]
    datalist, items_meta, fold_info = build_datalist(ordered, settings.class_table, settings.target_spacing,
                                                     num_folds, replan.notes)
    atomic_write_json(out_dir / "datalist_items.json", items_meta)
    validation = validate_new_datalist(datalist, out_dir, allow_single_fold=num_folds < 2)
    report = build_report(ordered, settings, statuses, fold_info, validation, out_dir)
    atomic_write_json(out_dir / "conversion_report.json", report)
    atomic_write_text(out_dir / "conversion_report.md", render_report_markdown(report))
    write_datalist_marker(out_dir, datalist, validation)  # the completion marker (when valid): last
    settle_previous_datalist(out_dir)
    return report


def _start_writing(out_dir: Path, subfolders: Sequence[str]) -> None:
    """Remove the completion marker (it comes back last) and a killed run's temporaries."""
    hold_previous_datalist(out_dir)  # kept aside at the end when the new datalist differs
    clean_stale_temporaries([out_dir, *(out_dir / s for s in subfolders)])


def _refuse_inside_inputs(out_dir: Path, sources: Sequence) -> None:
    """Never write into an input store: refuse an output folder inside one."""
    out = out_dir.resolve()
    stores = {Path(p).resolve() for src in sources for p in (src.em_zarr, getattr(src, "gt_zarr", src.em_zarr))}
    for store in sorted(stores):
        if out == store or store in out.parents:
            raise ValueError(f"--output_dir {out_dir} is inside the input store {store}: inputs are never written; "
                             "choose a folder outside it")


def _extents(crops: Sequence[cz.CropSource], inspected: dict, settings: ConvertSettings) -> list[CropExtent]:
    """Output shapes of the crops that inspection says will convert (they make the fold groups)."""
    out = []
    for src in crops:
        grid, statuses, _ = inspected.get(src.name, (None, {}, []))
        if grid is not None and annotated_ids(statuses, settings.class_table):
            out.append(CropExtent(src.name, src.dataset, output_grid(grid, settings.target_spacing).shape))
    return out


def _split_dict(plan: SplitPlan, name: str) -> dict | None:
    split = plan.split_of(name)
    return split.to_dict() if split else None


def _run_jobs(jobs: Sequence[tuple], workers: int, progress: bool) -> dict[str, dict]:
    """Run conversion jobs (in ``workers`` processes when more than one); their records by name.

    A failing output write (:class:`~converters.outputs.OutputError`) stops the batch, and so
    does a killed worker (:class:`~converters.pool.WorkerPoolBroken`: its message names the
    crops not converted; the finished ones have their records on disk and are resumed).
    """
    records: dict[str, dict] = {}
    bar = _progress(len(jobs), "Converting crops") if progress and jobs else None
    if workers > 1 and len(jobs) > 1:
        results = imap_pool(worker, jobs, workers, fatal=(OutputError,))
    else:
        results = ((job, worker(job), None) for job in jobs)
    try:
        for job, rec, exc in results:
            kind, src = job[:2]
            if exc is not None:  # the job itself raised (the worker catches a bad crop's errors)
                rec = record_base(src, kind)
                rec.update(verdict="failed", reason="error", detail=f"{type(exc).__name__}: {exc}")
            records[src.name] = rec
            if bar:
                bar.update(1)
                bar.set_postfix_str(f"{src.name}: {rec['verdict']}")
    except WorkerPoolBroken as exc:
        names = [job[1].name for job in exc.unfinished]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise WorkerPoolBroken(f"{exc}. Not converted: {shown}; no datalist was written (the run is incomplete)",
                               exc.unfinished) from exc
    finally:
        if bar:
            bar.close()
    return records


# --------------------------------------------------------------------------- CLI (flags: converters/cellmap/flags.py)
def _em_zarr_by_dataset(crops: Iterable[cz.CropSource], data_root: str | None) -> dict[str, str]:
    found = {c.dataset: c.em_zarr for c in crops}
    if data_root:
        for z in sorted(Path(data_root).glob("*/*.zarr")):
            found.setdefault(z.name.removesuffix(".zarr"), str(z))
    return found


def _convert_from_args(args: argparse.Namespace) -> dict:
    crops = read_datasplit(args.datasplit) if args.datasplit else cz.discover_crops(args.data_root)
    if not crops:
        raise ValueError(f"no crop found in {args.datasplit or f'{args.data_root}/{cz.GT_GLOB}'}")
    if args.max_crops:
        crops = crops[: args.max_crops]
    tests = []
    if args.test_manifest:
        tests = read_test_manifest(args.test_manifest, _em_zarr_by_dataset(crops, args.data_root))
    return convert(args.output_dir, crops, tests, target_spacing=args.target_spacing, classes=args.classes,
                   num_folds=args.num_folds, scale=args.scale, max_voxels=args.max_voxels,
                   max_em_upsample=args.max_em_upsample, workers=args.workers, force=args.force,
                   dry_run=args.dry_run, progress=not args.no_progress, fold_gap=args.fold_gap)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if problems := path_flag_problems(args, ["datasplit", "test_manifest"], ["output_dir", "data_root"]):
        parser.error("\n  ".join(problems))
    if not args.datasplit and not args.data_root:
        print("error: give --datasplit CSV or --data_root DIR", file=sys.stderr)
        return 2
    if args.datasplit and args.data_root:
        print(f"note: --datasplit {args.datasplit} lists the crops converted; --data_root {args.data_root} only "
              "locates the EM stores of --test_manifest's datasets (without --datasplit it would convert every "
              "crop under it)", file=sys.stderr)
    report, rc = run_reported(lambda: _convert_from_args(args), (
        SettingsMismatch, cz.CellMapFormatError, FileNotFoundError, KeyError, ValueError),
        too_big_hint="use --max_voxels to write smaller tiles, ")
    if rc is not None:
        return rc
    if args.dry_run:
        print(json.dumps(report, indent=2))
        print(render_dry_run_text(report), file=sys.stderr, end="")
        if not report["folds"]["used"]:  # as the run ends: a plan that converts nothing is not a success
            print("error: no crop would convert (each crop's reason is above): the run would write no training item",
                  file=sys.stderr)
            return 1
        failing = [r["name"] for r in report["crops"] if r.get("would_fail")]
        if failing:
            print(f"error: {len(failing)} crop(s) would fail ({', '.join(failing[:5])}{', ...' if len(failing) > 5 else ''};"
                  " why is above): the run would convert the others and exit 1", file=sys.stderr)
            return 1
        return 0
    s = report["summary"]
    out = Path(args.output_dir)
    print(f"Converted {s['converted']} of {s['crops']} crops ({s['skipped']} skipped, {s['failed']} failed, "
          f"{s['resumed']} resumed); {s['training_items']} training and {s['testing_items']} testing items.")
    for r in report["crops"]:
        if r["verdict"] != "converted":
            print(f"  {r['name']}: {r['verdict']} ({r['reason']}) {r['detail']}")
    for name, warning in unknown_and_level_warnings(report):
        print(f"  warning: {name}: {warning}", file=sys.stderr)
    folds = report["folds"]
    print(f"Folds: {folds['used']} (requested {folds['requested']})")
    for line in folds.get("how", []) + [f"note: {n}" for n in folds.get("notes", [])]:
        print(f"  {line}")
    if print_outputs(report, out):
        return 1
    if s["failed"]:  # the last line says it, as the cells converter's does
        failed = [r["name"] for r in report["crops"] if r["verdict"] == "failed"]
        print(f"error: {s['failed']} crop(s) failed ({', '.join(failed[:5])}{', ...' if len(failed) > 5 else ''}; "
              "why is above); the datalist holds the others. Fix or remove them and run the same command again: "
              "finished crops are kept", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
