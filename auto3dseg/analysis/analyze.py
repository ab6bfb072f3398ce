"""Data analysis: MONAI's DataAnalyzer on a validated datalist → ``datastats.yaml`` + review.

The datalist is validated first (clear errors before minutes of analysis), then MONAI's
``DataAnalyzer`` writes ``datastats.yaml`` and ``datastats_by_case.yaml`` into the work
folder, then :func:`auto3dseg.analysis.review.write_review` writes ``datastats_review.md`` with
plots and per-class figures computed by label value. Outputs are written under temporary names
and renamed, so an interrupted run never leaves a half-written ``datastats.yaml`` that a later step would trust.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from auto3dseg.analysis.source_record import (
    DATASTATS,
    DATASTATS_SOURCE,
    record_stats_digest,
    stale_datastats,
    training_files,
    training_fingerprint,
)
from auto3dseg.orchestration.locks import clean_temporaries, step_lock
from converters.outputs import atomic_write_json

__all__ = ["DATASTATS", "DATASTATS_BY_CASE", "analyze"]

#: errors of writing (the disk, a quota, a file-size limit, a read-only folder), not of reading an image
_WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS}

DATASTATS_BY_CASE = "datastats_by_case.yaml"


def analyze(
    datalist: str | os.PathLike,
    work_dir: str | os.PathLike,
    dataroot: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    workers: int = 2,
    force: bool = False,
    validate: bool = True,
    allow_constant: bool | None = None,
) -> Path:
    """Run MONAI's DataAnalyzer on ``datalist``; return the path of ``datastats.yaml``.

    Parameters
    ----------
    datalist : path
        A datalist JSON (ours or a plain MONAI one); validated first.
    work_dir : path
        Where ``datastats.yaml`` and ``datastats_by_case.yaml`` go.
    dataroot : path, optional
        Folder the datalist's paths are relative to; default the datalist's folder.
    device : str
        ``"cpu"`` or ``"cuda"``.
    workers : int
        Processes computing the per-case statistics (MONAI's own computation, split between
        processes as MONAI splits it between GPUs; the same files as one process writes); 0 or 1:
        MONAI's single process.
    force : bool
        Re-run even when ``datastats.yaml`` exists.
    validate : bool
        Validate the datalist first; pass False when the caller just did.
    allow_constant : bool, optional
        Go on when training items have a constant image (:mod:`auto3dseg.analysis.constant_images`; the
        review lists them at the top); default ``AUTO3DSEG_ALLOW_CONSTANT_IMAGES``, else stop naming them.

    Raises
    ------
    auto3dseg.analysis.constant_images.ConstantImageError
        Training items whose image is constant (nothing written as ``datastats.yaml``).
    """
    from datalists.validate import validate_datalist

    datalist = Path(datalist)
    dataroot = Path(dataroot) if dataroot is not None else datalist.parent
    if validate:
        validate_datalist(datalist, dataroot, check_files=True, check_shapes=True, allow_single_fold=True)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with step_lock(work, "analyze"):
        _record_datalist(work, datalist, dataroot)
        clean_temporaries(work, (DATASTATS, DATASTATS_BY_CASE))
        final = work / DATASTATS
        changed = stale_datastats(work, datalist, dataroot) if final.exists() else None
        if changed and not force:
            print(f"note: {changed}: analysing again")
        if final.exists() and not force and not changed:
            _review(work, datalist, dataroot, force)
            return final
        final.unlink(missing_ok=True)  # the marker goes first: its source record then describes the new run
        atomic_write_json(work / DATASTATS_SOURCE, {"datalist": str(datalist.resolve()),
                                                    "training_sha1": training_fingerprint(datalist),
                                                    "files": training_files(datalist, dataroot)})
        _run_analyzer(datalist, dataroot, work, device, workers, allow_constant)
        _review(work, datalist, dataroot, force=True)
        return final


def _record_datalist(work: Path, datalist: Path, dataroot: Path) -> None:
    """A new work_dir's ``input.yaml`` names the datalist from its first step on (generation
    completes it), so that a later step with another datalist is refused, not mixed in."""
    import json

    from auto3dseg.orchestration.workdir import INPUT_YAML, write_input

    if (work / INPUT_YAML).is_file():
        return
    try:
        dl = json.loads(datalist.read_text())
    except (OSError, ValueError):
        dl = {}
    write_input(work, {"name": dl.get("name", "cellmap"), "modality": str(dl.get("modality", "em")),
                       "datalist": str(datalist.resolve()), "dataroot": str(dataroot.resolve())})


def _run_analyzer(datalist: Path, dataroot: Path, work: Path, device: str, workers: int,
                  allow_constant: bool | None = None) -> None:
    """DataAnalyzer → ``datastats_by_case.yaml``, then ``datastats.yaml`` (the marker later steps
    trust: removed first, written last); bad images are named before and after it runs."""
    import json

    from monai.apps.auto3dseg import DataAnalyzer

    from auto3dseg.engine.input_checks import InputError, image_shapes_problems

    dl = json.loads(datalist.read_text())
    problems = image_shapes_problems(dl, dataroot, str(datalist)) + fractional_labels(dl, dataroot)
    if problems:
        raise InputError("images the analysis cannot take:\n  " + "\n  ".join(problems))
    final = work / DATASTATS
    final.unlink(missing_ok=True)
    tmp = work / f".tmp-{os.getpid()}-{DATASTATS}"
    procs = min(max(1, int(workers)), len(dl.get("training") or []) or 1)
    analyzer = DataAnalyzer(str(datalist), str(dataroot), output_path=str(tmp), device=device,
                            worker=0 if procs > 1 else workers, label_key="label")
    try:
        if procs > 1 and device == "cpu" and hasattr(analyzer, "_get_all_case_stats"):
            _parallel_case_stats(analyzer, datalist, dataroot, tmp, procs, dl)
        else:
            analyzer.get_all_case_stats()
    except OSError as exc:
        if exc.errno in _WRITE_ERRNOS:  # a full disk or a limit while writing the statistics, not a bad image
            exc.filename = exc.filename or str(tmp)
            raise
        raise _analyzer_failure(exc, dl, dataroot, datalist) from exc
    except Exception as exc:  # noqa: BLE001 - MONAI names no file: find it, or say which datalist
        raise _analyzer_failure(exc, dl, dataroot, datalist) from exc
    tmp_by_case = tmp.with_name(tmp.name.replace(".yaml", "_by_case.yaml"))
    if tmp_by_case.exists():
        _check_finite_stats(tmp_by_case, dl, datalist)
        _check_constant_images(tmp_by_case, tmp, dl, datalist, dataroot, allow_constant)
        _check_label_values(tmp_by_case, tmp, dl, datalist)
        _check_repeated_cases(tmp_by_case, tmp, dl, datalist, dataroot)
        os.replace(tmp_by_case, work / DATASTATS_BY_CASE)
    record_stats_digest(work, tmp)
    os.replace(tmp, final)


def fractional_labels(dl: dict, dataroot: Path) -> list[str]:
    """Training labels stored as floats that hold non-whole values (a label resampled with linear
    interpolation): MONAI's statistics and training cast them to integers (1.5 becomes class 1)
    without a word. Only labels of a float dtype are read."""
    import nibabel as nib
    import numpy as np

    out = []
    for i, it in enumerate(dl.get("training") or []):
        rel = it.get("label") if isinstance(it, dict) else None
        if not isinstance(rel, str) or not rel.endswith((".nii", ".nii.gz")):
            continue
        try:
            img = nib.load(str(dataroot / rel))
            slope = img.dataobj.slope if hasattr(img.dataobj, "slope") else 1.0
            if img.get_data_dtype().kind != "f" and float(slope) == 1.0:
                continue
            data = np.asanyarray(img.dataobj)
        except Exception:  # noqa: BLE001 - an unreadable file is named by the checks that read it
            continue
        frac = np.unique(data[np.isfinite(data) & (np.mod(data, 1) != 0)])
        if frac.size:
            shown = ", ".join(f"{v:g}" for v in frac[:3]) + (" ..." if frac.size > 3 else "")
            out.append(f"{dataroot / rel}: label holds non-whole values ({shown}; training item {i}), which training "
                       "would truncate to classes: re-make it with nearest-neighbour resampling (or round it)")
    return out


def _analyzer_failure(exc: BaseException, dl: dict, dataroot: Path, datalist: Path) -> Exception:
    """The error to raise for a DataAnalyzer failure: the file it stopped on, when one cannot be read."""
    from auto3dseg.engine.input_checks import InputError

    culprit = unreadable_training_file(dl, dataroot)
    if culprit:
        return InputError(f"{culprit} ({datalist}); MONAI's DataAnalyzer stopped on it")
    return InputError(f"MONAI's DataAnalyzer failed on {datalist} ({type(exc).__name__}: {exc}); find the image "
                      f"with: python -m datalists.validate {datalist} --label-values")


def unreadable_training_file(dl: dict, dataroot: Path) -> str | None:
    """The first training image or label whose voxels cannot be read (a truncated or damaged
    file), as ``"<path>: cannot read its voxels (<reason>): re-convert or re-copy it (training
    item i)"``; None when all read. Reads every file whole: for after a failure only."""
    import nibabel as nib
    import numpy as np

    for i, it in enumerate(dl.get("training") or []):
        for key in ("image", "label"):
            rel = it.get(key) if isinstance(it, dict) else None
            for one in rel if isinstance(rel, list) else [rel]:
                if not isinstance(one, str) or not one.endswith((".nii", ".nii.gz")):
                    continue
                path = dataroot / one
                try:
                    np.asanyarray(nib.load(str(path)).dataobj)
                except Exception as exc:  # noqa: BLE001 - whatever the file's damage, name the file
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    return (f"{path}: cannot read its voxels ({reason}): re-convert or re-copy it (training item "
                            f"{i}, its {key})")
    return None


def _case_stats(job: tuple[str, str, str, int, int]) -> dict:
    """One worker's share of MONAI's per-case statistics (MONAI's own partition of the datalist)."""
    from monai.apps.auto3dseg import DataAnalyzer

    datalist, dataroot, output, rank, procs = job  # the output is never written here (no summary)
    analyzer = DataAnalyzer(datalist, dataroot, output_path=output, device="cpu", worker=0, label_key="label")
    return analyzer._get_all_case_stats(rank, procs, None, "training", None)


def _parallel_case_stats(analyzer, datalist: Path, dataroot: Path, out: Path, procs: int, dl: dict) -> None:
    """MONAI's DataAnalyzer on ``procs`` CPU processes: its per-case statistics (the cost, and
    serial on a CPU in MONAI) split as MONAI splits them between GPUs, then its summary and its
    two files, exactly as one process writes them (cases in datalist order)."""
    from monai.auto3dseg.seg_summarizer import SegSummarizer
    from monai.auto3dseg.utils import datafold_read
    from monai.bundle import ConfigParser
    from monai.utils.enums import DataStatsKeys

    from converters.pool import imap_pool

    jobs = [(str(datalist), str(dataroot), str(out), rank, procs) for rank in range(procs)]
    cases: list = []
    for _, result, exc in imap_pool(_case_stats, jobs, procs):
        if exc is not None:
            raise exc
        cases += result[DataStatsKeys.BY_CASE]
    files, _ = datafold_read(datalist=str(datalist), basedir=str(dataroot), fold=-1, key="training")
    order = {str(f["image"]): i for i, f in enumerate(files)}
    cases.sort(key=lambda c: order.get(str(c[DataStatsKeys.BY_CASE_IMAGE_PATH]), len(order)))
    summarizer = SegSummarizer(analyzer.image_key, analyzer.label_key, average=analyzer.average,
                               do_ccp=analyzer.do_ccp, hist_bins=analyzer.hist_bins, hist_range=analyzer.hist_range,
                               histogram_only=analyzer.histogram_only)
    summary = summarizer.summarize(cases)
    summary["n_cases"] = len(cases)
    by_case = out.with_name(out.name.replace(".yaml", "_by_case.yaml"))
    ConfigParser.export_config_file({DataStatsKeys.SUMMARY: summary, DataStatsKeys.BY_CASE: cases}, str(by_case),
                                    fmt="yaml", default_flow_style=None, sort_keys=False)
    ConfigParser.export_config_file({DataStatsKeys.SUMMARY: summary, DataStatsKeys.BY_CASE: []}, str(out), fmt="yaml",
                                    default_flow_style=None, sort_keys=False)


def _check_finite_stats(by_case: Path, dl: dict, datalist: Path) -> None:
    """Images whose intensity statistics are NaN or inf hold non-finite voxels: an error naming
    each (the statistics, and every model trained on them, would be NaN)."""
    import math

    import yaml

    from auto3dseg.engine.input_checks import NonFiniteImageError

    cases = (yaml.safe_load(by_case.read_text()) or {}).get("stats_by_cases") or []
    index = {Path(str(it.get("image"))).name: i for i, it in enumerate(dl.get("training") or [])}
    bad = []
    for case in cases:
        stats = (case.get("image_stats") or {}).get("intensity") or []
        values = [v for st in stats for k, v in st.items() if k in ("max", "min", "mean")]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            path = str(case.get("image_filepath"))
            bad.append(f"{path} (training item {index.get(Path(path).name, '?')} of {datalist})")
    if bad:
        by_case.unlink(missing_ok=True)
        raise NonFiniteImageError("images with NaN or infinite voxels: " + "; ".join(bad) + ". Fix them (re-convert, "
                                  "or replace the values: numpy.nan_to_num) or remove them from the datalist, then "
                                  "run --mode analyze again")


def _check_constant_images(by_case: Path, summary: Path, dl: dict, datalist: Path, dataroot: Path,
                           allow: bool | None) -> None:
    """Training items whose image is constant: stop naming them (the statistics are removed, so a
    re-run analyses again), or, when allowed, say loudly that they are trained on."""
    import sys

    import yaml

    from auto3dseg.analysis.constant_images import (
        ConstantImageError,
        allow_constant_images,
        constant_message,
        constant_training_images,
    )

    cases = (yaml.safe_load(by_case.read_text()) or {}).get("stats_by_cases") or []
    found = constant_training_images(cases, dl, dataroot)
    if not found:
        return
    if allow_constant_images(allow):
        print(f"WARNING: training on constant images anyway ({', '.join(c.describe() for c in found)}): they teach "
              "the network nothing; datastats_review.md lists them at the top", file=sys.stderr)
        return
    by_case.unlink(missing_ok=True)
    summary.unlink(missing_ok=True)
    raise ConstantImageError(constant_message(found, datalist))


def _check_label_values(by_case: Path, summary: Path, dl: dict, datalist: Path) -> None:
    """Label values that are neither background, a class of the class table nor 255 (not
    annotated): training would take those voxels as background. Stop, naming each item and its
    values (the statistics are removed, so a re-run analyses again)."""
    import yaml

    from auto3dseg.analysis.review_cases import case_label_fractions
    from auto3dseg.engine.input_checks import InputError
    from datalists.annotated import UNANNOTATED

    table = dl.get("class_table") or []
    if not table:
        return
    known = {0, UNANNOTATED} | {int(r["id"]) for r in table}
    cases = (yaml.safe_load(by_case.read_text()) or {}).get("stats_by_cases") or []
    bad = []
    for c in cases:
        try:  # 1.5 (a label resampled linearly) is no class either, not class 1
            unknown = sorted(v for v in (float(x) for x in case_label_fractions(c)) if not v.is_integer()
                             or int(v) not in known)
        except (ValueError, TypeError):
            continue
        if unknown:
            path = c.get("label_filepath") or c.get("image_filepath")
            shown = [int(v) if v.is_integer() else v for v in unknown[:8]]
            bad.append(f"{path}: values {shown}{' ...' if len(unknown) > 8 else ''}")
    if not bad:
        return
    by_case.unlink(missing_ok=True)
    summary.unlink(missing_ok=True)
    shown = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
    raise InputError(f"{len(bad)} training label(s) of {datalist} hold values that are no class of its class table "
                     f"(ids {min(known - {0, UNANNOTATED})}..{max(known - {UNANNOTATED})}; 0 background, "
                     f"{UNANNOTATED} not annotated): training would take them as background.\n  {shown}\n"
                     "Relabel them (to a class id, or to 255 to leave them out of training), or add their classes "
                     "to the class table (python -m datalists.validate <datalist> --label-values lists every value)")


def _check_repeated_cases(by_case: Path, summary: Path, dl: dict, datalist: Path, dataroot: Path) -> None:
    """Training items of different folds whose image and label statistics are identical to the
    last digit hold the same voxels (one crop saved twice, e.g. as .nii and .nii.gz, which the
    datalist's byte comparison cannot see): a fold would be scored on a crop it trained on, and
    the cross-validated score flattered. Stop, naming each pair. Constant images are left out
    (two blank images are alike without being copies)."""
    import json

    import yaml

    from auto3dseg.analysis.review_cases import match_cases_to_items
    from auto3dseg.engine.input_checks import InputError

    cases = (yaml.safe_load(by_case.read_text()) or {}).get("stats_by_cases") or []
    training = [it for it in dl.get("training") or [] if isinstance(it, dict)]
    items, _ = match_cases_to_items(cases, training, dataroot)
    first: dict[str, dict] = {}
    pairs = []
    for case, item in zip(cases, items):
        stats = {k: v for k, v in case.items() if not str(k).endswith("filepath")}
        intensity = (stats.get("image_stats") or {}).get("intensity") or []
        if item is None or not intensity or any(float(ch.get("stdev") or 0) == 0 for ch in intensity):
            continue
        key = json.dumps(stats, sort_keys=True, default=str)
        seen = first.setdefault(key, item)
        if seen is not item and seen.get("fold") != item.get("fold"):
            pairs.append(f"{seen.get('image')} (fold {seen.get('fold')}) and {item.get('image')} "
                         f"(fold {item.get('fold')})")
    if not pairs:
        return
    by_case.unlink(missing_ok=True)
    summary.unlink(missing_ok=True)
    raise InputError(f"{datalist}: training items of different folds hold the same image and label (identical "
                     "statistics): each fold would be scored on a crop it trained on, and the cross-validated "
                     "score flattered.\n  " + "\n  ".join(pairs[:10])
                     + (f"\n  ... and {len(pairs) - 10} more" if len(pairs) > 10 else "")
                     + "\nRemove the copies from the datalist (or put each copy in its original's fold)")


def _review(work: Path, datalist: Path, dataroot: Path, force: bool) -> None:
    from auto3dseg.analysis.review import REVIEW_MD, write_review

    if not force and (work / REVIEW_MD).exists():
        import json

        from auto3dseg.analysis.review import REVIEW_JSON, file_sha1

        try:
            was = json.loads((work / REVIEW_JSON).read_text())["sources"].get("datalist_sha1")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            was = None
        if was in (None, file_sha1(datalist)):
            return
        print(f"note: {datalist} changed since {work / REVIEW_MD} was written (its class table, say): writing it again")
    write_review(work, datalist, dataroot)
