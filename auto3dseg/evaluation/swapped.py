"""Swapped ``--submission`` and ``--truth``: told apart by how each is shipped and named.

Submissions and the flat truth are the same kind of store (plain arrays ``crop<N>/<label>``
with voxel_size, translation and shape, on the manifest's grids), so their contents do not
tell them apart: a zip, CellMap ground-truth groups, the writer's sidecar files and the names do.
Scoring them the wrong way round gives a wrong score with no other sign.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from auto3dseg.evaluation.stores import ScoringInputError
from auto3dseg.submission.previous import SIGNATURE
from converters.cellmap import zarr_tree as cz

__all__ = ["SUBMISSION_NAME_RE", "TRUTH_NAME_RE", "swap_check"]

TRUTH_NAME_RE = re.compile(r"truth|(?<![a-z])gt(?![a-z])", re.IGNORECASE)
SUBMISSION_NAME_RE = re.compile(r"submission|(?<![a-z])pred(?:s|iction|ictions)?(?![a-z])", re.IGNORECASE)
# Files the project's submission writer (auto3dseg/submission) leaves beside submission.zarr.
WRITER_SIDECARS = (SIGNATURE, "submission_report.json")


def _names(p: Path) -> list[str]:
    """The path's own name, and the name of the single ``*.zarr`` folder directly in it."""
    inner = sorted(c.name for c in p.glob("*.zarr")) if p.is_dir() else []
    return [p.name] + (inner if len(inner) == 1 else [])


def _looks_like_truth(p: Path) -> tuple[list[str], bool]:
    """Why a ``--submission`` path looks like ground truth, and whether that is decisive."""
    if p.is_dir() and any(next(p.glob(pat), None) for pat in
                          ("recon-*/labels/groundtruth/crop*", *cz.GT_GLOBS)):
        return ["it holds CellMap ground truth (recon-*/labels/groundtruth/crop<N>)"], True
    named = [n for n in _names(p) if TRUTH_NAME_RE.search(n) and not SUBMISSION_NAME_RE.search(n)]
    return ([f"it is named '{named[0]}'"] if named else []), False


def _looks_like_submission(p: Path) -> tuple[list[str], bool]:
    """Why a ``--truth`` path looks like a submission, and whether that is decisive."""
    if p.is_file() and zipfile.is_zipfile(p):
        return ["it is a zip file, the form a submission is shipped in"], True
    if (p.is_dir() and not (p / ".zgroup").exists() and not any(p.glob("*.zarr"))
            and not any(next(p.glob(pat), None) for pat in cz.GT_GLOBS)):
        zips = [f.name for f in p.glob("*.zip") if zipfile.is_zipfile(f)]
        if len(zips) == 1:
            return [f"it holds no zarr store but the zip file {zips[0]}, as a submission folder does"], True
    why = []
    named = [n for n in _names(p) if SUBMISSION_NAME_RE.search(n) and not TRUTH_NAME_RE.search(n)]
    if named:
        why.append(f"it is named '{named[0]}'")
    near = [f for d in (p.parent, p) for f in WRITER_SIDECARS if (d / f).is_file()]
    if near:
        why.append(f"the submission writer's {near[0]} lies beside it")
    return why, False


def swap_check(submission: str | os.PathLike[str], truth: str | os.PathLike[str]) -> str | None:
    """A warning when ``--submission`` and ``--truth`` look swapped; raises when it is clear.

    Refused when one side is decisive (a zip given as the truth, CellMap ground truth given
    as the submission) or when both sides point the same way (e.g. ``test_truth.zarr`` as
    the submission and ``submission.zarr`` as the truth); one side alone gives the warning
    text returned. Nothing when both paths are the same.

    Raises
    ------
    ScoringInputError
        One line naming both paths.

    >>> swap_check("/data/test_truth.zarr", "/work/submission/other.zarr")[:40]
    '--submission /data/test_truth.zarr looks'
    >>> swap_check("/data/gt.zarr", "/work/pred.zarr")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ScoringInputError: ... look swapped ...
    """
    sub, tru = Path(submission), Path(truth)
    if sub.exists() and tru.exists() and sub.resolve() == tru.resolve():
        return None
    sub_why, sub_sure = _looks_like_truth(sub)
    tru_why, tru_sure = _looks_like_submission(tru)
    reasons = [f"--submission {sub} looks like ground truth ({'; '.join(sub_why)})"] if sub_why else []
    reasons += [f"--truth {tru} looks like a submission ({'; '.join(tru_why)})"] if tru_why else []
    if sub_sure or tru_sure or (sub_why and tru_why):
        raise ScoringInputError(f"{'; '.join(reasons)}: --submission and --truth look swapped; run again with "
                                f"--submission {tru} --truth {sub} (scoring them this way round gives a wrong "
                                "score: instance matching and Hausdorff terms are not symmetric)")
    if reasons:
        return (f"{reasons[0]}: are --submission and --truth swapped? Scored as given; swapped inputs give a "
                "wrong score with no other sign")
    return None
