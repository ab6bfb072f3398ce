"""Which post-processing parameters a step uses: ``--postprocess_params``, else the file that
``--mode tune_postprocess`` wrote in the work_dir, else the packaged defaults, and the notes that
tell the user which one acts and whether it still fits the bundles.

>>> TUNED_YAML
'postprocess_tuned.yaml'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["TUNED_YAML", "TUNING_DIR", "postprocess_params_for"]

TUNED_YAML = "postprocess_tuned.yaml"
TUNING_DIR = "tuning"


def postprocess_params_for(work_dir: str | os.PathLike, explicit: str | os.PathLike | None, cells: bool,
                           log=print, maps: str | os.PathLike | None = None) -> Any:
    """The post-processing parameters a step uses: ``explicit`` (``--postprocess_params``),
    else ``<work_dir>/postprocess_tuned.yaml`` when tuning wrote one (said in the log), else
    the packaged defaults. ``maps``: the manifest of the maps they are applied to (tuned values
    fit maps made as the out-of-fold ones were, with or without ``--tta``)."""
    from auto3dseg.postprocess import load_postprocess_params
    from auto3dseg.postprocess.cells import load_cell_params
    from auto3dseg.postprocess.params import refuse_empty_file

    load = load_cell_params if cells else load_postprocess_params
    if explicit is not None:
        refuse_empty_file(explicit)
    tuned = Path(work_dir) / TUNED_YAML
    if explicit is None and tuned.is_file():
        log(f"post-processing parameters: {tuned} (from --mode tune_postprocess; --postprocess_params overrides it)")
        stale = _tuned_on_other_maps(Path(work_dir))
        if stale:
            log(f"note: {tuned} was tuned on out-of-fold maps of bundles that changed since ({stale}): run --mode oof "
                "and --mode tune_postprocess again to tune for the bundles as they are")
        if maps is not None and (differs := _tta_differs(Path(work_dir), Path(maps))):
            log(f"note: {tuned} was tuned on out-of-fold maps made {differs}: thresholds fit the maps they were "
                "tuned on; make both alike (--mode ensemble --force with or without --tta, or --mode oof and "
                "tune_postprocess again)")
        return load(str(tuned))
    if explicit is not None and tuned.is_file():
        log(f"note: post-processing parameters: {explicit} (--postprocess_params); the tuned values in {tuned} are "
            "not used (leave out --postprocess_params to use them)")
    params = load(None if explicit is None else str(explicit))  # a bad file is named first
    if explicit is not None and not cells and (unused := _classes_not_predicted(Path(work_dir), explicit)):
        log(f"note: {explicit} sets parameters for {', '.join(unused)}, which the model does not predict (not in the "
            "class table of its datalist): they are not used")
    return params


def _classes_not_predicted(work: Path, explicit: str | os.PathLike) -> list[str]:
    """Class names of a user's parameter file that the work_dir's class table lacks (the packaged
    defaults cover every CellMap class; a user file names the ones it means)."""
    from auto3dseg.orchestration.workdir import read_input
    from auto3dseg.postprocess.params import read_user_yaml

    try:
        table = json.loads(Path(read_input(work)["datalist"]).read_text())["class_table"]
        user = read_user_yaml(explicit)
    except (OSError, ValueError, KeyError, TypeError):
        return []
    names = {str(r.get("name")) for r in table if isinstance(r, dict)}
    return sorted(str(k) for k in user if str(k) != "default" and str(k) not in names) if isinstance(user, dict) else []


def _tuned_on_other_maps(work: Path) -> str | None:
    """Why the tuned parameters no longer fit the work_dir's bundles (the out-of-fold maps they
    were tuned on were written again since, or are stale themselves), else None."""
    from auto3dseg.ensembling.oof import MANIFEST, OOF_DIR, stale_reasons

    try:
        tuned_on = json.loads((work / TUNING_DIR / "report.json").read_text()).get("oof_signatures")
        oof = json.loads((work / OOF_DIR / MANIFEST).read_text())
    except (OSError, ValueError, AttributeError):
        return None
    if tuned_on and tuned_on != oof.get("signatures"):
        return "the out-of-fold maps were written again after tuning"
    reasons = stale_reasons(work, oof)
    return "; ".join(reasons) if reasons else None


def _tta_differs(work: Path, maps: Path) -> str | None:
    """How the tuned-on out-of-fold maps and the maps of ``maps`` (a manifest) differ in test-time
    mirroring, e.g. "with --tta, the maps of …/ensemble.json without it"; None when alike or unknown."""
    try:
        tuned_on = json.loads((work / TUNING_DIR / "report.json").read_text()).get("oof_signatures") or {}
        used = json.loads(maps.read_text()).get("tta")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(tuned_on, dict) or not tuned_on or used is None:
        return None
    tuned_tta = all(str(v).endswith("-tta") for v in tuned_on.values())
    if tuned_tta == bool(used):
        return None
    return (f"{'with' if tuned_tta else 'without'} --tta, the maps of {maps} "
            f"{'without' if tuned_tta else 'with'} it")
