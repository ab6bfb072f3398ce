"""A submission made with other maps or parameters is moved aside, never overwritten.

Users compare post-processing parameters by their scores; the submission (and its scores)
that a new run replaces goes to ``<submission>/replaced/submission-<time>/``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["REPORT_FILES", "keep_previous"]

SIGNATURE = "submission_signature.txt"
#: files beside a submission that belong to it (reports, local scores, the up-to-date signature)
REPORT_FILES = ("submission_report.json", "submission_report.md", "scores.json", "scores.md", "scores.csv",
                "scores_strict.json", "scores_strict.md", SIGNATURE)


def keep_previous(out: Path, names: Sequence[str], log: Callable[[str], object] = print) -> Path | None:
    """Move those of ``names`` that exist in ``out`` into a new ``out/replaced/submission-<time>``.

    Parameters
    ----------
    out : Path
        The submission folder.
    names : sequence of str
        File or folder names of the submission to keep (the zip or labels folder, then reports).
    log : callable
        Where the one-line note goes.

    Returns
    -------
    Path or None
        The folder they went to; None when there was no previous submission.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "submission.zip").write_text("old")
    >>> dest = keep_previous(out, ["submission.zip", "scores.json"], log=lambda m: None)
    >>> sorted(p.name for p in dest.iterdir()), (out / "submission.zip").exists()
    (['submission.zip'], False)
    """
    # the signature (what says "up to date") goes first: a kill part-way never leaves it beside other files
    present = sorted((out / n for n in names if (out / n).exists()), key=lambda p: p.name != SIGNATURE)
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = out / "replaced" / f"submission-{stamp}"
    n = 1
    while dest.exists():
        dest = out / "replaced" / f"submission-{stamp}-{n}"
        n += 1
    dest.mkdir(parents=True)
    for path in present:
        os.replace(path, dest / path.name)
    log(f"previous submission (other maps or parameters) moved to {dest}")
    return dest
