"""Which ``run_auto3dseg.py`` flags each mode reads: a flag a mode would ignore is refused.

A flag that has no effect is worse than an error: ``--truth`` given to ``--mode ensemble``
scores nothing, ``--postprocess_params`` given to ``--mode predict`` without ``--postprocess``
post-processes nothing, and the user believes both happened. :func:`ignored_flags` names
every such flag of a command line, with the modes that use it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import math
import re

__all__ = ["device_arg", "FLAG_MODES", "CELLMAP_ONLY", "cells_problems", "conflicting_flags", "gpus_arg",
           "ignored_flags", "non_negative_float", "non_negative_int", "positive_int", "slurm_mem", "slurm_name",
           "slurm_time", "wait_seconds"]

_SUBMITTING = ("submit", "full", "slurm")

#: flag (argparse ``dest``) -> the modes in which it changes something. Flags missing here
#: (work_dir, datalist, debug, ...) are read by every mode, or checked elsewhere (tta, oof, tune).
FLAG_MODES: dict[str, tuple[str, ...]] = {
    "dataroot": ("validate", "analyze", "generate", "full", "slurm"),  # later modes read input.yaml's
    "algos": ("generate", "train", "ensemble", "predict", "submit", "oof", "full", "slurm"),  # submit: see below
    "device": ("analyze", "full"),
    "workers": ("analyze", "full"),
    "allow_constant_images": ("analyze", "full", "slurm"),
    "num_fold": ("generate", "full", "slurm"),
    "templates": ("generate", "full", "slurm"),
    "num_epochs": ("generate", "train", "full", "slurm"),
    "budget": ("generate", "train", "full", "slurm"),
    "patch_size": ("generate", "train", "full", "slurm"),
    "algo": ("train",),
    "fold": ("train",),
    "task_index": ("train",),
    "gpus": ("train", "full"),
    "override": ("train", "full", "slurm"),
    "require_trained": ("ensemble", "submit", "oof", "full", "slurm"),
    "ensemble_method": ("ensemble", "predict", "oof", "full", "slurm"),
    "n_best": ("ensemble", "predict", "oof", "full", "slurm"),
    "allow_unfinished": ("ensemble", "predict", "oof", "full"),
    "images": ("predict",),
    "output_dir": ("predict",),
    "postprocess": ("predict",),
    "postprocess_params": ("predict", "submit", "oof", "tune_postprocess", "full", "slurm"),
    "test_manifest": _SUBMITTING,
    "score_rules": ("submit", "oof", "tune_postprocess", "full", "slurm"),
    "truth": _SUBMITTING,
    "force": ("analyze", "generate", "train", "ensemble", "predict", "submit", "oof", "tune_postprocess", "slurm"),
    **{f"slurm_{k}": ("slurm",) for k in ("partition", "account", "qos", "gpus", "cpus", "mem", "time", "args")},
    "dry_run": ("slurm",),
    "force_new_datalist": ("analyze", "generate", "train", "ensemble", "predict", "submit", "oof", "tune_postprocess",
                           "full", "slurm"),  # validate records nothing
}

#: flags (with a non-default value) that only CellMap data use
CELLMAP_ONLY = ("test_manifest", "score_rules", "tune_max_voxels", "tune_min_objects")

#: what to use instead, where a flag's mode has a neighbour that does the job
_INSTEAD = {
    ("gpus", "slurm"): "--slurm_gpus sets the GPUs of each SLURM training task",
    ("force", "full"): "--mode full never redoes finished work: redo one step with its own --mode and --force",
    ("allow_unfinished", "slurm"): "the SLURM jobs ensemble only finished bundles: run --mode ensemble "
                                   "--allow_unfinished after them",
    ("truth", "oof"): "the cross-validated score is computed from the training labels; --truth scores a "
                      "submission (--mode submit)",
    ("truth", "tune_postprocess"): "tuning scores the out-of-fold maps against the training labels; --truth "
                                   "scores a submission (--mode submit)",
    ("device", "slurm"): "the SLURM prep job analyzes on its CPUs",
    **{("dataroot", m): "it goes with --datalist; without it this mode uses the one <work_dir>/input.yaml records"
       for m in ("train", "ensemble", "predict", "submit", "oof", "tune_postprocess")},
    ("workers", "slurm"): "the SLURM prep job uses its CPUs (--slurm_cpus) for the analysis",
    ("algos", "tune_postprocess"): "tuning uses the out-of-fold maps as --mode oof made them: run --mode oof "
                                   "--algos ... --force first",
}


def _flag(dest: str) -> str:
    return "--" + dest


def _changed(args: argparse.Namespace, parser: argparse.ArgumentParser, dest: str) -> bool:
    return getattr(args, dest, None) != parser.get_default(dest)  # 0 counts: `--fold 0` is a choice too


def ignored_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """One line per flag of ``args`` that ``args.mode`` would ignore, with the modes that use it.

    Examples
    --------
    >>> from run_auto3dseg import build_parser
    >>> p = build_parser()
    >>> ignored_flags(p.parse_args(["--mode", "ensemble", "--truth", "t.zarr"]), p)
    ['--truth does nothing with --mode ensemble: it is read by --mode submit, full, slurm']
    >>> ignored_flags(p.parse_args(["--mode", "submit", "--truth", "t.zarr"]), p)
    []
    """
    mode, lines = args.mode, []
    for dest, modes in FLAG_MODES.items():
        if not _changed(args, parser, dest) or mode in modes:
            continue
        if dest == "dataroot" and args.datalist:  # with --datalist it re-points input.yaml (--force_new_datalist)
            continue
        why = _INSTEAD.get((dest, mode), f"it is read by --mode {', '.join(modes)}")
        lines.append(f"{_flag(dest)} does nothing with --mode {mode}: {why}")
    if mode == "submit" and _changed(args, parser, "algos") and not args.require_trained:
        lines.append("--algos does nothing with --mode submit (without --require_trained): the submission is made "
                     "from the ensemble's maps as they are; to ensemble other networks run --mode ensemble --algos "
                     "... --force first")
    if mode == "predict" and args.postprocess_params and not args.postprocess:
        lines.append("--postprocess_params does nothing with --mode predict without --postprocess (which writes "
                     "labels with them): add --postprocess")
    if args.n_best != parser.get_default("n_best") and args.ensemble_method != "best_n":
        lines.append(f"--n_best does nothing with --ensemble_method {args.ensemble_method}: add --ensemble_method "
                     "best_n")
    return lines


def cells_problems(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """One line per CellMap-only flag of ``args``, for a 2-D cells datalist (where it does nothing)."""
    lines = []
    for dest in CELLMAP_ONLY:
        if _changed(args, parser, dest):
            value = getattr(args, dest)
            lines.append(f"{_flag(dest)} {value} does nothing for 2-D cells: "
                         + ("the testing images of the datalist are what is predicted" if dest == "test_manifest"
                            else "cell tuning always scores every image" if dest == "tune_max_voxels"
                            else "cell tuning counts images (--tune_min_crops), not objects"
                            if dest == "tune_min_objects"
                            else "cells are scored by the official CellSeg F1 only"))
    return lines


# ----------------------------------------------------------------------------- argparse types: a value refused at parsing
def positive_int(text: str, minimum: int = 1) -> int:
    """argparse type: a whole number >= 1 (0 would silently mean "the default")."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is not allowed: give a whole number >= {minimum}, or leave the "
                                         "flag out for the default")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0 (a fold, an index, a count where 0 means none)."""
    return positive_int(text, minimum=0)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed: give a number >= 0")
    return value


def wait_seconds(text: str) -> str:
    """argparse type of ``--wait_lock``: seconds >= 0, or inf."""
    if text.strip().lower() in ("inf", "infinity"):
        return "inf"
    return str(non_negative_float(text))


def slurm_time(text: str) -> str:
    """argparse type of ``--slurm_time``: one of sbatch's forms (minutes, minutes:seconds,
    hours:minutes:seconds, days-hours, days-hours:minutes, days-hours:minutes:seconds)."""
    t = text.strip()
    if t.upper() in ("UNLIMITED", "INFINITE"):
        return t
    if re.fullmatch(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}", t):
        days, _, clock = t.rpartition("-")
        fields = [int(f) for f in clock.split(":")]
        # the first field is free (90 minutes, 36 hours) unless days come first; the others are on a clock
        if all(f <= 59 for f in fields[1:]) and (not days or fields[0] <= 23):
            return t
        raise argparse.ArgumentTypeError(f"{text!r} is not a Slurm time: minutes and seconds after the first field go "
                                         "up to 59, hours after days up to 23 (e.g. 1-23:59:00, 2-00:00:00)")
    raise argparse.ArgumentTypeError(f"{text!r} is not a Slurm time: give e.g. 90 (minutes), 12:00:00 or 2-00:00:00")


def device_arg(text: str) -> str:
    """argparse type of ``--device``: a torch device string (cpu, cuda, cuda:1, ...).

    >>> device_arg("cuda:1")
    'cuda:1'
    """
    import torch

    try:
        torch.device(text.strip())
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: give cpu, cuda or cuda:N") from None
    return text.strip()


def slurm_name(text: str) -> str:
    """argparse type of ``--slurm_partition`` / ``_account`` / ``_qos``: a name (or a comma-separated
    list of them), with no spaces: sbatch would refuse it only after the jobs were written."""
    t = text.strip()
    if t and not re.search(r"\s", t) and all(t.split(",")):
        return t
    raise argparse.ArgumentTypeError(f"{text!r} is not a Slurm name: no spaces (several partitions: gpu,gpu_long)")


def slurm_mem(text: str) -> str:
    """argparse type of ``--slurm_mem``: a whole number with an optional K, M, G or T unit."""
    t = text.strip()
    if re.fullmatch(r"\d+[KMGTkmgt]?", t) and int(re.sub(r"\D", "", t)) > 0:
        return t
    raise argparse.ArgumentTypeError(f"{text!r} is not a Slurm memory size: give e.g. 64G or 16000M")


def gpus_arg(text: str) -> str:
    """argparse type of ``--gpus``: a count >= 0, a list of GPU ids, or cpu."""
    t = text.strip().lower()
    if t in ("cpu", "none") or t.isdigit() or (
            "," in t and all(i.strip().isdigit() for i in t.split(",") if i.strip()) and t.strip(", ")):
        return text.strip()
    raise argparse.ArgumentTypeError(f"{text!r} is not allowed: give a GPU count (2), GPU ids (0,1) or cpu")


def conflicting_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | None:
    """The first combination of flags that cannot mean what it says (a step of another mode, an
    empty path, two flags choosing one thing), as a usage error; None when there is none."""
    if (args.oof or args.tune) and args.mode not in ("full", "slurm"):
        return (f"--oof and --tune are steps of --mode full and slurm; with --mode {args.mode} run "
                "--mode oof, then --mode tune_postprocess")
    if args.tune and not args.oof:
        return "--tune needs --oof: the post-processing is tuned on the out-of-fold maps"
    if args.tta and args.mode not in ("ensemble", "predict", "oof", "full", "slurm"):
        return (f"--tta is used by --mode ensemble, predict, oof, full and slurm; --mode {args.mode} makes no "
                "probability maps")
    empty = [f"--{k}" for k, v in vars(args).items() if (isinstance(v, str) and not v.strip()) or (
        isinstance(v, list) and any(isinstance(x, str) and not x.strip() for x in v))]
    if empty:  # "--work_dir $WORK" with WORK unset: the current folder would take the outputs
        return f"{', '.join(empty)} is empty (an unset shell variable?): give a path"
    folders = [f"--{k} {getattr(args, k)}" for k in ("datalist", "postprocess_params")
               if getattr(args, k, None) and Path(getattr(args, k)).is_dir()]
    if folders:
        return f"{', '.join(folders)} is a folder: give the file"
    pipes = [f"--{k} {getattr(args, k)}" for k in ("datalist", "postprocess_params", "test_manifest")
             if getattr(args, k, None) and Path(getattr(args, k)).exists() and not Path(getattr(args, k)).is_file()
             and not Path(getattr(args, k)).is_dir()]
    if pipes:  # <(...): read once by a check, then found empty by the step that uses it
        return (f"{', '.join(pipes)} is a pipe (a <(...) process substitution?), not a file: it can be read only "
                "once, and the work_dir records its path; save it to a file and give that")
    if args.fold is not None and args.task_index is not None:
        return ("--fold and --task_index both choose the bundle to train: give one (--task_index I is the I-th "
                "bundle, for SLURM array tasks)")
    if args.num_epochs and args.budget:
        return "--num_epochs and --budget both set the training length: give one (--budget wins in the bundle)"
    changed = [f"--{k}" for k in ("tune_budget", "tune_min_crops", "tune_min_objects", "tune_max_voxels",
                                  "tune_min_gain") if getattr(args, k) != parser.get_default(k)]
    if changed and not (args.mode == "tune_postprocess" or args.tune):
        return (f"{' '.join(changed)} set the tuning: use them with --mode tune_postprocess, or --mode "
                "full/slurm --oof --tune")
    return None
