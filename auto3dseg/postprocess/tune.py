"""``--mode tune_postprocess``: post-processing parameters chosen on the out-of-fold maps.

The out-of-fold maps (``--mode oof``) are predictions of images the models never saw, and the
cross-validated score scores them under the challenge's rules; so each class's parameters can
be chosen to maximise that score, as nnU-Net chooses its post-processing on its validation
folds, but per class and over more than one switch:

* CellMap, per class: ``threshold`` (sigmoid maps), and for instance classes
  ``min_size_nm3``, ``watershed`` on or off, and with it ``min_distance_nm`` and ``h_nm``;
* cells: ``seed_threshold``, ``threshold`` and ``min_cell_px`` (one set for all images).

The search is a bounded coordinate search (:func:`coordinate_search`): one key at a time
over a short grid of values around the default, keeping a value only when it scores higher,
at most ``budget`` evaluations per class. A class's threshold also changes the groups made of
it (``mito`` = ``mito_mem`` ∪ ``mito_lum`` ∪ ...), so its objective is the mean score of the
class and those groups. Guards against fitting noise: a class annotated in fewer than
``min_crops`` crops, with fewer than ``min_objects`` truth objects (instance classes) or
no truth voxel keeps its defaults, and so does one whose best gain is under ``min_gain``;
the report says which and why.

Writes ``<work_dir>/postprocess_tuned.yaml`` (only the values that changed, over the packaged
defaults), which ``--mode submit`` and ``--mode oof`` then use, and
``<work_dir>/tuning/report.md`` + ``.json`` (per class: the default and tuned score, the
values, the evaluations, or why it kept its defaults). The tuned figure is measured on the
maps it was tuned on, so it is optimistic by the amount of noise fitted; the guards bound it.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters.outputs import atomic_write_text

__all__ = ["TUNED_YAML", "coordinate_search", "postprocess_params_for", "tune_postprocess"]

from auto3dseg.postprocess.in_force import TUNED_YAML, TUNING_DIR, postprocess_params_for  # noqa: F401 (re-exported)

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def coordinate_search(evaluate: Callable[[dict], float], start: Mapping[str, Any],
                      grid: Mapping[str, Sequence[Any]], budget: int,
                      active: Callable[[dict, str], bool] | None = None) -> tuple[dict, float, list[dict]]:
    """Maximise ``evaluate(params)`` one key at a time over ``grid``, from ``start``.

    Each key's values are tried with the other keys at their best so far; a value is kept
    only when it scores strictly higher (ties keep the earlier value, so the start wins a
    tie). At most ``budget`` evaluations after the start's; ``active(params, key)`` False
    skips a key (e.g. watershed settings while the watershed is off).

    Returns
    -------
    best : dict
    best_score : float
    trials : list of dict
        ``{"params": changed keys, "score"}`` for every evaluation, the start first.

    Examples
    --------
    >>> f = lambda p: -(p["a"] - 2) ** 2 - (p["b"] - 1) ** 2
    >>> best, score, trials = coordinate_search(f, {"a": 0, "b": 0}, {"a": [0, 1, 2, 3], "b": [0, 1]}, budget=10)
    >>> best, score, len(trials)
    ({'a': 2, 'b': 1}, 0, 5)
    """
    best = dict(start)
    best_score = evaluate(dict(best))
    trials = [{"params": {}, "score": best_score}]
    spent = 0
    for key, values in grid.items():
        if active is not None and not active(best, key):
            continue
        for value in values:
            if spent >= budget:
                return best, best_score, trials
            if value == best.get(key):
                continue
            trial = {**best, key: value}
            score = evaluate(dict(trial))
            spent += 1
            trials.append({"params": {k: v for k, v in trial.items() if start.get(k) != v}, "score": score})
            if score > best_score:
                best, best_score = trial, score
    return best, best_score, trials


# --------------------------------------------------------------------------------------
# CellMap: per class, against the official-rules score of the out-of-fold crops
# --------------------------------------------------------------------------------------
class CellMapObjective:
    """Per-label official-rules scores of the out-of-fold crops for any parameter set.

    The truth arrays are read once per label and kept while that label is tuned. With
    ``max_voxels``, the search (``sample=True``) scores each label on a seeded sample of its
    crops holding at most that many voxels (at least one crop), the final figures on all.
    """

    def __init__(self, oof: Mapping[str, Any], datalist: str | os.PathLike, rules: str = "official",
                 max_voxels: int | None = None):
        from auto3dseg.evaluation.cv import cellmap_cv_plan
        from auto3dseg.evaluation.stores import find_truth_labels

        self.oof, self.rules, self.max_voxels = oof, rules, max_voxels
        self.plan = cellmap_cv_plan(oof, datalist)
        self.table = json.loads(Path(datalist).read_text())["class_table"]
        self.truth = {(t.crop, t.label): t for p in self.plan["truth"] for t in find_truth_labels(p)
                      if (t.crop, t.label) in self.plan["only"]}
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    def crops_of(self, label: str) -> list[int]:
        return sorted(c for c, targets in self.plan["wanted"].items() if any(t["label"] == label for t in targets)
                      and (c, label) in self.truth)

    def search_crops(self, label: str) -> list[int]:
        """The crops the search scores ``label`` on: all, or a seeded sample within ``max_voxels``."""
        crops = self.crops_of(label)
        if not self.max_voxels:
            return crops
        order = [crops[i] for i in np.random.default_rng(0).permutation(len(crops))]
        chosen, total = [], 0
        for c in order:
            n = int(np.prod(next(t for t in self.plan["wanted"][c] if t["label"] == label)["shape"]))
            if chosen and total + n > self.max_voxels:
                continue
            chosen.append(c)
            total += n
        return sorted(chosen)

    def truth_array(self, crop: int, label: str) -> np.ndarray:
        key = (crop, label)
        if key not in self._arrays:
            self._arrays[key] = np.asarray(self.truth[key].array[...])
        return self._arrays[key]

    def forget(self, labels: Sequence[str]) -> None:
        for key in [k for k in self._arrays if k[1] in labels]:
            del self._arrays[key]

    def records(self, params: Mapping[str, Any], labels: Sequence[str], sample: bool = False) -> list[dict]:
        """One official record per (crop, label) of ``labels``, made with ``params`` (on the
        search's sample of crops with ``sample``)."""
        from auto3dseg.evaluation.score import score_on_truth_grid
        from auto3dseg.submission.cellmap import map_labels, place_tiles
        from datalists.cellmap_classes import INSTANCE_CLASSES

        out = []
        of = {lab: set(self.search_crops(lab) if sample else self.crops_of(lab)) for lab in labels}
        crops = sorted(set().union(*of.values())) if of else []
        for crop in crops:
            makers = [map_labels(p, self.oof["channels"], self.table, params) for p in self.plan["maps"][crop]]
            for label in labels:
                if crop not in of[label]:
                    continue
                target = next(t for t in self.plan["wanted"][crop] if t["label"] == label)
                kind = "instance" if label in INSTANCE_CLASSES else "semantic"
                arrays = [(a, g) for a, g in ((make(label), grid) for make, grid in makers) if a is not None]
                data = place_tiles(arrays, target, kind)
                out.append(score_on_truth_grid(self.truth[(crop, label)], self.truth_array(crop, label), data,
                                               self.rules))
        return out

    def scores(self, params: Mapping[str, Any], labels: Sequence[str], sample: bool = False) -> dict[str, dict]:
        """Per label: the official figures, and ``objective``: the score, but 0 for an
        instance label skipped in some crop for too many predicted objects (the official
        rules give such a crop nothing and a class skipped everywhere 1.0: an artifact
        that a search would otherwise learn to produce by over-splitting)."""
        from auto3dseg.evaluation.official import aggregate_official

        records = self.records(params, labels, sample)
        out = aggregate_official(records)[0] if labels else {}
        for name, entry in out.items():
            skipped = any(str(r.get("status", "")).startswith("skipped") for r in records if r["label"] == name)
            entry["objective"] = 0.0 if skipped else float(entry["score"])
        return out

    def evidence(self, label: str) -> tuple[int, int]:
        """(crops, truth objects or foreground voxels) of ``label``."""
        from auto3dseg.evaluation.official import official_kind

        crops = self.crops_of(label)
        total = 0
        for c in crops:
            arr = self.truth_array(c, label)
            total += (len(np.unique(arr[arr > 0])) if official_kind(label) == "instance"
                      else int(np.count_nonzero(arr)))
        return len(crops), total


def _ancestors(table: Sequence[Mapping[str, Any]], name: str) -> list[str]:
    """Groups that contain ``name`` through their parts, at any depth.

    >>> t = [{"id": 1, "name": "a", "parts": []}, {"id": 2, "name": "g", "parts": [1]},
    ...      {"id": 3, "name": "h", "parts": [2]}, {"id": 4, "name": "b", "parts": []}]
    >>> _ancestors(t, "a"), _ancestors(t, "b")
    (['g', 'h'], [])
    """
    names = {int(r["id"]): str(r["name"]) for r in table}
    found: set[int] = set()
    frontier = {next(i for i, n in names.items() if n == name)}
    while frontier:
        parents = {int(r["id"]) for r in table if frontier & {int(p) for p in r.get("parts") or []}} - found
        found |= parents
        frontier = parents
    return sorted(names[i] for i in found)


def _depth(table: Sequence[Mapping[str, Any]], name: str) -> int:
    by_id = {int(r["id"]): r for r in table}
    row = next(r for r in table if r["name"] == name)
    parts = [int(p) for p in row.get("parts") or [] if int(p) in by_id]
    return 1 + max((_depth(table, str(by_id[p]["name"])) for p in parts), default=0)


def _instance_grid(default: Mapping[str, Any], spacing: Sequence[float], sigmoid: bool) -> dict[str, list]:
    voxel = float(np.prod(spacing))
    d_size, d_h, d_dist = float(default["min_size_nm3"]), float(default["h_nm"]), float(default["min_distance_nm"])
    grid: dict[str, list] = {"threshold": list(THRESHOLDS)} if sigmoid else {}
    grid["min_size_nm3"] = sorted({0.0, d_size, d_size * 4, 27 * voxel, 125 * voxel, 1000 * voxel})
    grid["watershed"] = [False, True]
    grid["min_distance_nm"] = sorted({d_dist / 2, d_dist, d_dist * 2})
    grid["h_nm"] = sorted({d_h / 2, d_h, d_h * 2})
    return grid


def _changed(default: Mapping[str, Any], tuned: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in tuned.items() if default.get(k) != v}


def tune_cellmap(objective: CellMapObjective, defaults: Mapping[str, Any], *, budget: int = 24,
                 min_crops: int = 2, min_objects: int = 5, min_gain: float = 0.005,
                 reference: Mapping[str, Any] | None = None, log=print) -> dict:
    """Tune every scored class of ``objective`` from ``defaults``; returns the report
    (``params``: the tuned parameter set, ``classes``: one row per class, ``before``/``after``:
    the official per-label and overall figures). What the search found is then checked on all
    crops (:mod:`auto3dseg.postprocess.tune_guards`), against ``reference`` (the packaged
    defaults) too when ``defaults`` is another start."""
    from auto3dseg.evaluation.official import official_kind
    from auto3dseg.postprocess.params import params_for
    from auto3dseg.postprocess.tune_guards import keep_what_holds

    table = objective.table
    sigmoid = not (objective.oof.get("channels") or [""])[0] == "background"
    labels = sorted({lab for _, lab in objective.truth}, key=lambda n: (_depth(table, n), n))
    tuned = copy.deepcopy(dict(defaults))
    rows = []
    for label in labels:
        kind = official_kind(label)
        n_crops, evidence = objective.evidence(label)
        row: dict[str, Any] = {"label": label, "kind": kind, "crops": n_crops,
                               ("objects" if kind == "instance" else "voxels"): evidence}
        why = (f"annotated in {n_crops} crop(s), fewer than {min_crops}" if n_crops < min_crops else
               f"{evidence} truth object(s), fewer than {min_objects}" if kind == "instance" and evidence < min_objects
               else "no truth voxel of it" if evidence == 0 else None)
        if why is None and kind == "semantic" and not sigmoid:
            why = "softmax maps: an argmax, no threshold to tune"
        if why:
            rows.append({**row, "kept": True, "reason": why})
            objective.forget([label])
            continue
        watch = [label] + [g for g in _ancestors(table, label) if g in labels]
        start = params_for(tuned, label)
        spacing = objective.plan["wanted"][objective.crops_of(label)[0]][0]["voxel_size"]
        grid = _instance_grid(start, spacing, sigmoid) if kind == "instance" else {"threshold": list(THRESHOLDS)}

        def evaluate(p: dict, label: str = label, watch: list[str] = watch) -> float:
            trial = {**tuned, label: {**tuned.get(label, {}), **p}}
            scores = objective.scores(trial, watch, sample=True)
            return float(np.mean([scores[w]["objective"] for w in watch]))

        best, score, trials = coordinate_search(evaluate, start, grid, budget,
                                                active=lambda p, k: k not in ("min_distance_nm", "h_nm")
                                                or bool(p.get("watershed")))
        gain = score - trials[0]["score"]
        change = _changed(start, best)
        row.update(objective_labels=watch, crops_searched=len(objective.search_crops(label)), evaluations=len(trials),
                   default_objective=trials[0]["score"],
                   tuned_objective=score, trials=trials)
        if not change or gain < min_gain:
            rows.append({**row, "kept": True, "reason": "no value scored higher than the default" if not change else
                         f"best gain {gain:+.4f} is under --tune_min_gain {min_gain}"})
        else:
            tuned[label] = {**tuned.get(label, {}), **change}
            rows.append({**row, "kept": False, "changed": change, "reason": ""})
            log(f"tuned {label}: {', '.join(f'{k} {start[k]} -> {v}' for k, v in change.items())} "
                f"(objective {trials[0]['score']:.4f} -> {score:.4f})")
        objective.forget(watch)
    before, overall_before, after, overall_after = keep_what_holds(rows, tuned, defaults, objective, labels,
                                                                   reference=reference, log=log)
    for row in rows:
        row["score_before"], row["score_after"] = before[row["label"]]["score"], after[row["label"]]["score"]
    return {"kind": "cellmap", "params": tuned, "classes": rows,
            "before": {"labels": before, "overall": overall_before},
            "after": {"labels": after, "overall": overall_after}}


# --------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------
def tune_postprocess(work_dir: str | os.PathLike, *, budget: int = 24, min_crops: int = 2, min_objects: int = 5,
                     min_gain: float = 0.005, rules: str = "official", max_voxels: int | None = 200_000_000,
                     base: str | os.PathLike | None = None, force: bool = False, log=print) -> dict:
    """Tune on ``work_dir``'s out-of-fold maps (``--mode oof`` first); write
    ``postprocess_tuned.yaml`` and ``tuning/report.md``/``.json``; returns the report.

    Starts from the packaged defaults, or from ``base`` (a parameter file, ``--postprocess_params``:
    then the tuned file holds its values too), never from an earlier tuning, so a re-run is the
    same search: it is kept instead (a note) when the out-of-fold maps, the settings and the start
    file are those of the last report and its tuned file is as written; ``force`` searches again. CellMap: each class is searched on a seeded sample of its crops of at most
    ``max_voxels`` voxels (None: all), and its figures before and after are on all of them.
    An earlier ``postprocess_tuned.yaml`` that the run would replace or remove is kept in
    ``tuning/replaced/``. One run at a time (``tuning/.tune.lock``).

    Raises
    ------
    RuntimeError
        The out-of-fold maps are older than the bundles (regenerated or trained again).
    """
    from auto3dseg.ensembling.oof import MANIFEST, OOF_DIR
    from auto3dseg.orchestration.locks import step_lock
    from auto3dseg.postprocess.params import refuse_empty_file

    if base is not None:
        refuse_empty_file(base)  # before anything: the search would start from the defaults, unsaid
    work = Path(work_dir).resolve()
    oof_path = work / OOF_DIR / MANIFEST
    if not oof_path.parent.is_dir():  # the file itself is checked under the lock: a running oof removes it first
        raise FileNotFoundError(f"{oof_path} not found: run --mode oof first (tuning uses the out-of-fold maps)")
    out = work / TUNING_DIR
    out.mkdir(parents=True, exist_ok=True)
    # the oof step's lock too: a run of --mode oof rewriting the maps meanwhile would be tuned on half-written maps
    with step_lock(oof_path.parent, "oof", log=log), step_lock(out, "tune", log=log):
        return _tune_locked(work, oof_path, out, budget=budget, min_crops=min_crops, min_objects=min_objects,
                            min_gain=min_gain, rules=rules, max_voxels=max_voxels,
                            base=None if base is None else str(base), force=force, log=log)


def _tune_locked(work: Path, oof_path: Path, out: Path, *, budget: int, min_crops: int, min_objects: int,
                 min_gain: float, rules: str, max_voxels: int | None, base: str | None, force: bool, log) -> dict:
    from auto3dseg.ensembling.oof import stale_reasons
    from auto3dseg.ensembling.probability_maps import read_map_manifest
    from auto3dseg.orchestration.workdir import data_kind, read_input
    from auto3dseg.postprocess import load_postprocess_params
    from auto3dseg.postprocess.cells import load_cell_params

    if not oof_path.is_file():  # removed by a run of --mode oof that held the lock before us
        raise FileNotFoundError(f"{oof_path} not found: run --mode oof first (tuning uses the out-of-fold maps)")
    try:
        oof = read_map_manifest(oof_path)  # a copied work_dir tunes on its own maps
    except ValueError as exc:
        raise RuntimeError(f"{oof_path} cannot be read ({exc}): run --mode oof --force to write it again") from None
    stale = stale_reasons(work, oof)
    if stale:
        raise RuntimeError(f"the out-of-fold maps in {oof_path.parent} are older than the bundles "
                           f"({'; '.join(stale)}): "
                           "run --mode oof first (it redoes the changed folds); tuning on them would choose "
                           "parameters for networks that no longer exist")
    src = read_input(work)
    datalist = oof.get("datalist") or src["datalist"]
    settings = {"budget": budget, "min_crops": min_crops, "min_objects": min_objects, "min_gain": min_gain,
                "rules": rules, "max_voxels": max_voxels, "start": base or "packaged defaults",
                "start_sha1": _text_sha1(Path(base)) if base else None}
    if not force and (kept := _kept_report(out, settings, oof, work / TUNED_YAML)) is not None:
        log(f"tuning is up to date (the same out-of-fold maps, settings and start): kept {out / 'report.md'}; "
            "--force searches again")
        return kept
    if data_kind(datalist, src) == "cells":
        packaged, start = load_cell_params(), load_cell_params(base)
        from auto3dseg.postprocess.tune_cells import tune_cells

        report = tune_cells(oof, datalist, start, budget=budget, min_images=min_crops, min_gain=min_gain,
                            reference=packaged if base else None, log=log)
        tuned = any(not r["kept"] for r in report["classes"])
        content = {k: v for k, v in report["params"].items() if packaged.get(k) != v}
    else:
        packaged, start = load_postprocess_params(), load_postprocess_params(base)
        report = tune_cellmap(CellMapObjective(oof, datalist, rules, max_voxels), start, budget=budget,
                              min_crops=min_crops, min_objects=min_objects, min_gain=min_gain,
                              reference=packaged if base else None, log=log)
        tuned = any(not r["kept"] for r in report["classes"])
        content = {name: diff for name, entry in report["params"].items()
                   if (diff := {k: v for k, v in entry.items() if packaged.get(name, {}).get(k) != v})}
    report.update(settings=settings, oof_signatures=oof.get("signatures"))
    report["tuned_file"] = _write_tuned(work, out, content if tuned else None, base, log)
    report["tuned_sha1"] = _text_sha1(Path(report["tuned_file"])) if report["tuned_file"] else None
    atomic_write_text(out / "report.md", format_tuning_markdown(report))
    atomic_write_text(out / "report.json", json.dumps(_plain(report), indent=1))
    return report


def _text_sha1(path: Path) -> str | None:
    import hashlib

    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _kept_report(out: Path, settings: dict, oof: Mapping[str, Any], tuned_path: Path) -> dict | None:
    """The last tuning's report when a new search would be the same one (the same out-of-fold maps,
    settings and start file) and its tuned file is there as it wrote it (or absent as it left it)."""
    try:
        prev = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(prev, dict) or "tuned_sha1" not in prev:  # a report of before this record: search again
        return None
    if prev.get("settings") != _plain(settings) or prev.get("oof_signatures") != oof.get("signatures"):
        return None
    now = _text_sha1(tuned_path) if tuned_path.is_file() else None
    return prev if prev.get("tuned_sha1") == now and bool(prev.get("tuned_file")) == (now is not None) else None


def _write_tuned(work: Path, out: Path, content: dict | None, base: str | None, log) -> str | None:
    """Write (``content``) or remove (None) ``postprocess_tuned.yaml``; a different earlier one is
    moved to ``tuning/replaced/`` first, and said. Returns the file written, or None."""
    import yaml

    from auto3dseg.postprocess.params import acting_params

    tuned_path = work / TUNED_YAML
    text = None
    if content and all(isinstance(v, dict) for v in content.values()):  # per class (CellMap), not cells' flat keys
        content = acting_params(content)  # semantic classes hold no instance keys (the loader refuses them)
    if content is not None:
        text = ("# written by run_auto3dseg.py --mode tune_postprocess: the values that scored higher on the\n"
                f"# out-of-fold maps than {base or 'the packaged defaults'} (report: {out / 'report.md'}).\n"
                + (f"# It holds the values of {base} too.\n" if base else "")
                + "# --mode submit, predict --postprocess and oof use this file; --postprocess_params overrides it.\n"
                + yaml.safe_dump(_plain(content), sort_keys=False))
    if tuned_path.is_file():
        try:
            same = content is not None and yaml.safe_load(tuned_path.read_text()) == _plain(content)
        except yaml.YAMLError:
            same = False
        if same:
            return str(tuned_path)  # the same values: nothing to keep aside
        kept = out / "replaced" / f"postprocess_tuned-{time.strftime('%Y%m%d-%H%M%S')}.yaml"
        n = 1
        while kept.exists():
            kept = kept.with_name(f"{kept.stem.rsplit('.', 1)[0]}.{n}.yaml")
            n += 1
        kept.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tuned_path, kept)
        log(f"note: the earlier {tuned_path.name} is kept as {kept}"
            + ("" if text is not None else " (this tuning kept the defaults: no tuned file is in force now)"))
    if text is None:
        return None
    atomic_write_text(tuned_path, text)
    return str(tuned_path)


def _plain(value: Any) -> Any:
    """Numpy scalars as Python numbers (YAML and JSON)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def tuning_summary(report: Mapping[str, Any]) -> str:
    """One line: the cross-validated figure before and after, and what changed."""
    if report["kind"] == "cells":
        b, a = report["before"]["mean_f1"], report["after"]["mean_f1"]
        what = "mean F1"
    else:
        b, a = report["before"]["overall"]["score"], report["after"]["overall"]["score"]
        what = "score"
    changed = [r for r in report["classes"] if not r["kept"]]
    if b is None:
        return "Tuning: nothing to tune on"
    return (f"Tuned post-processing: cross-validated {what} {b:.4f} -> {a:.4f} ({a - b:+.4f}); "
            + (", ".join(f"{r['label']} ({', '.join(f'{k}={v}' for k, v in r['changed'].items())})" for r in changed)
               if changed else "the defaults kept for every class") + " (on the maps it was tuned on: optimistic)")


def format_tuning_markdown(report: Mapping[str, Any]) -> str:
    lines = ["# Post-processing tuned on the out-of-fold maps", "", tuning_summary(report), "",
             f"Settings: {report.get('settings')}. Written: {report.get('tuned_file') or 'nothing (defaults kept)'}.",
             "", "| class | kind | crops (searched) | evidence | score default | score tuned | evaluations | changed | "
             "kept because |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["classes"]:
        ev = r.get("objects", r.get("voxels", ""))
        fmt = (lambda v: "" if v is None else f"{v:.4f}")
        change = ", ".join(f"{k}={v}" for k, v in (r.get("changed") or {}).items())
        searched = f" ({r['crops_searched']})" if r.get("crops_searched", r["crops"]) != r["crops"] else ""
        lines.append(f"| {r['label']} | {r['kind']} | {r['crops']}{searched} | {ev} | {fmt(r.get('score_before'))} | "
                     f"{fmt(r.get('score_after'))} | {r.get('evaluations', 0)} | {change} | {r.get('reason', '')} |")
    lines += ["", "The tuned figures are measured on the maps the values were chosen on: expect the test set to "
              "gain less. A class's threshold is chosen for the mean score of the class and the groups made of it."]
    return "\n".join(lines) + "\n"
