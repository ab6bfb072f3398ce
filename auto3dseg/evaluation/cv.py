"""``--mode cv``: the cross-validated score, from the out-of-fold maps (``--mode oof``).

Every training item's out-of-fold map goes through the same post-processing as the test
set and is scored against the training truth with the challenge's rules: the estimate of
the leaderboard that users compare runs with, before they submit.

* CellMap: each crop's labels are placed on its ground truth's own grid (the tiles of a crop
  joined, as for a test crop) in ``cv/oof_submission.zarr``, and scored with
  :func:`~auto3dseg.evaluation.score.score_submission` against the crop's arrays in the
  source Zarr stores (the converter records where they are), only for the classes the crop
  annotates. Official rules by default.
* 2-D cells: each image's ``<stem>_label.tiff`` (``cv/labels/``; the maps of a tiled image
  joined, overlaps averaged) against the converter's ``instances/<stem>_label.tiff``, with
  the official F1.

Items that cannot be scored (no out-of-fold map, no truth location) are
listed with the reason in ``cv/scores.md`` and ``scores.json`` (``cv.unscored``), never left
out silently. ``scores.json`` is the completion marker (written last); a re-run with the
same maps and parameters keeps it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from auto3dseg.ensembling.oof import MANIFEST as OOF_MANIFEST
from auto3dseg.ensembling.oof import OOF_DIR
from auto3dseg.orchestration.workdir import data_kind, read_input
from converters.outputs import atomic_write_text

__all__ = ["CV_DIR", "cellmap_cv_plan", "run_cv", "scores_name"]

CV_DIR = "cv"
SCORES = "scores.json"


def _load_items(datalist: Path) -> tuple[dict, dict[str, dict]]:
    dl = json.loads(datalist.read_text())
    items = json.loads((datalist.parent / dl.get("items_file", "datalist_items.json")).read_text())
    return dl, {str((datalist.parent / k).resolve()): v for k, v in items.items()}


def cellmap_cv_plan(oof: Mapping[str, Any], datalist: str | os.PathLike) -> dict[str, Any]:
    """What the CellMap cross-validated score writes and scores.

    Returns
    -------
    dict
        ``wanted`` (crop id → targets ``{label, voxel_size, translation, shape}`` on the
        crop's truth grid, one per annotated class), ``maps`` (crop id → its tiles'
        out-of-fold maps), ``truth`` (the Zarr stores holding those crops), ``only`` (the
        (crop id, label) pairs to score), ``unscored`` (``{item, reason}``) and ``crops``
        (crop id → name). The labels of a crop are the classes of the datalist's class table
        that it annotates (what the model predicts), where the truth has an array of them.
    """
    dl_path = Path(datalist)
    dl, by_image = _load_items(dl_path)
    report = json.loads((dl_path.parent / "conversion_report.json").read_text())
    records = {r["name"]: r for r in report.get("crops", [])}
    names = {int(r["id"]): str(r["name"]) for r in dl.get("class_table", [])}
    have = {str(Path(it["image"]).resolve()): it for it in oof.get("items", [])}
    unscored = [{"item": Path(m["image"]).name, "reason": m["reason"]} for m in oof.get("missing", [])]
    by_crop: dict[str, list[str]] = {}
    for image in [*have, *(str(Path(m["image"]).resolve()) for m in oof.get("missing", []))]:  # every training item
        meta = by_image.get(image)
        if meta is None:
            unscored.append({"item": Path(image).name, "reason": f"not in {dl_path.parent / 'datalist_items.json'}"})
        else:
            by_crop.setdefault(f"{meta['dataset']}_{meta['crop']}", []).append(image)
    plan: dict[str, Any] = {"wanted": {}, "maps": {}, "truth": [], "only": set(), "unscored": unscored, "crops": {},
                            "where": {}}
    for name, images in sorted(by_crop.items()):
        rec = records.get(name) or {}
        crop_id = int(by_image[images[0]]["crop_id"])
        lacking = [Path(i).name for i in images if i not in have]
        if lacking:
            if not any(u["item"] in lacking for u in unscored):
                unscored.append({"item": name, "reason": f"no out-of-fold map for {', '.join(lacking)}"})
            continue
        if not rec.get("gt_zarr"):
            unscored.append({"item": name, "reason": "its conversion record does not say where its ground truth is "
                             "(converted by an older version): run the converter's command again (finished crops "
                             "resume and gain it)"})
            continue
        if crop_id in plan["crops"]:
            unscored.append({"item": name, "reason": f"crop id {crop_id} is also {plan['crops'][crop_id]}: a "
                             "submission names crops by id only"})
            continue
        grid = {"voxel_size": rec["gt_voxel_size"], "translation": rec["gt_translation"], "shape": rec["gt_shape"]}
        # the classes of the model's class table the crop annotates (a datasplit list or --classes cut the rest)
        labels = ([names[i] for i in rec["annotated_ids"] if i in names] if "annotated_ids" in rec
                  else [n for n in rec.get("annotated", []) if n in names.values()])
        plan["crops"][crop_id] = name
        plan["wanted"][crop_id] = [{"label": lab, **grid} for lab in labels]
        plan["maps"][crop_id] = [have[i]["probabilities"] for i in images]
        plan["only"] |= {(crop_id, lab) for lab in labels}
        plan["where"][crop_id] = f"{rec['gt_zarr']}/{rec.get('gt_group', '')}".rstrip("/")
        if rec["gt_zarr"] not in plan["truth"]:
            plan["truth"].append(rec["gt_zarr"])
    _drop_missing_truth(plan)
    return plan


def _drop_missing_truth(plan: dict[str, Any]) -> None:
    """Move the crops and labels whose truth is no longer where the conversion found it (a store
    or crop group moved or deleted, an array removed) from ``plan`` to ``plan["unscored"]``:
    scoring a crop on the labels that remain would be a silently different score."""
    from auto3dseg.evaluation.stores import ScoringInputError, find_truth_labels

    found: set[tuple[int, str]] = set()
    broken: dict[str, str] = {}
    for store in list(plan["truth"]):
        if not Path(store).exists():
            broken[store] = "the store is not there (moved or deleted?)"
            continue
        try:
            found |= {(t.crop, t.label) for t in find_truth_labels(store)}
        except ScoringInputError as exc:
            broken[store] = str(exc)
    for crop_id in sorted(plan["wanted"]):
        name, where = plan["crops"][crop_id], plan["where"][crop_id]
        store = next((s for s in broken if where == s or where.startswith(s.rstrip("/") + "/")), None)
        lost = [t["label"] for t in plan["wanted"][crop_id] if (crop_id, t["label"]) not in found]
        if store is not None or len(lost) == len(plan["wanted"][crop_id]):
            why = broken[store] if store is not None else "no array of its classes is there"
            plan["unscored"].append({"item": name, "reason": f"ground truth not found at {where}: {why}; restore "
                                     "it, or re-convert the crop if its truth moved"})
            for key in ("wanted", "maps", "crops", "where"):
                plan[key].pop(crop_id)
            plan["only"] = {k for k in plan["only"] if k[0] != crop_id}
            continue
        for lab in lost:
            plan["unscored"].append({"item": f"{name}/{lab}", "reason": f"ground truth not found at {where}/{lab} "
                                     "although the conversion found it annotated; restore it or re-convert the crop"})
        plan["wanted"][crop_id] = [t for t in plan["wanted"][crop_id] if t["label"] not in lost]
        plan["only"] -= {(crop_id, lab) for lab in lost}
    plan["truth"] = [s for s in plan["truth"] if s not in broken]


def _signature(oof: Mapping[str, Any], params: Any, rules: str, plan: Mapping[str, Any] | None = None,
               truth: Sequence[str | os.PathLike] = ()) -> str:
    from converters.outputs import source_stamp

    scored = sorted(plan["only"]) if plan else None  # a truth array gone since changes what is scored
    stamp = source_stamp(truth, listing=True) if truth else None  # a truth edited since (annotations corrected) too
    text = json.dumps([oof.get("signatures"), [it["probabilities"] for it in oof.get("items", [])], params, rules,
                       scored] + ([stamp] if stamp else []), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def scores_name(rules: str) -> str:
    """The CV scores file of ``rules``: each rules keep their own (``scores.json``, ``scores_strict.json``).

    >>> scores_name("official"), scores_name("strict")
    ('scores.json', 'scores_strict.json')
    """
    return SCORES if rules == "official" else f"scores_{rules}.json"


def run_cv(work_dir: str | os.PathLike, *, params: Any = None, rules: str = "official", force: bool = False,
           log=print) -> Path:
    """Score the out-of-fold maps of ``work_dir``; returns ``cv/scores.json`` (official rules)
    or ``cv/scores_<rules>.json``, each with its ``.md``.

    ``params``: post-processing parameters (default: the project's defaults, as ``--mode
    submit`` loads them). Scores of other maps or parameters go to ``cv/replaced/`` (the
    figure a user compared with stays readable). One run at a time (``cv/.cv.lock``).
    """
    from auto3dseg.orchestration.locks import clean_temporaries, step_lock

    work = Path(work_dir).resolve()
    oof_path = work / OOF_DIR / OOF_MANIFEST
    if not oof_path.is_file():
        raise FileNotFoundError(f"{oof_path} not found: run --mode oof first (out-of-fold maps of the training items)")
    out = work / CV_DIR
    out.mkdir(parents=True, exist_ok=True)
    with step_lock(out, "cv", log=log):
        clean_temporaries(out)
        from auto3dseg.ensembling.probability_maps import read_map_manifest

        try:
            oof = read_map_manifest(oof_path)  # a copied work_dir scores its own maps
        except ValueError as exc:
            raise RuntimeError(f"{oof_path} cannot be read ({exc}): run --mode oof --force to write it again") from None
        return _run_cv(work, out, oof, params, rules, force, log)


def _run_cv(work: Path, out: Path, oof: dict, params: Any, rules: str, force: bool, log) -> Path:
    src = read_input(work)
    datalist = Path(oof.get("datalist") or src["datalist"])
    cells = data_kind(datalist, src) == "cells"
    if params is None:
        if cells:
            from auto3dseg.postprocess.cells import load_cell_params

            params = load_cell_params()
        else:
            from auto3dseg.postprocess import load_postprocess_params

            params = load_postprocess_params()
    plan = None if cells else cellmap_cv_plan(oof, datalist)
    truth = [datalist.parent / "instances"] if cells else sorted(set(plan["where"].values()))
    sig = _signature(oof, params, rules, plan, truth)
    scores_path = out / scores_name(rules)
    if not force and scores_path.is_file():
        try:
            if json.loads(scores_path.read_text()).get("cv", {}).get("signature") == sig:
                log(f"cross-validated score in {out} is up to date (same maps, parameters and rules); kept")
                return scores_path
        except ValueError:
            pass
    _keep_previous(scores_path, log)  # removed first (moved aside), written last
    result = _cells_cv(work, out, oof, datalist, params, log) if cells else _cellmap_cv(out, oof, datalist, params,
                                                                                       rules, log, plan)
    result["cv"].update(signature=sig, bundles={f: sorted({b for it in oof["items"] if str(it["fold"]) == f
                                                          for b in it["bundles"]}) for f in oof.get("signatures", {})},
                        verified=all(it.get("verified") for it in oof.get("items", [])))
    atomic_write_text(scores_path.with_suffix(".md"), _markdown(result, cells))
    atomic_write_text(scores_path, json.dumps(result, indent=1, default=str))
    return scores_path


def _keep_previous(scores_path: Path, log) -> None:
    """Move the scores of other maps or parameters (``.json`` and ``.md``) to ``cv/replaced/scores-<time>/``."""
    from auto3dseg.submission.previous import keep_previous

    keep_previous(scores_path.parent, [scores_path.name, scores_path.with_suffix(".md").name], log, what="scores",
                  first=scores_path.name)


def _cellmap_cv(out: Path, oof: dict, datalist: Path, params: Any, rules: str, log, plan: dict | None = None) -> dict:
    from auto3dseg.evaluation.score import score_submission
    from auto3dseg.submission.cellmap import write_crops

    dl = json.loads(datalist.read_text())
    plan = plan if plan is not None else cellmap_cv_plan(oof, datalist)
    for u in plan["unscored"]:
        log(f"note: not in the cross-validated score: {u['item']}: {u['reason']}")
    if not plan["wanted"]:
        raise RuntimeError(f"no training crop can be scored: {'; '.join(u['item'] + ': ' + u['reason'] for u in plan['unscored'][:5])}")
    store = out / "oof_submission.zarr"
    tmp = out / f".tmp-{os.getpid()}-oof_submission.zarr"
    shutil.rmtree(tmp, ignore_errors=True)
    write_crops(tmp, plan["wanted"], plan["maps"], oof["channels"], dl["class_table"], params, log,
                desc="Out-of-fold labels")
    shutil.rmtree(store, ignore_errors=True)
    os.replace(tmp, store)
    scores = score_submission(store, plan["truth"], rules=rules, only=plan["only"], echo_warnings=False)
    scores["cv"] = {"kind": "cellmap", "scored": [plan["crops"][c] for c in sorted(plan["crops"])],
                    "unscored": plan["unscored"], "rules": rules}
    return scores


def cell_oof_cases(oof: Mapping[str, Any], datalist: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """The scorable training images of the out-of-fold maps, and the unscored ones with why.

    Each case is ``{"stem", "prob" (C, H, W on the original image's grid), "scale" (the value of
    probability 1), "channels", "truth" (its instances file), "tiles"}``; the maps of a tiled
    image are joined, overlaps averaged.
    """
    import numpy as np

    from auto3dseg.postprocess.cells import read_cell_map

    dl_path = Path(datalist)
    _, by_image = _load_items(dl_path)
    unscored = [{"item": Path(m["image"]).name, "reason": m["reason"]} for m in oof.get("missing", [])]
    lacking = {by_image[str(Path(m["image"]).resolve())]["stem"] for m in oof.get("missing", [])
               if str(Path(m["image"]).resolve()) in by_image}
    groups: dict[str, list[tuple[dict, dict]]] = {}
    for it in oof.get("items", []):
        meta = by_image.get(str(Path(it["image"]).resolve()))
        if meta is None:
            unscored.append({"item": Path(it["image"]).name, "reason": f"not in {dl_path.parent / 'datalist_items.json'}"})
        else:
            groups.setdefault(meta["stem"], []).append((meta, it))
    cases = []
    for stem, tiles in sorted(groups.items()):
        if stem in lacking:
            unscored.append({"item": stem, "reason": "some of its tiles have no out-of-fold map"})
            continue
        try:
            full = None
            count = np.zeros(tuple(tiles[0][0]["original_shape"]), dtype=np.float32)
            for meta, it in tiles:
                _, data, names, scale = read_cell_map(it["probabilities"], oof.get("channels"))
                (r0, c0), (r1, c1) = meta["tile_start"], meta["tile_stop"]
                if tuple(data.shape[1:]) != (r1 - r0, c1 - c0):
                    raise ValueError(f"{it['probabilities']}: map of {tuple(data.shape[1:])} pixels for a tile of "
                                     f"{(r1 - r0, c1 - c0)}")
                if len(tiles) == 1 and not meta.get("tiled"):
                    full, count = data, None
                    break
                if full is None:
                    full = np.zeros((data.shape[0], *count.shape), dtype=np.float32)
                full[:, r0:r1, c0:c1] += data
                count[r0:r1, c0:c1] += 1
            if count is not None:
                full /= np.maximum(count, 1)
        except Exception as exc:  # noqa: BLE001 - one unreadable map is reported, the others are scored
            unscored.append({"item": stem, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        cases.append({"stem": stem, "prob": full, "scale": scale, "channels": names or [], "tiles": len(tiles),
                      "truth": dl_path.parent / tiles[0][0]["instances"]})
    return cases, unscored


def _cells_cv(work: Path, out: Path, oof: dict, datalist: Path, params: Any, log) -> dict:
    from auto3dseg.evaluation.cellseg import score_folders
    from auto3dseg.postprocess.cell_instances import cells_from_probabilities
    from auto3dseg.postprocess.cells import write_label_tiff

    dl = json.loads(datalist.read_text())
    cases, unscored = cell_oof_cases(oof, datalist)
    labels, truth = out / "labels", out / "truth"
    for d in (labels, truth):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    scored = []
    for case in cases:
        if not Path(case["truth"]).is_file():
            unscored.append({"item": case["stem"], "reason": f"its truth {case['truth']} is not there (moved or "
                             "deleted?): restore it, or convert the images again"})
            continue
        try:
            cells = cells_from_probabilities(case["prob"], case["channels"], dl["class_table"], params,
                                             scale=case["scale"])
        except Exception as exc:  # noqa: BLE001 - reported, never silently left out
            unscored.append({"item": case["stem"], "reason": f"post-processing failed: {type(exc).__name__}: {exc}"})
            continue
        # a full disk or a read-only cv/ ends the step (as for CellMap): a score over fewer images
        # would be kept as up to date once the disk is freed
        write_label_tiff(cells, labels / f"{case['stem']}_label.tiff")
        os.symlink(Path(case["truth"]).resolve(), truth / f"{case['stem']}_label.tiff")
        scored.append(case["stem"])
    for u in unscored:
        log(f"note: not in the cross-validated score: {u['item']}: {u['reason']}")
    if not scored:
        raise RuntimeError("no training image can be scored: " + "; ".join(f"{u['item']}: {u['reason']}"
                                                                            for u in unscored[:5]))
    scores = score_folders(truth, labels, progress=False)
    if scores["failed"]:  # an unreadable truth is a data problem, not an F1 of 0: listed, and left out
        for f in scores["failed"]:
            stem = f["name"][: -len("_label.tiff")]
            unscored.append({"item": stem, "reason": f"scoring failed: {f['error']}"})
            log(f"note: not in the cross-validated score: {stem}: scoring failed: {f['error']}")
            scored.remove(stem)
            (truth / f["name"]).unlink()
            (labels / f["name"]).unlink()
        if not scored:
            raise RuntimeError("no training image can be scored: " + "; ".join(
                f"{u['item']}: {u['reason']}" for u in unscored[:5]))
        scores = score_folders(truth, labels, progress=False)
    scores["cv"] = {"kind": "cells", "scored": sorted(scored), "unscored": unscored, "rules": "official",
                    "tiled": sorted(c["stem"] for c in cases if c["tiles"] > 1)}
    return scores


def _markdown(result: dict, cells: bool) -> str:
    cv = result["cv"]
    if cells:
        from auto3dseg.evaluation.cellseg import format_cellseg_markdown

        body, head = format_cellseg_markdown(result), f"mean F1 {result['mean_f1']:.4f}"
    else:
        from auto3dseg.evaluation.report import format_scores_markdown

        body, head = format_scores_markdown(result), f"overall {result['overall']['score']:.4f}"
    lines = ["# Cross-validated score (out-of-fold predictions)", "",
             f"**{head}** ({cv['rules']} rules) over {len(cv['scored'])} training items, each predicted by the "
             "bundles of its own fold, which never trained on it"
             + ("" if cv.get("verified") else " (not verified for every bundle: some record no training split)")
             + ".", ""]
    lines += [f"* fold {f}: {', '.join(b)}" for f, b in sorted(cv.get("bundles", {}).items())]
    if cv["unscored"]:
        lines += ["", f"Not scored ({len(cv['unscored'])}):", ""]
        lines += [f"* {u['item']}: {u['reason']}" for u in cv["unscored"]]
    return "\n".join(lines) + "\n\n" + body


def cv_summary(scores: Mapping[str, Any]) -> str:
    """One line: the cross-validated figure, its rules and how many items it covers.

    >>> cv_summary({"overall": {"score": 0.5}, "cv": {"rules": "official", "scored": ["a"], "unscored": []}})
    'Cross-validated score (out-of-fold, official rules): 0.5000 over 1 training item(s)'
    """
    cv = scores["cv"]
    figure = scores["mean_f1"] if cv.get("kind") == "cells" else scores["overall"]["score"]
    name = "mean F1" if cv.get("kind") == "cells" else "score"
    text = (f"Cross-validated {name} (out-of-fold, {cv['rules']} rules): {figure:.4f} over {len(cv['scored'])} "
            "training item(s)")
    if cv.get("unscored"):
        text += f"; {len(cv['unscored'])} not scored (listed in cv/{scores_name(cv['rules'])[:-5]}.md)"
    return text


def oof_and_cv(work_dir: str | os.PathLike, *, method: str = "best_by_fold", n_best: int = 5, algos=None,
               allow_unfinished: bool = False, params: Any = None, rules: str = "official", force: bool = False,
               tta: bool = False, log=print) -> dict:
    """``--mode oof``: the out-of-fold maps (:func:`~auto3dseg.ensembling.oof.run_oof`), then
    their cross-validated score (:func:`run_cv`); returns the scores."""
    from auto3dseg.ensembling.oof import run_oof

    manifest = run_oof(work_dir, method=method, n_best=n_best, algos=algos, allow_unfinished=allow_unfinished,
                       force=force, tta=tta, log=log)
    log(f"Out-of-fold maps: {manifest.parent} (which bundle predicted which item: {manifest})")
    path = run_cv(work_dir, params=params, rules=rules, force=force, log=log)
    return json.loads(path.read_text())
