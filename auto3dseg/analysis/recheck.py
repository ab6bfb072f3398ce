"""The analysis's input checks, again, on training files rewritten since it ran.

``--mode analyze`` refuses images of another dimensionality or channel count, labels with
non-whole values and label values that are no class of the class table (training would take
them as background). A file rewritten in place after the analysis (a label corrected by hand,
an image re-exported) reaches ``--mode train`` without those checks; :func:`recheck_rewritten`
runs them on just those files (``datastats_source.json`` records each training file's size and
time), so training refuses what the analysis would have refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["label_values_problems", "recheck_rewritten"]


def label_values_problems(datalist: dict, dataroot: str | os.PathLike, only: set[str] | None = None) -> list[str]:
    """One message per training label (of ``only``, paths as the datalist names them) holding
    values that are neither background, a class id of the class table nor 255 (not annotated).

    Examples
    --------
    >>> import tempfile, nibabel as nib, numpy as np
    >>> d = tempfile.mkdtemp(); lab = np.zeros((4, 4, 4), np.uint8); lab[0, 0, 0] = 40
    >>> nib.save(nib.Nifti1Image(lab, np.eye(4)), f"{d}/a.nii.gz")
    >>> dl = {"class_table": [{"id": 1, "name": "mito"}], "training": [{"image": "x", "label": "a.nii.gz"}]}
    >>> label_values_problems(dl, d)[0].endswith("a.nii.gz: values [40] (training item 0)")
    True
    """
    import fastremap
    import nibabel as nib
    import numpy as np

    from datalists.annotated import UNANNOTATED
    from datalists.checks_files import odd_label_values

    table = datalist.get("class_table") or []
    if not table:
        return []
    known = {0, UNANNOTATED} | {int(r["id"]) for r in table}
    out = []
    for i, it in enumerate(datalist.get("training") or []):
        rel = it.get("label") if isinstance(it, dict) else None
        if not isinstance(rel, str) or (only is not None and rel not in only):
            continue
        try:
            data = np.asanyarray(nib.load(str(Path(dataroot) / rel)).dataobj)
        except Exception:  # noqa: BLE001 - an unreadable file is named when training reads it
            continue
        non_integer, bad = odd_label_values(fastremap.unique(data) if data.dtype.kind in "ui" else np.unique(data),
                                            known)
        if odd := non_integer + bad:
            out.append(f"{Path(dataroot) / rel}: values {odd[:8]}{' ...' if len(odd) > 8 else ''} (training item {i})")
    return out


def recheck_rewritten(work: str | os.PathLike, datalist: str | os.PathLike,
                      dataroot: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """``(rewritten, problems)``: the training files rewritten since ``work``'s analysis, and what
    the analysis would refuse in them (one message each, naming the file and the fix)."""
    from auto3dseg.analysis.analyze import fractional_labels
    from auto3dseg.analysis.source_record import rewritten_training_files
    from auto3dseg.engine.input_checks import image_shapes_problems

    changed = rewritten_training_files(work, datalist, dataroot)
    if not changed:
        return [], []
    root = Path(dataroot) if dataroot is not None else Path(datalist).parent
    dl = json.loads(Path(datalist).read_text())
    only = set(changed)
    paths = {str(root / c) for c in changed}

    def about_changed(msg: str) -> bool:
        return any(msg.startswith(p + " ") or msg.startswith(p + ":") for p in paths)

    problems = [m for m in image_shapes_problems(dl, root, str(datalist)) + fractional_labels(dl, root)
                if about_changed(m)]
    bad_values = label_values_problems(dl, root, only)
    if bad_values:
        problems.append(f"label values that are no class of the class table of {datalist} (0 background, 255 not "
                        "annotated; training would take them as background): " + "; ".join(bad_values)
                        + ": relabel them (to a class id, or 255 to leave them out), or add their classes to the class "
                        "table")
    return changed, problems
