"""``--mode generate``: one MONAI bundle per (network, fold) with MONAI's BundleGen.

BundleGen's own ``generate`` deletes an existing ``<algo>_<fold>`` folder before writing
it, trained model and hand edits included. We drive the same pieces (its algos,
``export_to_disk``, ``algo_to_json``) but keep every existing bundle; ``force`` moves the
old one to ``<work_dir>/replaced/`` instead of deleting it.

Other templates (``--templates``, e.g. MONAI's official ones) get what they read:
``input.yaml`` says ``modality: mri`` (they take ct/mri only), ``class_names`` from the
datalist's class table (a group as the list of label values of its members, a leaf as
``[its value]``) and ``sigmoid``; ``--num_epochs``/``--patch_size`` go to each official
template under its own keys (:data:`OFFICIAL_KEYS`), and are refused for a template whose
keys are unknown. What a template needs that this machine lacks (a GPU, ``mlflow``) stops
generation with the template's name and the fix (:func:`template_problems`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auto3dseg.bundles.bundle_algo import TEMPLATES_DIR
from auto3dseg.bundles.template_checks import check_templates, template_import_error, template_problems
from auto3dseg.orchestration.workdir import (
    DATASTATS,
    in_directory,
    move_aside,
    prefer_templates,
    recorded_folds,
    write_input,
)

__all__ = ["DEFAULT_ALGOS", "OFFICIAL_KEYS", "GenerateResult", "check_templates", "generate", "is_own_templates",
           "official_class_config", "official_settings", "template_problems"]

DEFAULT_ALGOS = ("segresnet", "dints", "swinunetr")

#: MONAI's official templates (research-contributions, MONAI 1.6.1): where ``--num_epochs``,
#: ``--patch_size`` and a softmax class count go in their configs, the multiple their patch
#: sides must be, and what to switch off so that their train-time auto-scaling keeps them
#: (segresnet re-derives ``roi_size``, dints and swinunetr ``num_epochs``, from GPU memory).
#: segresnet's depth follows its patch (``blocks_down`` per number of levels, as its
#: ``scripts/algo.py`` picks them: the deepest level keeps at least 2 voxels a side).
#: segresnet2d's ``roi_size`` is ``[x, y, slices]``: no ``--patch_size`` for it.
OFFICIAL_KEYS: dict[str, dict[str, Any]] = {
    "segresnet": {"num_epochs": ["num_epochs"], "patch_size": ["roi_size"], "output_classes": ["output_classes"],
                  "patch_multiple": 16, "keep_patch_size": {"auto_scale_batch": False}, "keep_num_epochs": {},
                  "blocks_down": {"network#blocks_down": {1: [2], 2: [1, 3], 3: [1, 2, 4], 4: [1, 2, 2, 4],
                                                          5: [1, 2, 2, 4, 4]}}},
    "segresnet2d": {"num_epochs": ["num_epochs"], "output_classes": ["output_classes"], "keep_num_epochs": {}},
    "dints": {"num_epochs": ["training#num_epochs"], "patch_size": ["training#roi_size", "training#roi_size_valid"],
              "output_classes": ["training#output_classes"], "patch_multiple": 32, "keep_patch_size": {},
              "keep_num_epochs": {"training#auto_scale_allowed": False}},
    "swinunetr": {"num_epochs": ["num_epochs"], "patch_size": ["roi_size", "roi_size_valid"],
                  "output_classes": ["output_classes"], "patch_multiple": 32, "keep_patch_size": {},
                  "keep_num_epochs": {"auto_scale_allowed": False}},
}


@dataclass
class GenerateResult:
    generated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    replaced: dict[str, str] = field(default_factory=dict)  # name -> where the old bundle went
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why the template skipped it
    notes: list[str] = field(default_factory=list)  # settings passed to other templates, rounding

    def lines(self) -> list[str]:
        out = [f"note: {n}" for n in self.notes]
        out += [f"generated {n}" for n in self.generated]
        out += [f"kept {n} (exists; --force moves it to replaced/ and generates anew)" for n in self.kept]
        out += [f"replaced {n} (old bundle moved to {p})" for n, p in self.replaced.items()]
        out += [f"skipped {n}: {why}" for n, why in self.skipped.items()]
        return out


def is_own_templates(templates: str | os.PathLike | None) -> bool:
    return templates is None or Path(str(templates)).resolve() == TEMPLATES_DIR


def official_class_config(datalist: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """What MONAI's official templates read from ``input.yaml`` about the classes, and the
    number of outputs a softmax bundle needs (None for sigmoid).

    Sigmoid (one channel per class of the class table, a group as the list of label values
    of its members, a leaf as ``[its value]``) whenever the engine would use it
    (:func:`auto3dseg.bundles.config.output_activation`: groups, partial annotation) or the
    ids are not ``1..K``; otherwise softmax over ``background`` and the classes by value.

    Examples
    --------
    >>> table = [{"id": 1, "name": "mem", "parts": []}, {"id": 2, "name": "lum", "parts": []},
    ...          {"id": 3, "name": "mito", "parts": [1, 2]}]
    >>> cfg, n = official_class_config({"class_table": table, "training": []})
    >>> cfg["class_names"][2], cfg["sigmoid"], n
    ({'name': 'mito', 'index': [1, 2, 3]}, True, None)
    >>> official_class_config({"class_table": table[:2], "training": [{"annotated_mask": 3}]})
    ({'class_names': ['mem', 'lum'], 'sigmoid': False}, 3)
    """
    from auto3dseg.bundles.config import output_activation
    from auto3dseg.engine.transforms import channel_members

    table = list(datalist["class_table"])
    ids = [int(r["id"]) for r in table]
    if output_activation(datalist) == "softmax" and sorted(ids) == list(range(1, len(ids) + 1)):
        return {"class_names": [r["name"] for r in sorted(table, key=lambda r: int(r["id"]))], "sigmoid": False}, \
            len(ids) + 1
    names = [{"name": r["name"], "index": m} for r, m in zip(table, channel_members(table))]
    return {"class_names": names, "sigmoid": True}, None


def _template_config(template: Path) -> Any:
    """MONAI ConfigParser over the template's ``configs/*.yaml`` (``key in parser``, ``a#b`` nested)."""
    from monai.bundle import ConfigParser

    files = sorted(str(f) for f in (template / "configs").glob("*.yaml"))
    parser = ConfigParser(globals=False)
    if files:
        parser.read_config(files)
    return parser


def _official_patch(name: str, spec: Mapping[str, Any], parser: Any, asked: int) -> tuple[dict[str, Any], list[str]]:
    """The patch keys of an official template for side ``asked`` (rounded up to the multiple
    its network takes) and, for segresnet, a depth that fits that patch."""
    mult = int(spec.get("patch_multiple", 16))
    side = int(math.ceil(int(asked) / mult) * mult)
    notes = [] if side == int(asked) else [
        f"{name}: --patch_size {asked} rounded up to {side} (its patch sides are multiples of {mult})"]
    out: dict[str, Any] = {k: [side] * 3 for k in spec["patch_size"]}
    for key, by_levels in spec.get("blocks_down", {}).items():
        if key in parser:  # as many levels as the patch allows, at most 5
            out[key] = by_levels[max(1, min(5, int(math.log2(side))))]
    return out, notes


def official_settings(name: str, template: str | os.PathLike, *, num_epochs: int | None = None,
                      patch_size: int | None = None, output_classes: int | None = None
                      ) -> tuple[dict[str, Any], list[str]]:
    """``fill_template_config`` keyword arguments that give a foreign template the epochs,
    the patch side and a softmax class count under its own keys, and notes saying so.

    Raises
    ------
    ValueError
        For ``num_epochs``/``patch_size`` when the template's keys are not known (not one of
        :data:`OFFICIAL_KEYS`, or its configs lack them): never silently ignored.

    Examples
    --------
    >>> kwargs, notes = official_settings("swinunetr", "/work/shared/monai_official_templates/swinunetr",
    ...                                   num_epochs=3, patch_size=40)  # doctest: +SKIP
    >>> kwargs  # doctest: +SKIP
    {'num_epochs': 3, 'auto_scale_allowed': False, 'roi_size': [64, 64, 64], 'roi_size_valid': [64, 64, 64]}
    """
    template = Path(template)
    spec = OFFICIAL_KEYS.get(name, {})
    parser = _template_config(template)
    kwargs: dict[str, Any] = {}
    notes: list[str] = []
    for what, value in (("num_epochs", num_epochs), ("patch_size", patch_size)):
        if not value:
            continue
        keys = spec.get(what, [])
        if not keys or not all(k in parser for k in keys):
            known = ", ".join(sorted(k for k, v in OFFICIAL_KEYS.items() if what in v))
            raise ValueError(f"--{what} {value}: template {name} ({template}) has no setting known here for it "
                             f"(known: MONAI's official {known}); leave --{what} out and pass the template's own "
                             f"key when training (--override {name}:KEY=VALUE), or use the project's templates "
                             "(no --templates)")
        if what == "patch_size":
            given, more = _official_patch(name, spec, parser, int(value))
            notes += more
        else:
            given = {k: int(value) for k in keys}
        keep = {k: v for k, v in spec.get(f"keep_{what}", {}).items() if k in parser}
        kwargs.update({**given, **keep})
        notes.append(f"{name}: --{what} {value} written as " + ", ".join(f"{k}={v}" for k, v in given.items())
                     + "".join(f", {k}={v} (its train-time auto-scaling would replace it)" for k, v in keep.items()))
    if output_classes:
        kwargs.update({k: int(output_classes) for k in spec.get("output_classes", []) if k in parser})
    return kwargs, notes


# --------------------------------------------------------------------------- generate
def generate(work_dir: str | os.PathLike, datalist: str | os.PathLike, dataroot: str | os.PathLike, *,
             algos: Sequence[str] = DEFAULT_ALGOS, num_fold: int | None = None, templates: str | None = None,
             num_epochs: int | None = None, patch_size: int | None = None, budget: str | None = None,
             force: bool = False) -> GenerateResult:
    """Generate missing bundles in ``work_dir`` (needs ``datastats.yaml`` from analyze).

    Parameters
    ----------
    algos : sequence of str
        Template names to use.
    num_fold : int, optional
        Folds to generate (default: the datalist's ``num_folds``).
    templates : str, optional
        Folder of templates, or a URL MONAI can download (MONAI's official release);
        default: the project's own (:data:`auto3dseg.bundles.bundle_algo.TEMPLATES_DIR`).
    num_epochs, patch_size : int, optional
        Our templates read them from ``input.yaml``; MONAI's official ones get them under their
        own keys (:func:`official_settings`); other templates refuse them (ValueError).
    budget : str, optional
        Iterations or a time per bundle (:mod:`auto3dseg.engine.budget`); our templates only (MONAI's
        official ones take ``num_epochs``).
    force : bool
        Regenerate existing bundles, moving the old ones to ``<work_dir>/replaced/``.

    Examples
    --------
    >>> generate("work", "nifti/datalist.json", "nifti", algos=["segresnet"], num_epochs=2)  # doctest: +SKIP
    GenerateResult(generated=['segresnet_0', 'segresnet_1'], ...)
    """
    from auto3dseg.orchestration.locks import step_lock

    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    with step_lock(work, "generate"):
        return _generate(work, datalist, dataroot, algos=algos, num_fold=num_fold, templates=templates,
                         num_epochs=num_epochs, patch_size=patch_size, budget=budget, force=force)


def _set_aside(out: Path, work: Path, force: bool) -> str | None:
    """Make room for generating bundle ``out``: a folder without ``algo_object.json`` (written
    last: a generation that was killed) is moved aside; with ``force`` a complete one too, once
    no run trains it. Returns where it went, or None to keep the bundle."""
    from auto3dseg.orchestration.locks import bundle_lock

    if not (out / "algo_object.json").is_file():
        where = move_aside(out, work)
        print(f"note: {out.name} was generated only in part (an interrupted run); moved to {where}")
        return None if not force else where
    if not force:
        return None
    import contextlib

    from auto3dseg.ensembling.ensemble import ENSEMBLE_DIR
    from auto3dseg.ensembling.oof import OOF_DIR
    from auto3dseg.orchestration.locks import step_lock

    with contextlib.ExitStack() as held:  # never move a bundle away from under its training, or a run using it
        held.enter_context(bundle_lock(out))
        for folder, step in ((work / OOF_DIR, "oof"), (work / ENSEMBLE_DIR, "ensemble")):
            if folder.is_dir():
                held.enter_context(step_lock(folder, step))
        return str(move_aside(out, work))


def _generate(work: Path, datalist: str | os.PathLike, dataroot: str | os.PathLike, *, algos: Sequence[str],
              num_fold: int | None, templates: str | None, num_epochs: int | None, patch_size: int | None,
              budget: str | None, force: bool) -> GenerateResult:
    from monai.apps.auto3dseg import BundleGen
    from monai.auto3dseg.utils import algo_to_json

    from auto3dseg.bundles.bundle_algo import CellmapBundleAlgo

    stats = work / DATASTATS
    if not stats.is_file():
        raise FileNotFoundError(f"{stats} not found: run --mode analyze first (or --mode full)")
    from auto3dseg.analysis.source_record import stale_datastats

    if changed := stale_datastats(work, datalist, dataroot):
        raise ValueError(f"{changed}: run --mode analyze (it analyses them again), then --mode generate")
    datalist = Path(datalist).resolve()
    with open(datalist) as fh:
        dl = json.load(fh)
    folds_in_data = sorted({int(it["fold"]) for it in dl.get("training", []) if "fold" in it})
    num_fold = int(num_fold or dl.get("num_folds") or len(folds_in_data))
    missing = [f for f in range(num_fold) if f not in folds_in_data]
    if missing:
        raise ValueError(f"{datalist} has no training items in fold(s) {missing}; it has folds {folds_in_data}. "
                         f"Use --num_fold {len(folds_in_data)} or re-convert with more folds.")
    modality = str(dl.get("modality", "em"))
    src: dict[str, Any] = {"name": dl.get("name", "cellmap"), "modality": modality, "datalist": str(datalist),
                           "dataroot": str(Path(dataroot).resolve())}
    src_cfg = work / "input.yaml"

    template_src = str(TEMPLATES_DIR if templates is None else templates)
    check_templates(template_src, algos)
    prefer_templates(work / "algorithm_templates", algos)  # not a same-named template imported from elsewhere
    try:
        with in_directory(work):  # official segresnet writes runner.log into the current directory
            gen = BundleGen(algo_path=str(work), algos=list(algos), templates_path_or_url=template_src,
                            data_stats_filename=str(stats), data_src_cfg_name=str(src_cfg))
    except ValueError as exc:
        if "://" in template_src:
            raise ValueError(f"templates {template_src}: {str(exc).rstrip('. ')}: no templates could be fetched (is this "
                             "machine offline?); download and unpack them elsewhere, then give their folder as "
                             "--templates (or leave --templates out for the project's own)") from exc
        raise ValueError(f"templates {template_src}: {exc}. Available algorithms are the folders with "
                         "scripts/algo.py; check --algos") from exc
    except Exception as exc:  # noqa: BLE001 - a template's algo.py that does not import or build
        raise ValueError(template_import_error(exc, template_src)) from None
    foreign = [a for a in gen.algos if not isinstance(a, CellmapBundleAlgo)]
    result = GenerateResult()
    if budget and foreign:
        raise ValueError(f"--budget applies to the project's own templates; {', '.join(a.name for a in foreign)} from "
                         f"{template_src} take --num_epochs instead")
    if len(foreign) < len(gen.algos):  # our templates read these from input.yaml
        src.update({k: int(v) for k, v in (("num_epochs", num_epochs), ("patch_size", patch_size)) if v})
        if budget:
            from auto3dseg.engine.budget import parse_budget

            parse_budget(budget)
            src["budget"] = str(budget)
    settings: dict[str, dict[str, Any]] = {}
    if foreign:
        if int(dl.get("spatial_dims") or 3) == 2:
            print(f"note: {datalist} holds 2-D images (x, y, 1, channel); MONAI's official templates train 3-D "
                  "volumes and have not been tried on them here. The project's own templates (no --templates) "
                  "build 2-D networks.", file=sys.stderr)
        if modality.lower() not in ("ct", "mri"):
            # MONAI's official templates accept only ct or mri; mri means per-image z-score
            print(f"note: templates {templates} accept modality ct/mri only; writing modality 'mri' (z-score "
                  f"normalisation) to input.yaml for this {modality} data", file=sys.stderr)
            src["modality"] = "mri"
        classes, output_classes = official_class_config(dl)
        src.update(classes)
        problems: list[str] = []
        for algo in foreign:
            if not force and all((work / f"{algo.name}_{f}").exists() for f in range(num_fold)):
                continue  # nothing to generate for it
            folder = Path(algo.template_path) / algo.name
            errors, notes = template_problems(algo.name, folder)
            problems += errors
            result.notes += notes
            settings[algo.name], notes = official_settings(algo.name, folder, num_epochs=num_epochs,
                                                           patch_size=patch_size, output_classes=output_classes)
            result.notes += notes
        if problems:
            raise RuntimeError("cannot generate with these templates on this machine:\n  " + "\n  ".join(problems))
    # the folds generated, so that a fold's bundle deleted later is noticed (ensemble says so)
    src["num_fold"] = max(int(num_fold), recorded_folds(work, src))
    write_input(work, src)

    for algo in gen.algos:
        for fold in range(num_fold):
            name = f"{algo.name}_{fold}"
            out = work / name
            if out.exists():
                where = _set_aside(out, work, force)
                if out.exists():
                    result.kept.append(name)
                    continue
                if where:
                    result.replaced[name] = str(where)
            one = deepcopy(algo)
            one.set_data_stats(str(stats))
            one.set_data_source(str(src_cfg))
            skip, why = one.pre_check_skip_algo()
            if skip:
                result.skipped[name] = why or "the template skipped itself"
                continue
            try:
                with in_directory(work):
                    one.export_to_disk(str(work), name, fold=fold, **deepcopy(settings.get(algo.name, {})))
                algo_to_json(one, template_path=algo.template_path)
            except BaseException as exc:
                shutil.rmtree(out, ignore_errors=True)  # never leave a half-written bundle behind
                if isinstance(exc, Exception) and algo in foreign and not _cuda():
                    raise RuntimeError(f"{algo.name}'s generation failed ({type(exc).__name__}: {exc}) on this "
                                       "machine, which has no GPU: if the template needs one (MONAI's official "
                                       "swinunetr does), run on a GPU machine, or leave it out (e.g. --algos "
                                       "segresnet)") from exc
                raise
            if name not in result.replaced:
                result.generated.append(name)
    if result.kept and (num_epochs or patch_size or budget):  # given, but not applied to those: say so
        from auto3dseg.bundles.config import kept_bundle_notes
        from auto3dseg.orchestration.workdir import list_bundles

        kept = [b for b in list_bundles(work) if b.name in result.kept]
        result.notes += kept_bundle_notes(kept, work, num_epochs=num_epochs, patch_size=patch_size, budget=budget)
    return result


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())
