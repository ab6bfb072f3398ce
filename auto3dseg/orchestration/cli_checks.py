"""Checks the CLI makes before a step runs: the bundles to train or ensemble, and predict's inputs.

Each raises ``ValueError`` or ``RuntimeError`` with one line naming what is wrong and the fix;
:mod:`run_auto3dseg` prints it.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["check_output_dir", "check_postprocess_params", "check_predict_images", "check_trained", "datalist_and_root",
           "expand_predict_images", "label_like_images", "task_bundle", "validate_datalist_file"]


def expand_predict_images(images: Sequence[str]) -> list[str]:
    """``--images`` with each folder replaced by the NIfTI images in it (sorted; as nnU-Net's
    predict takes a folder). A folder without NIfTI gives its other files, so that the raw-image
    check says how to convert them; an empty one is an error.

    A pattern the shell did not expand (quoted) is expanded here, as the shell would.

    >>> expand_predict_images(["a.nii.gz"])
    ['a.nii.gz']
    """
    out: list[str] = []
    for entry in images:
        folder = Path(entry)
        if not folder.exists() and glob.has_magic(entry):  # quoted, so the shell left it (a SLURM script, a Makefile)
            matches = sorted(glob.glob(entry))
            if not matches:
                raise ValueError(f"--images {entry}: no file matches this pattern; check the folder and the "
                                 "file names (or give the folder: its NIfTI images are read)")
            out += expand_predict_images(matches)
            continue
        in_store = any(f.suffix == ".zarr" or (f / ".zgroup").is_file() or (f / ".zattrs").is_file()
                       for f in (folder, *folder.parents))
        if not folder.is_dir() or in_store:  # a Zarr store (or a group in one) is named by the raw-image check
            out.append(entry)
            continue
        entries = [f for f in folder.iterdir() if not f.name.startswith(".")]
        files = sorted(f for f in entries if f.is_file())
        nifti = [str(f) for f in files if f.name.endswith((".nii.gz", ".nii"))]
        if not entries:
            raise ValueError(f"--images {entry}: the folder is empty; give NIfTI images or a folder of them")
        if not nifti and (folder / "datalist.json").is_file() and (folder / "images").is_dir():
            raise ValueError(f"--images {entry}: a converted dataset (its datalist.json, images/, labels/), not a "
                             f"folder of images: give --images {folder / 'images'} (or some of the files there)")
        out += nifti or [str(f) for f in files] or [entry]
        others = [f.name for f in files if nifti and str(f) not in nifti]
        if others:
            print(f"note: --images {entry}: {len(others)} file(s) that are not NIfTI left out ("
                  f"{', '.join(others[:3])}{', ...' if len(others) > 3 else ''}): predict reads converted images; "
                  "convert the others first (python -m converters.cells.convert or converters.cellmap.convert)",
                  file=sys.stderr)
    return out


def check_predict_images(images: Sequence[str], datalist: str) -> None:
    """Refuse raw images (TIFF, PNG, a Zarr store...) with how to convert them: predict reads NIfTI."""
    from auto3dseg.bundles.checks import raw_image_problem
    from auto3dseg.orchestration.workdir import data_kind

    problem = raw_image_problem(images, data_kind(datalist)) or same_name_problem(images) or label_input_problem(images)
    if problem:
        raise ValueError(problem)


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def same_name_problem(images: Sequence[str]) -> str | None:
    """Images whose outputs would share a name (``<stem>_prob.zarr``, ``<stem>_label.tiff``): one
    would overwrite the other's.

    >>> same_name_problem(["a/x.nii.gz", "b/x.nii.gz"])
    '--images: a/x.nii.gz and b/x.nii.gz would both write x_prob.zarr (one overwriting the other); predict them with separate --output_dir, or rename one'
    >>> same_name_problem(["a/x.nii.gz", "a/y.nii.gz"]) is None
    True
    """
    files: dict[Path, str] = {}
    for image in images:  # one file under two names (a link): one map, the other name silently dropped
        real = Path(image).resolve()
        if real in files and _stem(files[real]) != _stem(image):
            return (f"--images: {files[real]} and {image} are the same file (one links to the other); give it once, "
                    "under the name its outputs should have")
        files.setdefault(real, image)
    seen: dict[str, str] = {}
    for image in images:
        stem = _stem(image)
        if stem in seen:
            if Path(seen[stem]).resolve() == Path(image).resolve():
                return f"--images: {image} is listed twice; give it once"
            return (f"--images: {seen[stem]} and {image} would both write {stem}_prob.zarr (one overwriting the "
                    "other); predict them with separate --output_dir, or rename one")
        seen[stem] = image
    return None


def label_input_problem(images: Sequence[str]) -> str | None:
    """A file of a converted dataset's ``labels/`` (or ``instances/``) folder given as an image."""
    for image in images:
        path = Path(image)
        twin = path.parent.parent / "images" / path.name
        if (path.parent.name in ("labels", "instances") and (path.parent.parent / "datalist.json").is_file()
                and twin.is_file()):
            return (f"--images {image}: a label of the converted dataset {path.parent.parent}, not an image; "
                    f"predict its image {twin}")
    return None


def label_like_images(images: Sequence[str], datalist: str, step: int = 4) -> list[str]:
    """Warnings for CellMap images that look like label volumes: every ``step``-th voxel of the middle
    z plane an integer among the class table's ids (and 255), with 2 to ``len(class_table) + 2``
    distinct values. A label copied out of its dataset and given as an image is otherwise predicted
    without a word. One plane: a gzipped image is decompressed only up to it, not read twice."""
    import json

    import nibabel as nib
    import numpy as np

    from auto3dseg.orchestration.workdir import data_kind

    if data_kind(datalist) != "cellmap":
        return []  # cell masks hold instance ids, as many as there are cells
    try:
        table = json.loads(Path(datalist).read_text()).get("class_table") or []
        ids = {0, 255} | {int(c["id"]) for c in table}
    except (OSError, ValueError, KeyError, TypeError):
        return []
    out = []
    for image in images:
        try:
            proxy = nib.load(str(image)).dataobj
            middle = [proxy.shape[2] // 2] if len(proxy.shape) > 2 else []
            sample = np.asarray(proxy[(slice(None, None, step), slice(None, None, step), *middle)])
        except Exception:  # noqa: BLE001 - an unreadable image is named when it is predicted
            continue
        values = np.unique(sample)
        if 2 <= len(values) <= len(table) + 2 and np.all(np.mod(values, 1) == 0) and set(values.astype(int)) <= ids:
            shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
            out.append(f"warning: --images {image}: its middle plane holds only {len(values)} values ({shown}), all "
                       "class ids of the class table: it looks like a label volume, not an image; give the EM image "
                       "converted like the training data's (the converter's images/<crop>.nii.gz)")
    return out


def check_output_dir(work: Path, out: Path, images: Sequence[str] = ()) -> None:
    """Refuse a ``--output_dir`` that is a folder of the work_dir's own steps: predict would replace
    the test ensemble's ensemble.json (a later submit then writes empty labels), a bundle's files or
    the submission; or the folder of the ``images`` themselves (an input folder)."""
    from auto3dseg.orchestration.workdir import list_bundles

    out, work = out.resolve(), work.resolve()
    steps = ("ensemble_output", "oof", "submission", "cv", "tuning", "replaced", "preprocessed", "review",
             "algorithm_templates", "slurm", "logs")
    owned = [work, *(work / n for n in steps),
             *(b.path.resolve() for b in list_bundles(work))]
    hit = next((f for f in owned if out == f or (f != work and f in out.parents)), None)
    own = f"Give a folder of its own (default: {work / 'predictions'})"
    if hit is not None:
        raise ValueError(f"--output_dir {out} is {'the work_dir itself' if hit == work else f'inside {hit}'}, which "
                         f"the pipeline's own steps write: predict there would replace their files. {own}")
    data = next((f for f in (out, out.parent) if (f / "datalist.json").is_file()), None) or next(
        (f.parent for f in out.parents if f.name in ("images", "labels", "instances", "records")
         and (f.parent / "datalist.json").is_file()), None)
    if data is not None:
        raise ValueError(f"--output_dir {out} is {'' if data == out else 'a folder of '}a converted dataset "
                         f"({data / 'datalist.json'}): predict's labels/ and maps there would mix with (or move "
                         f"aside) the training data. {own}")
    store = next((f for f in (out, *out.parents) if f.suffix == ".zarr" or (f / ".zgroup").is_file()
                  or (f / ".zarray").is_file()), None)
    if store is not None:
        raise ValueError(f"--output_dir {out} is inside the Zarr store {store}; predict never writes into a store "
                         f"(it may be your data or truth). {own}")
    inputs = next((Path(i) for i in images if Path(i).resolve().parent == out), None)
    if inputs is not None:
        raise ValueError(f"--output_dir {out} is the folder of the images to predict ({inputs.name}): maps, labels/ "
                         f"and records would be written among your input files. {own}")
    raw = sorted(p.name for p in out.iterdir() if p.is_file() and p.suffix.lower() in
                 (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")) if out.is_dir() else []
    if raw:
        raise ValueError(f"--output_dir {out} holds {len(raw)} image or label file(s) predict did not write (e.g. "
                         f"{raw[0]}): the ground truth or your images? Maps and labels/ would be written among them. "
                         f"{own}")
    from auto3dseg.ensembling.predict_labels import foreign_labels

    foreign = foreign_labels(out)
    if foreign is not None:
        raise ValueError(f"--output_dir {out} holds {foreign}, which --mode predict did not write (it has no "
                         f"{foreign.parent.name}/labels_report.json): predict would move it aside. {own}")


def task_bundle(work: Path, algos: Sequence[str], index: int) -> tuple[list[str], list[int]]:
    """(algos, folds) selecting the ``index``-th bundle of ``work`` among ``algos``."""
    from auto3dseg.orchestration.slurm import bundle_names

    names = bundle_names(work, algos)
    if not 0 <= index < len(names):
        raise ValueError(f"--task_index {index}: {work} has {len(names)} bundle(s) of {', '.join(algos)} "
                         f"({', '.join(names) or 'none: run --mode generate first'}); valid indices are "
                         f"0..{len(names) - 1}")
    algo, _, fold = names[index].rpartition("_")
    print(f"array task {index}: {names[index]}")
    return [algo], [int(fold)]


def check_trained(work: Path, algos: Sequence[str]) -> None:
    """`--require_trained`: refuse, naming them, bundles of ``algos`` that are not trained."""
    from auto3dseg.orchestration.workdir import list_bundles

    bundles = [b for b in list_bundles(work.resolve()) if b.algo in algos]
    missing = [b.name for b in bundles if not b.done]
    again = "(in a --mode slurm chain: run the same --mode slurm command again, it submits only what is unfinished)"
    if not bundles:
        raise RuntimeError(f"{work} has no bundle of {', '.join(algos)}: run --mode generate and train first {again}")
    if absent := [a for a in algos if not any(b.algo == a for b in bundles)]:
        raise RuntimeError(f"--algos {' '.join(absent)}: {work} has no bundle of {'it' if len(absent) == 1 else 'them'} "
                           f"(not generated): run --mode generate --algos {' '.join(algos)}, then --mode train {again}")
    if missing:
        raise RuntimeError(f"not trained: {', '.join(missing)} (of {len(bundles)} bundles in {work}). Train them "
                           "(--mode train, or run the same --mode slurm command again: it submits only what is "
                           "unfinished) before ensembling")


def default_algos(work: Path, mode: str) -> tuple[list[str], str | None]:
    """``--algos`` when it is not given, and a note to print (or None).

    On a work_dir that already holds bundles, the steps that generate (``generate``, ``full``,
    ``slurm``) go on with its networks: re-running the command that made it resumes, and does
    not add networks it was not asked for (hours of training). Elsewhere: the defaults.

    Examples
    --------
    >>> default_algos(Path("/nonexistent"), "full")
    (['segresnet', 'dints', 'swinunetr'], None)
    """
    from auto3dseg.bundles.generate import DEFAULT_ALGOS
    from auto3dseg.orchestration.workdir import list_bundles

    have = sorted({b.algo for b in list_bundles(work)}) if mode in ("generate", "full", "slurm") else []
    if not have or set(have) >= set(DEFAULT_ALGOS):
        return list(DEFAULT_ALGOS), None
    return have, (f"note: --algos not given: going on with the networks of {work} ({' '.join(have)}); name "
                  f"--algos to add others (default: {' '.join(DEFAULT_ALGOS)})")


def validate_datalist_file(datalist: str, dataroot: str, analysis_only: bool = False) -> int:
    """Validate ``datalist`` (folds not needed for ``analysis_only``): print its summary and
    warnings and return 0, or print one ``error:`` line and return 2."""
    from datalists.validate import DatalistError, format_summary, validate_datalist

    try:  # analysis needs no folds; everything that trains does
        summary = validate_datalist(datalist, dataroot, allow_single_fold=analysis_only)
    except DatalistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    for w in summary.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    return 0


def datalist_and_root(args: argparse.Namespace) -> tuple[str, str]:
    """The datalist and data root of a run: the flags, else what the work_dir's input.yaml records."""
    if args.datalist:
        return args.datalist, args.dataroot or str(Path(args.datalist).parent)
    from auto3dseg.orchestration.workdir import read_input

    src = read_input(args.work_dir)
    if not src.get("datalist"):
        raise ValueError(f"{Path(args.work_dir) / 'input.yaml'} records no datalist: pass it with --datalist <path> "
                         "--force_new_datalist")
    if args.mode != "train" and not Path(str(src["datalist"])).is_file():  # training reads its bundles' copy
        raise FileNotFoundError(f"{Path(args.work_dir) / 'input.yaml'} names the datalist {src['datalist']}, which is "
                                "not there (moved or deleted?): pass where it is now with --datalist <path> "
                                "--force_new_datalist")
    return src["datalist"], args.dataroot or src.get("dataroot") or str(Path(src["datalist"]).parent)


def check_postprocess_params(path: str, datalist: str) -> None:
    """Load ``--postprocess_params`` as the datalist's kind of data reads it (raises on a bad file)."""
    from auto3dseg.orchestration.workdir import data_kind

    if what := _other_file_kind(path):
        raise ValueError(f"{path} is {what}, not post-processing parameters: give a YAML of per-class parameters "
                         "(the layout of auto3dseg/resources/postprocess.yaml, or tuning/postprocess_tuned.yaml)")
    from auto3dseg.postprocess.cells import CELL_PARAM_TYPES

    keys = _top_keys(path)
    cells_file = bool(keys) and keys <= set(CELL_PARAM_TYPES)
    if data_kind(datalist) == "cells":
        from auto3dseg.postprocess.cells import load_cell_params

        from datalists.cellmap_classes import CELLMAP_CLASSES

        if keys and all(k == "default" or k in CELLMAP_CLASSES for k in keys):
            raise ValueError(f"{path} holds per-class entries ({', '.join(sorted(map(str, keys))[:4])}): CellMap "
                             "post-processing parameters, while this work_dir holds 2-D cells; give a file of the "
                             "flat keys of auto3dseg/resources/postprocess_cells.yaml (threshold, seed_threshold, ...)")
        load_cell_params(path)
    else:
        from auto3dseg.postprocess import load_postprocess_params

        if cells_file:
            raise ValueError(f"{path} holds the flat keys of a 2-D cells parameter file ({', '.join(sorted(keys))}), "
                             "while this work_dir holds CellMap volumes: give a file of per-class entries, e.g. "
                             "mito: {threshold: 0.5} (the layout of auto3dseg/resources/postprocess.yaml)")

        params = load_postprocess_params(path)
        if _spatial_dims(datalist) == 3:  # 4 and 8 are 2-D connectivities: the labelling library refuses them
            for name, entry in params.items():
                if entry.get("connectivity") in (4, 8):
                    raise ValueError(f"{path}: {name}.connectivity = {entry['connectivity']} is a 2-D connectivity, "
                                     "and these data are 3-D volumes: give 6 (faces), 18 (edges) or 26 (corners)")


def _spatial_dims(datalist: str) -> int:
    """The datalist's ``spatial_dims`` (3 when unset or unreadable: what the CellMap converter writes)."""
    import json

    try:
        return int(json.loads(Path(datalist).read_text()).get("spatial_dims") or 3)
    except (OSError, ValueError, TypeError, AttributeError):
        return 3


def _top_keys(path: str) -> set:
    """The top-level keys of a YAML mapping file; empty when it is unreadable or not a mapping."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return set()
    return set(data) if isinstance(data, dict) else set()


def _other_file_kind(path: str) -> str | None:
    """What a project file given where parameters go is, by its keys (an ensemble manifest, a
    datalist, scores), or None."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None  # the loader names a file it cannot read
    if not isinstance(data, dict):
        return None
    kinds = [("the ensemble's manifest (ensemble.json)", {"signature", "items", "bundles"}),
             ("a datalist", {"training", "class_table"}), ("the out-of-fold manifest", {"signatures", "items"})]
    return next((what for what, keys in kinds if keys <= set(data)), None)
