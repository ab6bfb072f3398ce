"""What ``--mode train`` checks before any bundle trains or any weights are moved aside: the
bundles' files, overrides and class table (:mod:`auto3dseg.bundles.checks`), training files
rewritten since the analysis, and what each bundle's training would fail on at its start."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auto3dseg.orchestration.workdir import Bundle, list_bundles, read_input

__all__ = ["check_bundles", "label_rules_note", "missing_data_files", "preflight_bundles",
           "recheck_training_files"]


def preflight_bundles(bundles: Sequence[Bundle], overrides: Mapping[str, Any] | None) -> dict[str, str]:
    """The project's bundles, as their training would read them (files and overrides): what one
    would fail on at its start, by bundle name, found before ``--force`` moves any weights aside
    (those bundles are reported failed and the others train)."""
    from auto3dseg.bundles.config import load_bundle_config
    from auto3dseg.engine.training import preflight
    from auto3dseg.orchestration.train_bundles import _config_files, overrides_for

    problems: dict[str, str] = {}
    for b in bundles:
        files = _config_files(b.path)
        cfg = load_bundle_config(files, overrides_for(b.algo, overrides))
        if "output_activation" not in cfg and cfg:  # another template's bundle: its own script checks it
            continue
        try:
            preflight(cfg)
        except ValueError as exc:
            problems[b.name] = (f"{b.path / 'configs'}: cannot be trained as configured: {exc}; fix the file (or "
                                "the --override), or generate the bundle again (--mode generate --force moves this "
                                "one to replaced/); nothing of it was moved or trained")
            continue
        missing = missing_data_files(cfg)
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            problems[b.name] = (f"{len(missing)} file(s) of its datalist {cfg.get('data_list_file_path')} are not "
                                f"there ({shown}): restore them or fix the datalist; nothing of it was moved or trained")
    return problems


def missing_data_files(cfg: Mapping[str, Any]) -> list[str]:
    """Training images and labels of the datalist a bundle's config names that do not exist."""
    datalist, root = cfg.get("data_list_file_path"), cfg.get("dataroot")
    try:
        items = json.loads(Path(str(datalist)).read_text()).get("training") or []
    except (OSError, ValueError, TypeError):
        return []  # a missing or damaged datalist is named by the training's own checks
    base = Path(str(root)) if root else Path(str(datalist)).parent
    out = []
    for it in items:
        for key in ("image", "label"):
            rel = it.get(key) if isinstance(it, dict) else None
            for one in rel if isinstance(rel, list) else [rel]:
                if isinstance(one, str) and not (base / one).is_file():
                    out.append(str(base / one))
    return out


def recheck_training_files(work_dir: str | os.PathLike, log) -> None:
    """Training files rewritten since the analysis get its input checks again (InputError naming
    what it would refuse); otherwise a note that the bundles were planned on the earlier files."""
    from auto3dseg.analysis.source_record import DATASTATS
    from auto3dseg.analysis.recheck import recheck_rewritten
    from auto3dseg.engine.input_checks import InputError

    try:
        src = read_input(work_dir)
        changed, problems = recheck_rewritten(work_dir, src["datalist"], src.get("dataroot"))
    except (FileNotFoundError, KeyError, OSError, ValueError):
        return  # no record to compare with: the steps that read the files name them
    if problems:
        raise InputError(f"{len(changed)} training file(s) were rewritten since the analysis "
                         f"({Path(work_dir) / DATASTATS}), and it would refuse them:\n  " + "\n  ".join(problems)
                         + "\nFix them, then run --mode analyze (it checks them again) and train")
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        log(f"note: {len(changed)} training file(s) were rewritten since the analysis ({shown}): the bundles were "
            "planned from the earlier statistics; to plan them on these files, run --mode analyze, then --mode "
            "generate --force")


def check_bundles(work_dir: str | os.PathLike, bundles: Sequence[Bundle], overrides: Mapping[str, Any] | None) -> None:
    """Before any training: overrides name keys of the bundles, and the bundles' class table is
    the datalist's (:mod:`auto3dseg.bundles.checks`); ValueError naming what to fix."""
    from auto3dseg.bundles.checks import channel_rule_changes, check_bundle_files, check_class_tables, check_overrides

    check_bundle_files(bundles, overrides)
    check_overrides(bundles, overrides or {}, {b.algo for b in list_bundles(Path(work_dir).resolve())})
    try:
        datalist = read_input(work_dir)["datalist"]
    except (FileNotFoundError, KeyError):
        return
    check_class_tables(bundles, datalist, work_dir)
    if changes := channel_rule_changes(bundles, datalist):
        raise ValueError(
            f"{len(changes)} bundle(s) were generated by an older version, whose channels leave out classes that lie "
            "inside the channel's class (a voxel of er_mem_all was trained as 'not er'):\n  " + "\n  ".join(changes)
            + f"\nRegenerate them: run_auto3dseg.py --mode generate --work_dir {work_dir} --force (the old bundles "
            "are moved to replaced/), then train; nothing was trained")


def label_rules_note(work_dir: str | os.PathLike, log) -> None:
    """Say again, before training on it, that the work_dir's datalist was converted under older
    label rules (validation's warning, which analyze and generate print too)."""
    from datalists.validate import DatalistError, validate_datalist

    try:
        datalist = read_input(work_dir)["datalist"]
        warnings = validate_datalist(datalist, check_files=False, allow_single_fold=True)["warnings"]
    except (FileNotFoundError, KeyError, OSError, ValueError, DatalistError):
        return  # its own problems are named where it is read
    for w in warnings:
        if "label_rules" in w:
            log(f"warning: {w}")

