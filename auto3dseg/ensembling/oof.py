"""``--mode oof``: out-of-fold probability maps of the training items.

k-fold training gives every training item a model that never saw it: the bundles of the
item's own fold, which validated on it. Their mean probability map is the item's
out-of-fold (OOF) prediction, the input of the cross-validated score
(:mod:`auto3dseg.evaluation.cv`) and of post-processing tuning.

The networks are chosen as for the test set (:func:`~auto3dseg.ensembling.selection.select_ensemble`):
with ``best_by_fold`` the best network of the item's fold, with ``best_n`` the chosen
bundles of that fold (else that fold's best, said in the log). Before a bundle predicts an
item, the bundle's ``model/training_items.json`` (written by the training) must show that it
did not train on that image: a datalist whose folds changed after training would otherwise
give a flattering score silently.

Outputs, in ``<work_dir>/oof/``: ``<case>_prob.zarr`` per item (the ensemble's map format)
and ``oof.json`` (the completion marker, written last; ``oof.partial.json`` while it runs, so
that a killed run resumes). Items of a fold without a trained bundle are listed under
``missing``. One run at a time (``oof/.oof.lock``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auto3dseg.ensembling.ensemble import (
    MAP_FORMAT,
    _case_name,
    load_inferers,
    write_case_map,
)
from auto3dseg.ensembling.probability_maps import map_intact, probability_map_name
from auto3dseg.ensembling.progress import bar_safe
from auto3dseg.ensembling.selection import refuse_bundles_in_training, select_ensemble, trained_history
from auto3dseg.ensembling.kept_maps import keep_maps, maps_in
from auto3dseg.ensembling.weights_stamp import bundles_signature, copied_weights, replaced_weights
from auto3dseg.orchestration.workdir import DONE_MARKER, bundle_ckpt_path, moved_key, read_input

__all__ = ["MANIFEST", "OOF_DIR", "OutOfFoldLeak", "fold_bundles", "run_oof", "stale_reasons", "training_cases",
           "unseen_check"]

OOF_DIR = "oof"
MANIFEST, PARTIAL = "oof.json", "oof.partial.json"


class OutOfFoldLeak(RuntimeError):
    """A bundle chosen to predict an item trained on it (the folds changed after training)."""


def training_cases(datalist: str | os.PathLike, dataroot: str | os.PathLike | None = None) -> list[dict]:
    """The datalist's ``training`` items with absolute ``image``/``label`` paths, their
    ``fold`` and their position ``index``.

    Examples
    --------
    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "dl.json").write_text(json.dumps({"training": [{"image": "i.nii.gz", "fold": 1}]}))
    >>> [(Path(c["image"]).name, c["fold"], c["index"]) for c in training_cases(d / "dl.json")]
    [('i.nii.gz', 1, 0)]
    """
    path = Path(datalist)
    root = Path(dataroot) if dataroot else path.parent
    out = []
    for index, item in enumerate(json.loads(path.read_text()).get("training", [])):
        case = dict(item, index=index, fold=int(item.get("fold", -1)))
        for key in ("image", "label"):
            if isinstance(case.get(key), str):
                case[key] = str((root / case[key]).resolve())
        out.append(case)
    return out


def _fold_of(record: Mapping[str, Any]) -> int:
    from monai.utils.enums import AlgoKeys

    return int(str(record[AlgoKeys.ID]).rsplit("_", 1)[1])


def fold_bundles(history: Sequence[Mapping[str, Any]], chosen: Sequence[Mapping[str, Any]]
                 ) -> tuple[dict[int, list[Mapping[str, Any]]], list[str]]:
    """The bundles that predict each fold's items, and notes.

    The ``chosen`` bundles of fold ``f`` (as the test ensemble chose them); a fold none of
    them covers gets its best trained bundle, with a note. Folds with no trained bundle are
    absent.
    """
    from monai.utils.enums import AlgoKeys

    by_fold: dict[int, list[Mapping[str, Any]]] = {}
    for rec in chosen:
        by_fold.setdefault(_fold_of(rec), []).append(rec)
    notes = []
    for rec in sorted(history, key=lambda r: -float(r[AlgoKeys.SCORE] or 0)):
        fold = _fold_of(rec)
        if fold not in by_fold:
            by_fold[fold] = [rec]
            notes.append(f"fold {fold}: no bundle of it is in the test ensemble; its best, {rec[AlgoKeys.ID]}, "
                         "predicts its items")
    return by_fold, notes


def unseen_check(bundle: str | os.PathLike, images: Sequence[str]) -> bool:
    """True when the bundle's split record shows it trained on none of ``images``; False when
    it has no record (an older or foreign bundle: unverified). Raises :class:`OutOfFoldLeak`
    naming the images it trained on."""
    from auto3dseg.engine.training_data import SPLIT_RECORD

    try:
        record = json.loads((bundle_ckpt_path(bundle) / SPLIT_RECORD).read_text())
    except (OSError, ValueError, KeyError):
        return False
    seen, held = set(record.get("training", [])), set(record.get("validation", []))
    seen_keys = {moved_key(p) for p in seen}  # the data moved since (--force_new_datalist): match by file
    leaked = [i for i in images if str(Path(i).resolve()) in seen
              or (str(Path(i).resolve()) not in held and moved_key(i) in seen_keys)]
    if leaked:
        shown = ", ".join(leaked[:3]) + (f" and {len(leaked) - 3} more" if len(leaked) > 3 else "")
        raise OutOfFoldLeak(f"{bundle} trained on {shown}, which its fold ({record.get('fold')}) should have held out: "
                            f"the datalist's folds changed after training ({record.get('datalist')}); an out-of-fold "
                            "score would be flattered. Regenerate and retrain (--mode generate --force, then train)")
    return True


def stale_reasons(work_dir: str | os.PathLike, oof: Mapping[str, Any]) -> list[str]:
    """Why the out-of-fold maps of ``oof`` (``oof.json``) no longer come from ``work_dir``'s
    bundles: a bundle gone, unfinished, or trained again since. Empty when they are current.

    Tuning or scoring stale maps would choose parameters for (or report the score of) networks
    that no longer exist.
    """
    from monai.utils.enums import AlgoKeys

    work = Path(work_dir).resolve()
    by_fold: dict[str, list[str]] = {}
    for it in oof.get("items", []):
        by_fold.setdefault(str(it["fold"]), sorted(it["bundles"]))
    names = sorted({n for v in by_fold.values() for n in v})
    history = {str(h[AlgoKeys.ID]): h for h in trained_history(work, None, allow_unfinished=True, log=lambda *_: None)
               if str(h[AlgoKeys.ID]) in names}
    reasons = []
    for fold, bundles in sorted(by_fold.items()):
        gone = [n for n in bundles if n not in history]
        if gone:
            reasons.append(f"fold {fold}: {', '.join(gone)} no longer trained (regenerated, or its weights deleted)")
            continue
        tag = "-tta" if oof.get("tta") else ""
        now = {bundles_signature([history[n] for n in bundles], work, legacy) + tag for legacy in (False, True)}
        if oof.get("signatures", {}).get(fold) not in now:
            swapped = [n for n in bundles if replaced_weights(work / n, _done_record(work / n))]
            reasons.append(f"fold {fold}: {', '.join(swapped)} hold weights their training did not write (replaced "
                           "since)" if swapped else f"fold {fold}: {', '.join(bundles)} trained again since the maps "
                           "were written")
    return reasons


def _done_record(bundle: Path) -> dict | None:
    try:
        record = json.loads((bundle / DONE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def run_oof(work_dir: str | os.PathLike, *, method: str = "best_by_fold", n_best: int = 5,
            algos: Sequence[str] | None = None, allow_unfinished: bool = False, force: bool = False,
            tta: bool = False, log=print) -> Path:
    """Out-of-fold probability maps of every training item; returns the path of ``oof.json``.

    Maps already written by the same bundles (and ``tta`` setting) are kept (``force``
    rewrites them).

    Raises
    ------
    OutOfFoldLeak
        When a chosen bundle trained on an item of its own fold.
    RuntimeError
        When no bundle finished training.
    """
    from auto3dseg.orchestration.locks import clean_temporaries, step_lock

    work = Path(work_dir).resolve()
    out_dir = work / OOF_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    with step_lock(out_dir, "oof", log=log):
        clean_temporaries(out_dir)
        return _run_oof(work, out_dir, method=method, n_best=n_best, algos=algos, allow_unfinished=allow_unfinished,
                        force=force, tta=tta, log=log)


def _previous(out_dir: Path) -> dict:
    for name in (MANIFEST, PARTIAL):
        try:
            return json.loads((out_dir / name).read_text())
        except (OSError, ValueError):
            continue
    return {}


def _run_oof(work: Path, out_dir: Path, *, method: str, n_best: int, algos: Sequence[str] | None,
             allow_unfinished: bool, force: bool, tta: bool, log) -> Path:
    from monai.utils.enums import AlgoKeys
    from tqdm import tqdm

    src = read_input(work)
    refuse_bundles_in_training(work, algos, log=log)
    history = trained_history(work, algos, allow_unfinished=allow_unfinished, log=log)
    if not history:
        among = f" among --algos {' '.join(algos)}" if algos else ""
        raise RuntimeError(f"no bundle of {work}{among} finished training: run --mode train first (or "
                           "--allow_unfinished)")
    chosen, _, used = select_ensemble(history, work / "input.yaml", method, n_best)
    by_fold, notes = fold_bundles(history, chosen)
    if copies := copied_weights(sorted({str(work / str(b[AlgoKeys.ID])) for bs in by_fold.values() for b in bs})):
        raise OutOfFoldLeak("; ".join(f"{b} and {a} have the same weights (one copied over the other?)"
                                      for a, b in copies)
                            + ": a model of another fold would predict items it was trained on as out-of-fold. "
                            "Retrain the copied bundle (--mode train --force --fold N), or restore its own weights")
    for name in sorted({str(b[AlgoKeys.ID]) for bs in by_fold.values() for b in bs}):
        if replaced := replaced_weights(work / name, _done_record(work / name)):
            raise OutOfFoldLeak(f"{name}'s {', '.join(replaced)} {'is' if len(replaced) == 1 else 'are'} not the "
                                "weights its training wrote (replaced since: another fold's model?): its out-of-fold "
                                "maps could come from a model trained on those items. Retrain it (--mode train "
                                "--force --fold N), or restore its own weights")
    for note in notes:
        log(f"note: {note}")
    cases = training_cases(src["datalist"], src.get("dataroot"))
    source = f"'training' in {src['datalist']}"
    earlier = _previous(out_dir)
    previous = {} if force else earlier
    tag = "-tta" if tta else ""
    signatures = {str(f): bundles_signature(b, work) + tag for f, b in by_fold.items()}
    accepted = {str(f): {signatures[str(f)], bundles_signature(b, work, legacy=True) + tag}  # written before digests
                for f, b in by_fold.items()}
    _keep_other_bundles_maps(out_dir, earlier, accepted, log)
    if force and (same := [it for it in earlier.get("items", []) if earlier.get("signatures", {}).get(
            str(it.get("fold"))) in accepted.get(str(it.get("fold")), ())]):
        log(f"note: --force: {len(same)} out-of-fold map(s) in {out_dir} are predicted again with the same bundles")
    fold_now = {c["image"]: c["fold"] for c in cases}
    done = {it["image"]: {**it, "probabilities": str(out_dir / Path(it["probabilities"]).name)}
            for it in previous.get("items", [])
            if fold_now.get(it["image"]) == it["fold"]  # an item moved to another fold is checked again (a leak?)
            and previous.get("signatures", {}).get(str(it["fold"])) in accepted.get(str(it["fold"]), ())
            and Path(it["probabilities"]).name == probability_map_name(_case_name(it["image"]))
            and map_intact(out_dir / Path(it["probabilities"]).name)}  # whole maps in this folder (a copy: its own)
    predicted = {c["image"] for c in cases if c["fold"] in by_fold}
    if ((out_dir / MANIFEST).is_file() and predicted == set(done) == {it["image"] for it in previous["items"]}
            and {c["image"] for c in cases} - predicted == {m["image"] for m in previous.get("missing", [])}):
        log(f"out-of-fold maps in {out_dir} are up to date ({len(done)} maps of the same bundles): 0 maps written")
        return out_dir / MANIFEST
    (out_dir / MANIFEST).unlink(missing_ok=True)  # removed first: from here on nothing looks complete
    state: dict[str, Any] = {"channels": previous.get("channels") if done else None,
                             "activation": {k: previous[k] for k in ("activation", "activation_source")
                                            if k in previous} if done else {}}
    items, missing, computed = [], [], 0
    todo = sorted(cases, key=lambda c: (c["fold"], c["index"]))
    for fold in sorted({c["fold"] for c in todo}):
        fold_cases = [c for c in todo if c["fold"] == fold]
        bundles = by_fold.get(fold)
        if not bundles:
            why = f"no trained bundle of fold {fold}" + (f" among --algos {' '.join(algos)}" if algos else "")
            missing += [{"image": c["image"], "fold": fold, "index": c["index"], "reason": why} for c in fold_cases]
            log(f"note: {len(fold_cases)} training item(s) of fold {fold} get no out-of-fold map: {why}")
            continue
        names = [str(b[AlgoKeys.ID]) for b in bundles]
        verified = all([unseen_check(b[AlgoKeys.ALGO].output_path, [c["image"] for c in fold_cases]) for b in bundles])
        if not verified:
            log(f"note: fold {fold}: {', '.join(names)} record no training split (trained before it was recorded, "
                "or a foreign template); "
                f"that they never saw fold {fold}'s items is not verified")
        inferers: list[Any] = []
        acts: dict[str, str | None] = {}
        say = bar_safe(log)
        for case in tqdm(fold_cases, desc=f"Out-of-fold, fold {fold}", unit="image"):
            rec = done.get(case["image"])
            if rec is None:
                if not inferers:  # load the fold's bundles once, only when something is left to do
                    inferers, acts = load_inferers(work, bundles, tta, say)
                out = out_dir / probability_map_name(_case_name(case["image"]))
                item = {"image": case["image"], **({"label": case["label"]} if case.get("label") else {})}
                shape, state["channels"], state["activation"] = write_case_map(
                    inferers, acts, item, out, state["channels"], state["activation"], src["datalist"],
                    case["index"], source, say)
                rec = {"image": case["image"], "label": case.get("label"), "fold": fold, "index": case["index"],
                       "probabilities": str(out), "shape": shape, "bundles": names, "verified": verified}
                computed += 1
            items.append(rec)
            _write(out_dir / PARTIAL, used, signatures, state, src, items, missing)
        del inferers
    _write(out_dir / MANIFEST, used, signatures, state, src, items, missing)  # last: complete
    (out_dir / PARTIAL).unlink(missing_ok=True)
    log(f"out-of-fold: {computed} maps written, {len(items) - computed} kept, {len(missing)} items without a model")
    return out_dir / MANIFEST


def _keep_other_bundles_maps(out_dir: Path, earlier: Mapping[str, Any], accepted: Mapping[str, set[str]],
                             log) -> None:
    """Move to ``replaced/oof-<time>/`` the maps made by other bundles than a fold's now (trained
    again since), and those no manifest lists (a killed run's), with a copy of the manifest: they
    are not written over. Maps of the same weights stay (predicted again in place by --force)."""
    listed = {Path(it["probabilities"]).name: it for it in earlier.get("items", [])}
    sigs = earlier.get("signatures", {})
    other = [name for name, it in listed.items() if sigs.get(str(it.get("fold"))) not in accepted.get(
        str(it.get("fold")), ())]
    unlisted = [name for name in maps_in(out_dir) if name not in listed]

    def untagged(sig: Any) -> str:
        return str(sig).removesuffix("-tta")

    mirrored = [n for n in other if untagged(sigs.get(str(listed[n].get("fold")))) in {
        untagged(a) for a in accepted.get(str(listed[n].get("fold")), ())}]  # the same weights, --tta changed
    folds = sorted({str(listed[n].get("fold")) for n in other if n not in mirrored})
    tta = bool(mirrored) and str(sigs.get(str(listed[mirrored[0]].get("fold")))).endswith("-tta")
    why = "; ".join(filter(None, [
        f"made by the bundles of fold(s) {', '.join(folds)} before they were trained again" if folds else "",
        f"made {'with' if tta else 'without'} test-time mirroring (--tta)" if mirrored else "",
        "listed by no manifest" if unlisted else ""]))
    keep_maps(out_dir, sorted(set(other) & set(maps_in(out_dir))) + unlisted, what="oof", why=why,
              copies=[MANIFEST, PARTIAL], log=log)


def _write(path: Path, method: str, signatures: Mapping[str, str], state: Mapping[str, Any], src: Mapping[str, Any],
           items: list[dict], missing: list[dict]) -> None:
    from converters.outputs import atomic_write_text

    data = {"method": method, "tta": any(v.endswith("-tta") for v in signatures.values()),
            "signatures": dict(signatures), "channels": state["channels"],
            **{k: v for k, v in (state["activation"] or {}).items()}, "format": MAP_FORMAT,
            "datalist": src.get("datalist"), "items": items, "missing": missing}
    atomic_write_text(path, json.dumps(data, indent=1))
