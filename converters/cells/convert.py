"""Convert 2-D cell images (NeurIPS 2022 CellSeg layout) to NIfTI with a MONAI datalist.

Run ``python -m converters.cells.convert --help`` for the options. The steps:

1. **Find images** (``.tif .tiff .png .jpg .jpeg .bmp``) in ``--images`` and pair each
   with ``<stem>_label.tiff`` in ``--labels``; images without a label become ``testing``.
   A label file named like a near miss (``<stem>_labels.tiff``, ``<stem>_mask.png``, other
   case or extension) fails its image (never a silent testing image); a label matching no
   image is a warning (:mod:`converters.cells.pairing`). Subfolders are not read; the images
   and labels in them are a warning (:mod:`converters.cells.subfolders`).
2. **Convert** each image in parallel (:func:`converters.cells.item.convert_cell_image`):
   read any layout and dtype, normalise to 3 uint8 channels, write NIfTI ``x, y, 1, c``;
   for labelled images the target map (:mod:`datalists.cell_classes`) and a copy of the
   instance mask for scoring; training images over ``--max_pixels`` cut into overlapping
   tiles. A finished image (every one of its files present) is not redone on a re-run; a
   bad one is reported, the others go on.
3. **Folds, datalist, report**: ``conversion_report.{json,md}``, ``datalist_items.json``
   and last ``datalist.json`` (validated); the datalist is the completion marker.

Exit status of the command: 0 when every image was converted, resumed, or skipped for a
reason that is no defect (:data:`converters.cells.item.SKIP_REASONS`); 1 when any image
failed (unreadable, invalid, constant training image, binary mask, background not 0, 8-bit
ids wrapped, misnamed label...), with the datalist written for the others and every failure
named; 2 for usage errors and a full disk or read-only output folder. Converted images that
need a look (too small to train on, ids shared by distant blobs) are warned about.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from converters.cells.datalist import build_cell_datalist, build_cell_report, render_cell_report_markdown
from converters.cells.item import SKIP_REASONS, convert_cell_image, tile_grid
from converters.outputs import (
    INVALID_DATALIST,
    OutputError,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temporaries,
    hold_previous_datalist,
    settle_previous_datalist,
    write_datalist_marker,
    source_stamp,
)
from converters.datalist_writer import validate_new_datalist
from converters.cells.flags import build_parser, flag_problems
from converters.cli import path_flag_problems, print_outputs, run_reported
from converters.pool import WorkerPoolBroken, imap_pool

__all__ = ["IMAGE_EXTENSIONS", "SKIP_REASONS", "convert_cells", "find_cell_images", "main"]

IMAGE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
#: bump when the content of converted files changes
_FORMAT_VERSION = 1


class SettingsMismatch(RuntimeError):
    """The output folder holds a conversion made with other settings."""


def find_cell_images(images_dir: str | os.PathLike, labels_dir: str | os.PathLike | None = None
                     ) -> tuple[list[dict], list[dict], list[dict]]:
    """Images of ``images_dir`` paired with their labels, and the problems found.

    Returns
    -------
    sources : list of dict
        ``{"stem", "image", "label"}`` sorted by stem; ``label`` is None for testing images.
    problems : list of dict
        Records (verdict ``failed``) of images that cannot be paired: a stem shared with
        another image (``duplicate_stem``), or a label that is a near miss of
        ``<stem>_label.tiff`` (``misnamed_label``: never silently a testing image).
    unmatched : list of dict
        ``{"label", "could_match", "detail"}``: files of ``labels_dir`` that are no image's label.
    """
    from converters.cells.images import find_label, image_stem
    from converters.cells.pairing import misnamed_detail, unmatched_labels

    root = Path(images_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--images {root}: " + ("a file, not a folder: give the folder that holds the images"
                                                         if root.exists() else "no such folder"))
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not p.name.startswith("."))
    files = _without_label_files(root, files, labels_dir)
    by_stem: dict[str, list[Path]] = {}
    for f in files:
        by_stem.setdefault(image_stem(f), []).append(f)
    labels = {stem: find_label(labels_dir, stem) if labels_dir else None for stem in by_stem}
    misnamed, unmatched = ({}, []) if not labels_dir else unmatched_labels(
        labels_dir, by_stem, [*files, *(p for p in labels.values() if p)], [s for s, p in labels.items() if p])
    sources, problems = [], []
    for stem, paths in sorted(by_stem.items()):
        label = str(labels[stem]) if labels[stem] else None
        if len(paths) > 1:
            for p in paths:
                problems.append(_problem(stem, p, label, "duplicate_stem",
                                         f"{', '.join(x.name for x in paths)} share the stem {stem!r}; their "
                                         "predictions would both be <stem>_label.tiff: rename one"))
        elif stem in misnamed:
            problems.append(_problem(stem, paths[0], None, "misnamed_label",
                                     misnamed_detail(stem, str(paths[0]), misnamed[stem]),
                                     kind="train", misnamed_labels=[str(f) for f in misnamed[stem]]))
        else:
            sources.append({"stem": stem, "image": str(paths[0]), "label": label})
    return sources, problems, unmatched


def _without_label_files(root: Path, files: list[Path], labels_dir: str | os.PathLike | None) -> list[Path]:
    """``files`` less the label masks among them (``<stem>_label.*`` of another image, or any
    ``*_label.*`` when --images and --labels are one folder), which must never become testing images.

    Raises
    ------
    ValueError
        Most files are named as labels are, and are no other file's label: --images holds
        masks (given the labels' folder, or swapped), a stray file or two among them or not.
        (When --images and --labels are one folder, such masks are left out, not refused,
        unless the folder holds nothing else.)
    """
    from converters.cells.images import image_stem

    masks = [f for f in files if image_stem(f).endswith("_label")]
    same = labels_dir is not None and Path(labels_dir).resolve() == root.resolve()
    plain = {image_stem(f) for f in files} - {image_stem(f) for f in masks}
    lone = [f for f in masks if image_stem(f)[: -len("_label")] not in plain]  # the label of no file here
    if lone and (len(lone) == len(files) or (not same and 2 * len(lone) > len(files))):
        _refuse_masks_as_images(root, files, lone)
    return [f for f in files if f not in masks or not (same or image_stem(f)[: -len("_label")] in plain)]


def _refuse_masks_as_images(root: Path, files: list[Path], masks: list[Path]) -> None:
    """Raise the error of an --images folder that holds mostly label masks (judged by the majority of its
    files, so that a stray file or two among the masks cannot turn them all into testing images)."""
    what = f"all {len(files)}" if len(masks) == len(files) else f"{len(masks)} of its {len(files)}"
    others = [f.name for f in files if f not in masks]
    rest = (f"; the other {len(others)} ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) would "
            "become testing images of masks" if others else "")
    raise ValueError(f"--images {root}: {what} files are named <stem>_label.*, as label masks are (e.g. "
                     f"{masks[0].name}), and no image there is theirs{rest}: pass the folder of the images as --images "
                     "and the masks' folder as --labels (were they swapped?)")


def _problem(stem: str, image: Path, label: str | None, reason: str, detail: str, kind: str | None = None,
             **extra: Any) -> dict:
    return {"stem": stem, "image": str(image), "label": label, "kind": kind or ("train" if label else "test"),
            "verdict": "failed", "reason": reason, "items": [], "notes": [], "detail": detail, **extra}


def _settings(max_pixels: int | None, overlap: int) -> dict:
    return {"format_version": _FORMAT_VERSION, "max_pixels": max_pixels, "tile_overlap": overlap,
            "percentiles": [1.0, 99.0], "channels": 3}


def _fingerprint(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _check_settings(out: Path, settings: dict, force: bool) -> None:
    path = out / "conversion_settings.json"
    if force or not path.is_file():
        return
    old = json.loads(path.read_text())
    diffs = [f"{k}: {old.get(k)} -> {v}" for k, v in settings.items() if old.get(k) != v]
    if diffs:
        raise SettingsMismatch(f"{out} holds a conversion made with other settings ({'; '.join(diffs)}). Use a new "
                               "--output_dir, or --force to reconvert everything there.")


def _finished(out: Path, src: dict, fingerprint: str) -> dict | None:
    path = out / "records" / f"{src['stem']}.json"
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if (rec.get("settings_fingerprint") != fingerprint or rec.get("image") != src["image"]
            or rec.get("label") != src["label"]):
        return None
    if "source_stamp" in rec and rec["source_stamp"] != _source_stamp(src):
        print(f"note: {src['stem']}: its image or label changed since it was converted: converting it again",
              file=sys.stderr)
        return None
    if rec.get("verdict") == "skipped":  # only a documented, non-defect skip stands; the rest is tried again
        return rec if rec.get("reason") in SKIP_REASONS else None
    if rec.get("verdict") != "converted" or not rec.get("items"):
        return None
    return rec if all((out / f).is_file() for f in _outputs(rec)) else None


def _outputs(rec: dict) -> list[str]:
    """Every file a converted record stands for: images, targets, and the instance mask of a labelled image."""
    files = [item[k] for item in rec.get("items", []) for k in ("image", "label") if item.get(k)]
    if rec.get("kind") == "train":
        files.append(rec.get("instances") or f"instances/{rec['stem']}_label.tiff")
    return files


def _say_lost_label(out: Path, src: dict) -> None:
    """A training image of the previous conversion whose label is no longer given becomes a
    testing image: said, since a misplaced label file is the likelier cause."""
    if src["label"]:
        return
    try:
        rec = json.loads((out / "records" / f"{src['stem']}.json").read_text())
    except (OSError, ValueError):
        return
    if rec.get("kind") == "train" and rec.get("label"):
        print(f"warning: {src['stem']} was a training image (label {rec['label']}), but --labels holds no label of it "
              "now: it becomes a testing image. Put the label back (and run again) if it was moved by mistake",
              file=sys.stderr)


def _source_stamp(src: dict) -> list[int]:
    return source_stamp([p for p in (src["image"], src["label"]) if p])


def _worker(job: tuple) -> dict:
    src, out, max_pixels, overlap, fingerprint = job
    stamp = _source_stamp(src)  # before reading: an edit during the conversion is seen next time
    rec = convert_cell_image(src, out, max_pixels, overlap)
    rec["settings_fingerprint"] = fingerprint
    rec["source_stamp"] = stamp
    if rec["verdict"] != "failed":
        atomic_write_json(Path(out) / "records" / f"{src['stem']}.json", rec)
    return rec


def _peek_shape(path: str) -> list[int] | None:
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return list(tif.series[0].shape)
        from PIL import Image

        with Image.open(path) as im:
            return [im.height, im.width]
    except Exception:  # a dry run reports what it cannot read, it does not stop
        return None


def _dry_run(sources: list[dict], problems: list[dict], unmatched: list[dict], settings: dict,
             num_folds: int) -> dict:
    from converters.folds import FoldItem, assign_folds

    train = [s for s in sources if s["label"]]
    folds, k, _ = assign_folds([FoldItem(s["stem"], s["stem"], frozenset({3})) for s in train], num_folds)
    rows = []
    for s in sources:
        shape = _peek_shape(s["image"])
        hw = shape[:2] if shape and len(shape) == 2 else (shape[-3:-1] if shape and shape[-1] <= 4 else
                                                          (shape[-2:] if shape else None))
        tiles = len(tile_grid(tuple(hw), settings["max_pixels"], settings["tile_overlap"])) if hw and s["label"] else 1
        rows.append({"stem": s["stem"], "image": s["image"], "label": s["label"],
                     "kind": "train" if s["label"] else "test", "file_shape": shape, "tiles": tiles,
                     "fold": folds.get(s["stem"])})
    return {"dry_run": True, "settings": settings, "folds": k, "images": rows,
            "problems": [{"image": p["image"], "reason": p["reason"], "detail": p["detail"]} for p in problems],
            "unmatched_labels": unmatched}


def _refuse_output_among_inputs(out: Path, inputs: list[Path]) -> None:
    """``--output_dir`` writes images/, labels/ and instances/: never into (or over) an input folder.
    The CellSeg layout's own root (holding images/ and labels/) was taken as the output and the
    converted files went in among the user's images."""
    out = out.resolve()
    for folder in inputs:
        folder = folder.resolve()
        if out == folder or folder in out.parents or any(out / sub == folder for sub in
                                                         ("images", "labels", "instances", "records")):
            raise ValueError(f"--output_dir {out} would write into the input folder {folder} (the converter writes "
                             "images/, labels/ and instances/ there): choose a folder of its own, e.g. "
                             f"{folder.parent / (folder.parent.name + '_nifti')}")


def _refuse_no_images(images_dir: str | os.PathLike, unread: list[dict]) -> None:
    """Raise the error of an --images folder with no image directly in it, naming those in its subfolders."""
    inside = next((u for u in unread if u["flag"] == "--images"), None)
    where = (f" directly in it ({len(inside['files'])} in subfolders, e.g. {inside['files'][0]}, which are never "
             f"read: move them into {images_dir} itself, or pass the subfolder as --images)" if inside else "")
    raise FileNotFoundError(f"--images {images_dir}: no {'/'.join(IMAGE_EXTENSIONS)} file{where}")


def convert_cells(output_dir: str | os.PathLike, images_dir: str | os.PathLike,
                  labels_dir: str | os.PathLike | None = None, *, num_folds: int = 5, max_pixels: int | None = None,
                  tile_overlap: int = 64, workers: int = 1, force: bool = False, dry_run: bool = False,
                  progress: bool = True) -> dict:
    """Convert a folder of cell images; write the datalist and report; return the report.

    Parameters
    ----------
    output_dir : path
        Where ``images/``, ``labels/``, ``instances/``, ``datalist.json`` and the report go.
    images_dir, labels_dir : path
        The CellSeg layout: images, and ``<stem>_label.tiff`` instance masks.
    num_folds : int
        Cross-validation folds (fewer when there are fewer training images).
    max_pixels : int, optional
        Training images with more pixels become overlapping tiles.
    tile_overlap : int
        Overlap of neighbouring tiles, pixels.
    workers : int
        Images converted in parallel (processes).
    force : bool
        Reconvert finished images and accept other settings in ``output_dir``.
    dry_run : bool
        Find and pair images, show tiles and folds; write nothing.
    """
    from converters.cells.subfolders import unread_subfolders

    sources, problems, unmatched = find_cell_images(images_dir, labels_dir)
    unread = unread_subfolders(images_dir, labels_dir, sources, IMAGE_EXTENSIONS)
    if not sources and not problems:
        _refuse_no_images(images_dir, unread)
    if labels_dir is not None and sources and not any(src.get("label") for src in sources) and not unmatched:
        # --labels was given to label images: none of them matching is a wrong folder, not a test set
        raise ValueError(f"--labels {labels_dir}: no <stem>_label.tiff there matches an image of --images "
                         f"{images_dir}" + (" (it is the --images folder)" if Path(labels_dir).resolve() ==
                                            Path(images_dir).resolve() else "")
                         + "; give the folder of the label masks, or leave --labels out to convert the images "
                         "for prediction only")
    settings = _settings(max_pixels, tile_overlap)
    _refuse_output_among_inputs(Path(output_dir), [Path(images_dir), *([Path(labels_dir)] if labels_dir else [])])
    if dry_run:
        return dict(_dry_run(sources, problems, unmatched, settings, num_folds), unread_subfolders=unread)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings, force)
    subfolders = ("images", "labels", "instances", "records")
    for sub in subfolders:
        (out / sub).mkdir(exist_ok=True)
    hold_previous_datalist(out)  # the completion marker goes first, comes back last (the old one kept if it differs)
    clean_stale_temporaries([out, *(out / sub for sub in subfolders)])
    atomic_write_json(out / "conversion_settings.json", settings)
    fingerprint = _fingerprint(settings)
    records: dict[str, dict] = {}
    jobs = []
    for src in sources:
        _say_lost_label(out, src)
        done = None if force else _finished(out, src, fingerprint)
        if done is not None:
            records[src["stem"]] = dict(done, resumed=True)
        else:
            jobs.append((src, str(out), max_pixels, tile_overlap, fingerprint))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="Converting images", unit="image", file=sys.stderr,
               disable=not (progress and jobs))
    results = (imap_pool(_worker, jobs, workers, fatal=(OutputError,)) if workers > 1 and len(jobs) > 1
               else ((job, _worker(job), None) for job in jobs))
    try:
        for job, rec, exc in results:
            src = job[0]
            if exc is not None:  # the job itself raised (the worker catches a bad image's errors)
                rec = {**src, "kind": "train" if src["label"] else "test", "verdict": "failed",
                       "reason": "error", "detail": f"{type(exc).__name__}: {exc}", "items": [], "notes": []}
            records[src["stem"]] = rec
            bar.update(1)
            bar.set_postfix_str(f"{src['stem']}: {rec['verdict']}")
    except WorkerPoolBroken as exc:  # each finished image has its record: a re-run resumes them
        names = [job[0]["stem"] for job in exc.unfinished]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise WorkerPoolBroken(f"{exc}. Not converted: {shown}; no datalist was written (the run is incomplete)",
                               exc.unfinished) from exc
    finally:
        bar.close()

    ordered = [records[s["stem"]] for s in sources] + problems
    datalist, items_meta, fold_info = build_cell_datalist(ordered, num_folds)
    atomic_write_json(out / "datalist_items.json", items_meta)
    if datalist["training"]:
        validation = validate_new_datalist(datalist, out, allow_single_fold=num_folds < 2)
    elif not datalist.get("testing"):  # nothing converted at all: no datalist may claim a finished conversion
        validation = {"ok": False, "problems": [f"{out / INVALID_DATALIST}: no image was converted, for training or "
                                                "testing (each image's failure is named above)"]}
    else:  # only unlabelled images: a datalist to predict with a trained work_dir, not to train on
        datalist.pop("num_folds")
        validation = {"ok": True, "prediction_only": True,
                      "summary": {"warnings": ["no labelled image: this datalist can only be predicted "
                                               "(run_auto3dseg.py --mode predict --work_dir <trained work_dir> "
                                               "--images ...)"]}}
    report = build_cell_report(ordered, settings, fold_info, validation, str(out.resolve()), unmatched, unread)
    atomic_write_json(out / "conversion_report.json", report)
    atomic_write_text(out / "conversion_report.md", render_cell_report_markdown(report))
    write_datalist_marker(out, datalist, validation)  # the completion marker (when valid): last
    settle_previous_datalist(out)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problems = path_flag_problems(args, [], ["output_dir"], ["images", "labels"]) + flag_problems(args)
    if problems:
        parser.error("\n  ".join(problems))
    if args.labels and not Path(args.labels).is_dir():
        print(f"error: --labels {args.labels}: " + ("a file, not a folder: give the folder of the label masks" if
                                                    Path(args.labels).exists() else "no such folder"), file=sys.stderr)
        return 2
    report, rc = run_reported(lambda: convert_cells(
        args.output_dir, args.images, args.labels, num_folds=args.num_folds, max_pixels=args.max_pixels,
        tile_overlap=args.tile_overlap, workers=args.workers, force=args.force, dry_run=args.dry_run,
        progress=not args.no_progress), (SettingsMismatch, FileNotFoundError, ValueError),
        too_big_hint="use --max_pixels to write smaller tiles, ")
    if rc is not None:
        return rc
    if args.dry_run:
        print(json.dumps(report, indent=2))
        return 0
    s = report["summary"]
    out = Path(args.output_dir)
    print(f"Converted {s['converted']} of {s['images']} images ({s['skipped']} skipped, {s['failed']} failed, "
          f"{s['resumed']} resumed, {s['tiled']} tiled); {s['training_items']} training and {s['testing_items']} "
          f"testing items, {s['cells']} labelled cells.")
    for r in report["images"]:
        if r["verdict"] != "converted":
            print(f"  {r['stem']}: {r['verdict']} ({r['reason']}) {r.get('detail', '')}")
        elif r.get("blank"):
            print(f"  {r['stem']}: note: blank testing image, converted so that it gets its <stem>_label.tiff")
        for warning in r.get("warnings", []) if r["verdict"] == "converted" else []:
            print(f"  {r['stem']}: warning: {warning}")
    for u in [*report.get("unmatched_labels", []), *report.get("unread_subfolders", [])]:
        print(f"  warning: {u['detail']}")
    folds = report["folds"]
    if folds["used"] < folds["requested"] and s["training_items"]:
        print(f"  note: {folds['used']} fold(s) instead of {folds['requested']}: fewer training images than folds")
    if print_outputs(report, out):
        return 1
    if s["failed"]:
        why = ", ".join(f"{k} {v}" for k, v in s["failed_by_reason"].items())
        print(f"error: {s['failed']} image(s) failed ({why}); the datalist holds the others. Fix or remove them "
              "and run the same command again: finished images are kept", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
