"""Which trained bundles an ensemble uses: MONAI's ensemble builder over the finished ones.

``trained_history`` lists the bundles whose training finished (``training_done.json``), as
MONAI's algo history, naming any left out (untrained, weights deleted, trained before their
training files changed); ``select_ensemble`` runs MONAI's ``AlgoEnsembleBestByFold`` or
``AlgoEnsembleBestN`` over them; ``gone_bundles`` names generated folds whose bundle folder
is gone. Used alike by the test-set ensemble and the out-of-fold maps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auto3dseg.orchestration.workdir import list_bundles, prefer_templates, recorded_folds

__all__ = ["ENSEMBLE_METHODS", "gone_bundles", "refuse_bundles_in_training", "select_ensemble", "trained_history"]

ENSEMBLE_METHODS = ("best_by_fold", "best_n")


def _unfinished_record(bundle) -> dict | None:
    """A done-like record of a bundle whose training did not finish but wrote a best model:
    ``{"best_avg_dice_score", "unfinished": True}`` from its ``progress.yaml``, else None."""
    import yaml

    from auto3dseg.orchestration.workdir import bundle_ckpt_path

    try:
        ckpt = bundle_ckpt_path(bundle.path)
        progress = yaml.safe_load((ckpt / "progress.yaml").read_text()) or []
    except (OSError, ValueError, KeyError, yaml.YAMLError):
        return None
    if not progress or not any(ckpt.glob("*.pt")):
        return None
    best = progress[-1]
    return {"best_avg_dice_score": best.get("best_avg_dice_score"), "epoch": best.get("best_avg_dice_score_epoch"),
            "unfinished": True}


def refuse_bundles_in_training(work_dir: str | os.PathLike, algos: Sequence[str] | None = None, log=print) -> None:
    """Raise :class:`~auto3dseg.orchestration.locks.LockBusy` when another run is training one of
    the bundles (its ``.train.lock`` is held), after ``--wait_lock``'s wait: the bundle would be
    left out as "not trained", or used with the weights it is writing."""
    from auto3dseg.orchestration.locks import LockBusy, wait_while_busy

    for b in list_bundles(Path(work_dir).resolve()):
        if (not algos or b.algo in algos) and (busy := wait_while_busy(b.path, "train", log=log,
                                                                          what=f"training of {b.name}")):
            raise LockBusy(busy)  # else left out as "not trained", or used with weights being written


def trained_history(work_dir: str | os.PathLike, algos: Sequence[str] | None = None, *,
                    allow_unfinished: bool = False, log=print) -> list[dict]:
    """MONAI algo history of the bundles whose training finished (``training_done.json``);
    with ``allow_unfinished`` also of those stopped early that wrote a best model (saying so)."""
    from monai.auto3dseg.utils import algo_from_json
    from monai.utils.enums import AlgoKeys

    from auto3dseg.bundles.migrate import migrate_work_dir, old_module_aliases

    history, untrained, used = [], [], []
    migrate_work_dir(Path(work_dir).resolve(), log=log)  # bundles of before the layout change
    for b in list_bundles(Path(work_dir).resolve()):
        if algos and b.algo not in algos:
            continue
        if b.weights_lost:
            log(f"note: {b.name} is left out: {b.path / 'training_done.json'} is there but its weights are not "
                "(deleted?); run --mode train to train it again")
            continue
        done = b.done
        if not done and allow_unfinished:
            done = _unfinished_record(b)
            if done:
                log(f"note: {b.name} did not finish training; using its best model so far (validation Dice "
                    f"{done['best_avg_dice_score']:.4f} at epoch {done['epoch']})")
        if not done:
            untrained.append(b.name)
            continue
        template_path = json.loads((b.path / "algo_object.json").read_text()).get("template_path")
        if template_path:  # not a same-named template imported from another folder in this process
            prefer_templates(template_path, [b.algo])
        with old_module_aliases():  # a legacy pickle may name the old module paths
            algo, _ = algo_from_json(str(b.path / "algo_object.json"))
        score = done.get("best_avg_dice_score")
        if score is None:
            score = algo.get_score()
        history.append({AlgoKeys.ID: b.name, AlgoKeys.ALGO: algo, AlgoKeys.SCORE: score, AlgoKeys.IS_TRAINED: True})
        used.append(b)
    from auto3dseg.orchestration.train_bundles import stale_bundles_note

    if note := stale_bundles_note(used, "maps made with them show what was learnt from the old files"):
        log(note)
    if untrained and history:  # without any trained bundle the caller's error says what to do
        shown = ", ".join(untrained[:6]) + (f" and {len(untrained) - 6} more" if len(untrained) > 6 else "")
        log(f"note: {shown} {'is' if len(untrained) == 1 else 'are'} not trained: left out (train with --mode train; "
            "--require_trained refuses instead, --allow_unfinished uses a best model so far)")
    return history


def gone_bundles(work: Path, history: list[dict], src: Mapping[str, Any]) -> list[str]:
    """Bundles of the folds ``input.yaml`` says were generated (``num_fold``) whose folder is gone,
    for each network that has trained bundles: the ensemble then covers fewer folds."""
    from monai.utils.enums import AlgoKeys

    folds = recorded_folds(work, src)
    algos = sorted({str(h[AlgoKeys.ID]).rpartition("_")[0] for h in history})
    why = f"{work / 'input.yaml'}: num_fold {folds}"
    if not folds:  # a work_dir generated before input.yaml recorded num_fold: folds are generated 0..n-1, so a gap
        present = [int(p.name.rpartition("_")[2]) for a in algos for p in work.glob(f"{a}_*")
                   if p.is_dir() and p.name.rpartition("_")[2].isdigit() and p.name.rpartition("_")[0] == a]
        folds = max(present, default=-1) + 1
        why = f"folds 0 to {folds - 1} are generated, fold {folds - 1} is there"
    gone = [f"{a}_{f}" for a in algos for f in range(folds) if not (work / f"{a}_{f}").exists()]
    if not gone:
        return []
    return [f"{', '.join(gone)} {'was' if len(gone) == 1 else 'were'} generated ({why}) but {'is' if len(gone) == 1 else 'are'} gone: the ensemble has no model of "
            f"{'that fold' if len(gone) == 1 else 'those folds'}; to restore, run --mode generate --algos "
            f"{' '.join(sorted({g.rpartition('_')[0] for g in gone}))}, then --mode train"]


def select_ensemble(history: list[dict], data_src_cfg: str | os.PathLike, method: str = "best_by_fold",
                    n_best: int = 5) -> tuple[list[dict], list[dict], str]:
    """Bundles chosen by MONAI's ensemble builder, the infer files of the datalist's
    ``testing`` list, and the method actually used.

    ``best_by_fold`` needs a trained bundle in every fold (MONAI's would crash on a gap);
    with a gap it falls back to ``best_n`` over what is trained, and says so.
    """
    from monai.apps.auto3dseg import (
        AlgoEnsembleBestByFold,
        AlgoEnsembleBestN,
        AlgoEnsembleBuilder,
    )
    from monai.utils.enums import AlgoKeys

    if method not in ENSEMBLE_METHODS:
        raise ValueError(f"unknown ensemble method {method!r}; expected one of {ENSEMBLE_METHODS}")
    if not history:
        raise RuntimeError("no trained bundle to ensemble: run --mode train first")
    folds = sorted({int(h[AlgoKeys.ID].split("_")[1]) for h in history})
    used = method
    if method == "best_by_fold" and folds != list(range(len(folds))) or (method == "best_by_fold" and not folds):
        print(f"note: trained bundles cover folds {folds} only; using best_n instead of best_by_fold")
        used = "best_n"
    builder = AlgoEnsembleBuilder(history, str(data_src_cfg))
    ens = AlgoEnsembleBestByFold(len(folds)) if used == "best_by_fold" else AlgoEnsembleBestN(n_best=n_best)
    builder.set_ensemble_method(ens)
    chosen = builder.get_ensemble()
    return list(chosen.get_algo_ensemble()), list(chosen.infer_files), used
