"""A submission made with other maps or parameters is moved aside, never overwritten.

Users compare post-processing parameters by their scores; the submission (and its scores)
that a new run replaces goes to ``<submission>/replaced/submission-<time>/``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PARAMS_FILE", "REPORT_FILES", "keep_previous", "params_differ", "params_text"]

SIGNATURE = "submission_signature.txt"
#: the post-processing parameters a submission was made with (what its test score is a score of)
PARAMS_FILE = "submission_params.json"
#: files beside a submission that belong to it (reports, local scores, parameters, the up-to-date signature)
REPORT_FILES = ("submission_report.json", "submission_report.md", "scores.json", "scores.md", "scores.csv",
                "scores_strict.json", "scores_strict.md", PARAMS_FILE, SIGNATURE)


def params_text(params: Mapping[str, Any]) -> str:
    """The parameters as :data:`PARAMS_FILE` holds them (sorted keys: equal parameters, equal text)."""
    return json.dumps(params, sort_keys=True, indent=1, default=str) + "\n"


def params_differ(out: Path, params: Mapping[str, Any]) -> str | None:
    """Why the submission in ``out`` was not made with ``params`` (None when it was).

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / PARAMS_FILE).write_text(params_text({"mito": {"threshold": 0.5}}))
    >>> params_differ(out, {"mito": {"threshold": 0.5}}) is None
    True
    >>> params_differ(out, {"mito": {"threshold": 0.4}})
    'made with other post-processing parameters (mito)'
    """
    path = out / PARAMS_FILE
    try:
        made = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"made with post-processing parameters it does not record ({path} is missing: made before they were)"
    now = json.loads(params_text(params))
    if made == now:
        return None
    keys = sorted(k for k in set(made) | set(now) if made.get(k) != now.get(k)) if isinstance(made, dict) else []
    return "made with other post-processing parameters" + (f" ({', '.join(map(str, keys[:6]))}"
                                                           + (", ..." if len(keys) > 6 else "") + ")" if keys else "")


def keep_previous(out: Path, names: Sequence[str], log: Callable[[str], object] = print, *,
                  what: str = "submission", first: str = SIGNATURE, why: str = "other maps or parameters"
                  ) -> Path | None:
    """Move those of ``names`` that exist in ``out`` into a new ``out/replaced/<what>-<time>``.

    Parameters
    ----------
    out : Path
        The folder holding them (the submission folder).
    names : sequence of str
        File or folder names to keep (the zip or labels folder, then reports).
    log : callable
        Where the one-line note goes.
    what : str
        What they are, for the folder's name and the note (``submission``, ``labels``, ``scores``).
    why : str
        What differs, for the note.
    first : str
        The name moved first: the file that says "up to date", so that a kill part-way never
        leaves it beside files of another run.

    Returns
    -------
    Path or None
        The folder they went to; None when there was nothing to keep.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = (out / "submission.zip").write_text("old")
    >>> dest = keep_previous(out, ["submission.zip", "scores.json"], log=lambda m: None)
    >>> sorted(p.name for p in dest.iterdir()), (out / "submission.zip").exists(), dest.name.startswith("submission-")
    (['submission.zip'], False, True)
    """
    present = sorted((out / n for n in names if (out / n).exists()), key=lambda p: p.name != first)
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = out / "replaced" / f"{what}-{stamp}"
    n = 1
    while dest.exists():
        dest = out / "replaced" / f"{what}-{stamp}-{n}"
        n += 1
    dest.mkdir(parents=True)
    for path in present:
        os.replace(path, dest / path.name)
    log(f"previous {what} ({why}) moved to {dest}")
    return dest
