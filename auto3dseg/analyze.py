"""Data analysis: MONAI's DataAnalyzer on a validated datalist → ``datastats.yaml`` + review.

The datalist is validated first (clear errors before minutes of analysis), then MONAI's
``DataAnalyzer`` writes ``datastats.yaml`` and ``datastats_by_case.yaml`` into the work
folder, then :func:`auto3dseg.review.write_review` writes ``datastats_review.md`` with
plots and per-class figures computed by label value. Outputs are written under temporary names and renamed, so an interrupted run
never leaves a half-written ``datastats.yaml`` that a later step would trust.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATASTATS", "DATASTATS_BY_CASE", "analyze"]

DATASTATS = "datastats.yaml"
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
        DataLoader workers reading the images.
    force : bool
        Re-run even when ``datastats.yaml`` exists.
    validate : bool
        Validate the datalist first; pass False when the caller just did.
    """
    from datalists.validate import validate_datalist

    datalist = Path(datalist)
    dataroot = Path(dataroot) if dataroot is not None else datalist.parent
    if validate:
        validate_datalist(datalist, dataroot, check_files=True, check_shapes=True, allow_single_fold=True)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    final = work / DATASTATS
    if final.exists() and not force:
        _review(work, datalist, dataroot, force)
        return final

    from monai.apps.auto3dseg import DataAnalyzer

    tmp = work / f".tmp-{os.getpid()}-{DATASTATS}"
    analyzer = DataAnalyzer(str(datalist), str(dataroot), output_path=str(tmp), device=device, worker=workers,
                            label_key="label")
    analyzer.get_all_case_stats()
    tmp_by_case = tmp.with_name(tmp.name.replace(".yaml", "_by_case.yaml"))
    if tmp_by_case.exists():
        os.replace(tmp_by_case, work / DATASTATS_BY_CASE)
    os.replace(tmp, final)
    _review(work, datalist, dataroot, force=True)
    return final


def _review(work: Path, datalist: Path, dataroot: Path, force: bool) -> None:
    from auto3dseg.review import REVIEW_MD, write_review

    if force or not (work / REVIEW_MD).exists():
        write_review(work, datalist, dataroot)
