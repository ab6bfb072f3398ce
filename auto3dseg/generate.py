"""``--mode generate``: one MONAI bundle per (network, fold) with MONAI's BundleGen.

BundleGen's own ``generate`` deletes an existing ``<algo>_<fold>`` folder before writing
it, trained model and hand edits included. We drive the same pieces (its algos,
``export_to_disk``, ``algo_to_json``) but keep every existing bundle; ``force`` moves the
old one to ``<work_dir>/replaced/`` instead of deleting it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

from auto3dseg.bundle_algo import TEMPLATES_DIR
from auto3dseg.workdir import DATASTATS, move_aside, write_input

__all__ = ["DEFAULT_ALGOS", "GenerateResult", "generate", "is_own_templates"]

DEFAULT_ALGOS = ("segresnet", "dints", "swinunetr")


@dataclass
class GenerateResult:
    generated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    replaced: dict[str, str] = field(default_factory=dict)  # name -> where the old bundle went
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why the template skipped it

    def lines(self) -> list[str]:
        out = [f"generated {n}" for n in self.generated]
        out += [f"kept {n} (exists; --force moves it to replaced/ and generates anew)" for n in self.kept]
        out += [f"replaced {n} (old bundle moved to {p})" for n, p in self.replaced.items()]
        out += [f"skipped {n}: {why}" for n, why in self.skipped.items()]
        return out


def is_own_templates(templates: str | os.PathLike | None) -> bool:
    return templates is None or Path(str(templates)).resolve() == TEMPLATES_DIR


def generate(work_dir: str | os.PathLike, datalist: str | os.PathLike, dataroot: str | os.PathLike, *,
             algos: Sequence[str] = DEFAULT_ALGOS, num_fold: int | None = None, templates: str | None = None,
             num_epochs: int | None = None, patch_size: int | None = None, force: bool = False) -> GenerateResult:
    """Generate missing bundles in ``work_dir`` (needs ``datastats.yaml`` from analyze).

    Parameters
    ----------
    algos : sequence of str
        Template names to use.
    num_fold : int, optional
        Folds to generate (default: the datalist's ``num_folds``).
    templates : str, optional
        Folder of templates, or a URL MONAI can download (MONAI's official release);
        default: the project's own (:data:`auto3dseg.bundle_algo.TEMPLATES_DIR`).
    num_epochs, patch_size : int, optional
        Written to ``input.yaml``; our templates use them instead of the derived values.
    force : bool
        Regenerate existing bundles, moving the old ones to ``<work_dir>/replaced/``.
    """
    from monai.apps.auto3dseg import BundleGen
    from monai.auto3dseg.utils import algo_to_json

    work = Path(work_dir).resolve()
    stats = work / DATASTATS
    if not stats.is_file():
        raise FileNotFoundError(f"{stats} not found: run --mode analyze first (or --mode full)")
    datalist = Path(datalist).resolve()
    with open(datalist) as fh:
        dl = json.load(fh)
    folds_in_data = sorted({int(it["fold"]) for it in dl.get("training", []) if "fold" in it})
    num_fold = int(num_fold or dl.get("num_folds") or len(folds_in_data))
    missing = [f for f in range(num_fold) if f not in folds_in_data]
    if missing:
        raise ValueError(f"{datalist} has no training items in fold(s) {missing}; it has folds {folds_in_data}. "
                         f"Use --num_fold {len(folds_in_data)} or re-convert with more folds.")
    own = is_own_templates(templates)
    modality = str(dl.get("modality", "em"))
    src = {"name": dl.get("name", "cellmap"), "modality": modality, "datalist": str(datalist),
           "dataroot": str(Path(dataroot).resolve())}
    if not own and int(dl.get("spatial_dims") or 3) == 2:
        print(f"note: {datalist} holds 2-D images (x, y, 1, channel); MONAI's official templates train 3-D "
              "volumes and have not been tried on them here. The project's own templates (no --templates) build "
              "2-D networks.", file=sys.stderr)
    if not own and modality.lower() not in ("ct", "mri"):
        # MONAI's official templates accept only ct or mri; mri means per-image z-score
        print(f"note: templates {templates} accept modality ct/mri only; writing modality 'mri' (z-score "
              f"normalisation) to input.yaml for this {modality} data", file=sys.stderr)
        src["modality"] = "mri"
    if num_epochs:
        src["num_epochs"] = int(num_epochs)
    if patch_size:
        src["patch_size"] = int(patch_size)
    src_cfg = write_input(work, src)

    template_src = str(TEMPLATES_DIR if templates is None else templates)
    try:
        gen = BundleGen(algo_path=str(work), algos=list(algos), templates_path_or_url=template_src,
                        data_stats_filename=str(stats), data_src_cfg_name=str(src_cfg))
    except ValueError as exc:
        raise ValueError(f"templates {template_src}: {exc}. Available algorithms are the folders with "
                         "scripts/algo.py; check --algos") from exc

    result = GenerateResult()
    for algo in gen.algos:
        for fold in range(num_fold):
            name = f"{algo.name}_{fold}"
            out = work / name
            if out.exists():
                if not force:
                    result.kept.append(name)
                    continue
                result.replaced[name] = str(move_aside(out, work))
            one = deepcopy(algo)
            one.set_data_stats(str(stats))
            one.set_data_source(str(src_cfg))
            skip, why = one.pre_check_skip_algo()
            if skip:
                result.skipped[name] = why or "the template skipped itself"
                continue
            try:
                one.export_to_disk(str(work), name, fold=fold)
                algo_to_json(one, template_path=algo.template_path)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)  # never leave a half-written bundle behind
                raise
            if name not in result.replaced:
                result.generated.append(name)
    return result
