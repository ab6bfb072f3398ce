#!/usr/bin/env python
"""Auto3DSeg for CellMap EM and 2D cell data: one work folder, one mode at a time.

Modes (each reads and writes --work_dir; every step keeps what an earlier run finished):

* validate  check a datalist (folds, class table, files, shapes) and print a summary;
* analyze   MONAI's DataAnalyzer → datastats.yaml, and datastats_review.md with plots;
* generate  one bundle per network and fold (<work_dir>/<algo>_<fold>); existing bundles
            are kept, --force moves them to <work_dir>/replaced/;
* train     train the bundles (all, or --algo/--fold for one SLURM array task); finished
            ones are skipped, interrupted ones resume from their last epoch;
* ensemble  probability maps of the datalist's testing items from the best bundles;
* predict   the same for --images, written to --output_dir;
* submit    post-process the ensemble's maps into labels and instances: for CellMap the Zarr
            submission (<work_dir>/submission/submission.zarr + .zip), for 2-D cells one
            <stem>_label.tiff per testing image (<work_dir>/submission/labels/); with --truth, score it;
* oof       out-of-fold maps of the training items (each from the bundles of its own fold,
            which never trained on it) and the cross-validated score they give under the
            challenge's rules (<work_dir>/cv/scores.md): the estimate to compare runs with;
* tune_postprocess  choose each class's post-processing parameters on the out-of-fold maps
            for the cross-validated score (<work_dir>/postprocess_tuned.yaml, used by submit
            and oof from then on; report in <work_dir>/tuning/report.md);
* full      analyze → generate → train → ensemble (→ submit when the datalist has test
            crops with labels to predict, or testing cell images; → oof with --oof;
            → tune_postprocess and submit again with --tune), resuming whatever is done;
* slurm     the same as a chain of SLURM jobs (prep, one array task per network and fold,
            final), submitted from one command; run it again to submit only what is unfinished.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from auto3dseg.orchestration.cli_checks import (check_output_dir, check_postprocess_params, check_predict_images,
                                               check_trained, datalist_and_root, expand_predict_images,
                                               label_like_images, task_bundle, validate_datalist_file)
from auto3dseg.orchestration.cli_steps import (
    has_test_labels,
    has_testing,
    oof_step,
    read_json,
    review_flag_lines,
    slurm_step,
    step_banner,
    submit_step,
    tune_step,
)
from auto3dseg.orchestration.flags import (
    device_arg,
    gpus_arg,
    non_negative_float,
    non_negative_int,
    positive_int,
    slurm_mem,
    slurm_name,
    slurm_time,
    wait_seconds,
)

MODES = ("validate", "analyze", "generate", "train", "ensemble", "predict", "submit", "oof", "tune_postprocess", "full",
         "slurm")

_EPILOG = """\
training overrides: --override KEY=VALUE (repeatable) is passed to every bundle's training
as --KEY=VALUE, --override ALGO:KEY=VALUE to that network's bundles only: e.g.
--override num_workers=8 --override swinunetr:network#feature_size=24
--override patch_size=[96,96,96]. Keys are those of <bundle>/configs/hyper_parameters.yaml.
--force applies to the single-step modes only; --mode full never redoes finished work.

examples:
  run_auto3dseg.py --mode full --datalist nifti/datalist.json --work_dir work_dir
  run_auto3dseg.py --mode train --work_dir work_dir --algo segresnet --fold 2 --gpus 0,1
  run_auto3dseg.py --mode predict --work_dir work_dir --images new/*.nii.gz --output_dir preds
  run_auto3dseg.py --mode slurm --datalist nifti/datalist.json --work_dir /scratch/work_dir \
      --slurm_partition gpu --slurm_gpus 1 --slurm_time 2-00:00:00 --test_manifest test_crop_manifest.csv
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_auto3dseg.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG)
    p.add_argument("--mode", choices=MODES, required=True, help="which step to run (see above)")
    p.add_argument("--work_dir", default="work_dir", help="where every mode reads and writes (default: work_dir)")
    p.add_argument("--datalist", help="datalist JSON from the converter; needed by validate/analyze/generate/full, "
                   "later modes read it from <work_dir>/input.yaml")
    p.add_argument("--dataroot", help="folder the datalist's paths are relative to (default: the datalist's folder)")
    g = p.add_argument_group("analysis")
    g.add_argument("--device", type=device_arg, default="cpu", help="device for the data analysis: cpu or cuda (default: cpu)")
    g.add_argument("--workers", type=non_negative_int, default=2,
                   help="processes computing the analysis' per-case statistics (MONAI's DataAnalyzer split between "
                   "them; the same datastats.yaml as one; 0 = in this process; default: 2)")
    g.add_argument("--allow_constant_images", action="store_true",
                   help="train on training images that hold one value everywhere (blank ones) instead of stopping the "
                   "analysis on them; datastats_review.md lists them at the top (also AUTO3DSEG_ALLOW_CONSTANT_IMAGES"
                   "=1, which SLURM jobs inherit)")
    g = p.add_argument_group("bundles")
    g.add_argument("--algos", nargs="+", metavar="ALGO",
                   help="networks to generate/train/ensemble (default: segresnet dints swinunetr; on a work_dir "
                   "that holds bundles, generate/full/slurm go on with its networks, said in a note)")
    g.add_argument("--num_fold", type=positive_int, help="folds to generate (default: the datalist's num_folds)")
    g.add_argument("--num_epochs", type=positive_int,
                   help="epochs per bundle, 250 iterations each (default: 160, i.e. ~40k iterations, a GPU-sized "
                   "budget; MONAI's official templates get it under their own key). Given to --mode train, it goes to "
                   "the generated bundles that hold another value, as an override (each named)")
    g.add_argument("--budget", help="training budget per bundle instead of --num_epochs: iterations (5000) or a time "
                   "(30min, 2h, 1d), the epochs then fitted to it after the first one. A CPU user wants this. Applies "
                   "at generation and, as an override, at training")
    g.add_argument("--patch_size", type=positive_int,
                   help="largest patch side, on every axis (rounded to what each network takes and capped at the "
                   "median image size). Without it: as many voxels as a cube of segresnet 128, dints 96, swinunetr "
                   "96, shaped to the same extent in nm on every axis (anisotropic data get fewer slices and a "
                   "wider plane); 256 for 2-D images. MONAI's "
                   "official templates: their roi_size, rounded up to a multiple of 16 (segresnet) or 32 (dints, "
                   "swinunetr); refused for templates whose key is unknown. Given to --mode train, as --num_epochs")
    g.add_argument("--templates", help="algorithm templates: a folder or a URL (MONAI's official release); "
                   "default: the project's own in auto3dseg/bundles/algorithm_templates (offline)")
    g = p.add_argument_group("training")
    g.add_argument("--algo", help="train only this network (with --fold: one bundle, e.g. for a SLURM array task)")
    g.add_argument("--fold", type=non_negative_int, help="train only this fold")
    g.add_argument("--gpus", type=gpus_arg, help="GPUs for training: a count (4; 0 means none: the CPU), a list (0,1; the first GPU alone "
                   "is 0, with its comma) or cpu; default: "
                   "every visible GPU (torchrun with one process per GPU when more than one)")
    g.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="training override passed to each bundle (repeatable; see below)")
    g.add_argument("--task_index", type=non_negative_int, metavar="I",
                   help="train only the I-th bundle of the work dir among --algos (names sorted), e.g. "
                   "$SLURM_ARRAY_TASK_ID; --mode slurm passes it to its array tasks")
    g.add_argument("--require_trained", action="store_true",
                   help="ensemble/submit: stop with an error naming every bundle of --algos that is not trained "
                   "instead of ensembling the others")
    g = p.add_argument_group("ensemble and prediction")
    g.add_argument("--ensemble_method", choices=["best_by_fold", "best_n"], default="best_by_fold",
                   help="MONAI ensemble: best network of each fold, or the N best bundles (default: best_by_fold)")
    g.add_argument("--n_best", type=positive_int, default=5, help="N of best_n (default: 5)")
    g.add_argument("--images", nargs="+", help="images for --mode predict (NIfTI, converted as the training data "
                   "were), or folders of them")
    g.add_argument("--output_dir", help="where --mode predict writes (default: <work_dir>/predictions)")
    g.add_argument("--tta", action="store_true",
                   help="test-time augmentation for ensemble, predict and oof: each block is also predicted mirrored "
                   "along every combination of its spatial axes (8 passes in 3-D, 4 in 2-D: that many times the "
                   "inference time) and the probabilities averaged; maps of the other setting are recomputed")
    g.add_argument("--tune", action="store_true",
                   help="--mode full and slurm, with --oof: then tune the post-processing on the out-of-fold maps and "
                   "submit again with it (as --mode tune_postprocess, then submit)")
    g.add_argument("--tune_budget", type=positive_int, default=24,
                   help="tune_postprocess: at most this many parameter sets tried per class (default: 24)")
    g.add_argument("--tune_min_crops", type=positive_int, default=2,
                   help="tune_postprocess: a class annotated in fewer crops (cells: untiled images) keeps its defaults "
                   "(default: 2)")
    g.add_argument("--tune_min_objects", type=positive_int, default=5,
                   help="tune_postprocess: an instance class with fewer truth objects keeps its defaults (default: 5)")
    g.add_argument("--tune_max_voxels", type=non_negative_int, default=200_000_000,
                   help="tune_postprocess (CellMap): search each class on a seeded sample of its crops holding at "
                   "most this many voxels (its figures before and after are on all crops); 0 = all crops "
                   "(default: 200000000)")
    g.add_argument("--tune_min_gain", type=non_negative_float, default=0.005,
                   help="tune_postprocess: a class keeps its defaults unless tuning raises its score by this much "
                   "(default: 0.005)")
    g.add_argument("--oof", action="store_true",
                   help="--mode full and slurm: also write the out-of-fold maps and the cross-validated score (as --mode "
                   "oof), last")
    g.add_argument("--allow_unfinished", action="store_true",
                   help="predict/ensemble: also use bundles whose training stopped early, from their best model.pt "
                   "(each is named; the default takes only bundles that finished)")
    g.add_argument("--postprocess", action="store_true",
                   help="predict: also write labels next to the probabilities (<output_dir>/labels/), with the same "
                   "post-processing as --mode submit (--postprocess_params to change it): <stem>_label.tiff for "
                   "cells, <case>/<class>.nii.gz (instance ids or 0/1) for volumes")
    g = p.add_argument_group("submission")
    g.add_argument("--postprocess_params", help="YAML of post-processing parameters: per class for CellMap "
                   "(thresholds, minimum sizes, watershed; default auto3dseg/resources/postprocess.yaml), or for "
                   "cells (auto3dseg/resources/postprocess_cells.yaml)")
    g.add_argument("--test_manifest", help="the challenge's test_crop_manifest.csv: write every (crop, label) it lists "
                   "(default: the test labels the converter recorded for each test image)")
    g.add_argument("--score_rules", choices=["official", "strict"], default="official",
                   help="CellMap scoring rules: the challenge's official scorer's figures (default), or stricter ones "
                   "(per-crop means, too many objects = 0, no guessing of missing attributes); see the README table")
    g.add_argument("--truth", help="ground truth to score the submission against: a CellMap store, or the built-in "
                   "data's test_truth.zarr; for cells a folder of <stem>_label.tiff (official CellSeg F1); writes "
                   "<work_dir>/submission/scores.json and .md")
    g = p.add_argument_group("SLURM (--mode slurm; each also read from AUTO3DSEG_SLURM_<NAME>, e.g. "
                             "AUTO3DSEG_SLURM_PARTITION)")
    g.add_argument("--slurm_partition", type=slurm_name, help="partition (default: the cluster's default)")
    g.add_argument("--slurm_account", type=slurm_name, help="account to charge")
    g.add_argument("--slurm_qos", type=slurm_name, help="quality of service")
    g.add_argument("--slurm_gpus", type=non_negative_int, help="GPUs per training task (default: 1 if the "
                   "partition's nodes have GPUs, else 0 = train on CPUs); more than 1 trains with torchrun, one "
                   "process per GPU")
    g.add_argument("--slurm_cpus", type=positive_int, help="CPUs per task (default: 8, or the largest node's if "
                   "fewer); threads per process = CPUs / GPUs")
    g.add_argument("--slurm_mem", type=slurm_mem, help="memory per job, e.g. 64G (default: the partition's)")
    g.add_argument("--slurm_time", type=slurm_time, help="time limit per job, e.g. 2-00:00:00 (default: the partition's); a task "
                   "that runs out resumes from its last epoch when the command is run again")
    g.add_argument("--slurm_args", help="extra sbatch arguments for every job; give them with =, e.g. "
                   "--slurm_args=\"--constraint=a100 --exclusive\"")
    g.add_argument("--dry_run", action="store_true", help="--mode slurm: print the sbatch commands and job "
                   "scripts, submit nothing")
    p.add_argument("--wait_lock", nargs="?", const="inf", metavar="SECONDS", type=wait_seconds,
                   help="when another run holds this bundle or step (training, analyze, generate, ensemble, submit), "
                   "wait for it (for ever, or SECONDS) instead of stopping with an error naming it")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error instead of the one-line "
                   "message (for reporting a bug)")
    p.add_argument("--force_new_datalist", action="store_true",
                   help="accept a --datalist other than the one <work_dir>/input.yaml names, of the same kind (the "
                   "same data moved or re-converted); without it such a work_dir is refused")
    p.add_argument("--force", action="store_true",
                   help="redo a finished step: analyze again, regenerate bundles (old ones moved to "
                   "<work_dir>/replaced/), retrain (old model/ moved aside), recompute ensemble maps, search the "
                   "post-processing again (tune_postprocess keeps an up-to-date tuning otherwise); with --mode "
                   "slurm it only submits although jobs of an earlier chain are still queued or running (the jobs "
                   "still skip finished work)")
    return p


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["a=1", "b#c=x"]`` → ``{"a": "1", "b#c": "x"}``; values are parsed as YAML by the bundle."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--override {item!r}: expected KEY=VALUE")
        out[key.strip().lstrip("-")] = value.strip()
    return out


#: the modes that validate the datalist before they run
_VALIDATING = ("validate", "analyze", "generate", "full", "slurm")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.wait_lock:  # read by auto3dseg.orchestration.locks here and in the training processes
        os.environ["AUTO3DSEG_LOCK_WAIT"] = args.wait_lock
    if args.debug:
        os.environ["AUTO3DSEG_DEBUG"] = "1"
    from auto3dseg.orchestration.flags import cells_problems, conflicting_flags, ignored_flags

    if conflict := conflicting_flags(args, parser):
        parser.error(conflict)
    ignored = ignored_flags(args, parser)
    if ignored:
        parser.error("\n  ".join(ignored))
    if args.allow_constant_images:  # read by the analysis, here or in a SLURM job (sbatch exports the environment)
        os.environ["AUTO3DSEG_ALLOW_CONSTANT_IMAGES"] = "1"
    try:
        overrides = parse_overrides(args.override)
        if args.budget:
            from auto3dseg.engine.budget import parse_budget

            parse_budget(args.budget)
            overrides.setdefault("budget", args.budget)
    except ValueError as exc:
        parser.error(str(exc))
    if args.mode in ("full", "slurm"):  # counts and rates every template knows: before the analysis, not after
        from auto3dseg.bundles.checks import override_value_problem

        wrong = [w for k, v in overrides.items() if (w := override_value_problem(k, v, None))]
        if wrong:
            print(f"error: {wrong[0]}; nothing was run", file=sys.stderr)
            return 2
    if args.mode in ("validate", "analyze", "full", "slurm") and not args.datalist:
        parser.error(f"--mode {args.mode} needs --datalist")
    if args.mode == "predict" and not args.images:
        parser.error("--mode predict needs --images")
    try:
        datalist, dataroot = datalist_and_root(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.truth and args.mode in ("submit", "full") and not Path(args.truth).exists():  # before the work
        print(f"error: --truth {args.truth}: no such file or folder; give the ground truth (a CellMap store or "
              "test_truth.zarr; for cells a folder of <stem>_label.tiff), or leave it out", file=sys.stderr)
        return 2
    from auto3dseg.orchestration.workdir import data_kind

    ignored = cells_problems(args, parser) if data_kind(datalist) == "cells" else []
    if ignored:
        parser.error("\n  ".join(ignored))
    if args.test_manifest and not Path(args.test_manifest).is_file():
        parser.error(f"--test_manifest {args.test_manifest}: no such file (give the challenge's test_crop_manifest.csv)"
                     if not Path(args.test_manifest).exists() else
                     f"--test_manifest {args.test_manifest} is a folder: give the test_crop_manifest.csv file")
    if args.datalist and args.mode != "validate":
        from auto3dseg.orchestration.workdir import check_input_datalist, repoint_input

        try:
            note = check_input_datalist(args.work_dir, datalist, dataroot, allow_other=args.force_new_datalist)
            if note:  # accepted though its path changed: every step from here on reads the new one
                repoint_input(args.work_dir, datalist, dataroot)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if note:
            print(note, file=sys.stderr)
    changed = None
    if args.mode != "validate" and not args.force_new_datalist:
        from auto3dseg.orchestration.workdir import datalist_changed

        changed = datalist_changed(args.work_dir)
        if changed and args.mode not in _VALIDATING:  # else said once the datalist validates (not beside its error)
            print(changed, file=sys.stderr)
    if args.algos is None:
        from auto3dseg.orchestration.cli_checks import default_algos

        args.algos, args.algos_note = default_algos(Path(args.work_dir), args.mode)  # said when generating
    if args.algos and args.mode in ("train", "ensemble", "predict", "oof"):
        from auto3dseg.orchestration.workdir import list_bundles

        have = list_bundles(args.work_dir)
        if have and not any(b.algo in args.algos for b in have):
            print(f"error: --algos {' '.join(args.algos)} matches no bundle of {args.work_dir}; it has "
                  f"{', '.join(b.name for b in have)} (--algos takes network names: "
                  f"{', '.join(sorted({b.algo for b in have}))})", file=sys.stderr)
            return 2
    if args.postprocess_params:  # before any step: a mistake in it would otherwise surface hours later
        try:
            check_postprocess_params(args.postprocess_params, datalist)
        except (ValueError, OSError) as exc:
            print(f"error: --postprocess_params {exc}", file=sys.stderr)
            return 2
    if args.mode in _VALIDATING:
        rc = validate_datalist_file(datalist, dataroot, analysis_only=args.mode == "analyze")
        if rc or args.mode == "validate":
            return rc
        if changed:
            print(changed, file=sys.stderr)
    try:
        if args.mode == "slurm":
            return slurm_step(args, datalist)
        return _run(args, datalist, dataroot, overrides)
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as exc:
        if args.debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        if isinstance(exc, FileNotFoundError) and exc.errno and exc.filename:  # the system's, not one of ours
            msg = os_error_message(exc)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder, a permission: say where and what to do
        if args.debug:
            raise
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2


def os_error_message(exc: OSError) -> str:
    """An OSError as a user reads it: what failed, on which file, and what to do.

    >>> os_error_message(OSError(28, "No space left on device", "/w/x.nii.gz"))
    '/w/x.nii.gz: No space left on device. Free some space there (or choose another --work_dir / --output_dir) and run the same command again: finished work is kept'
    """
    from converters.outputs import os_error_message as message

    return message(exc, folder_flag="--work_dir / --output_dir")


def _run(args: argparse.Namespace, datalist: str, dataroot: str, overrides: dict) -> int:
    mode, work = args.mode, Path(args.work_dir)
    if mode in ("analyze", "full"):
        from auto3dseg.analysis.analyze import analyze

        step_banner("analyze")
        stats = analyze(datalist, work, dataroot, device=args.device, workers=args.workers,
                        force=args.force and mode == "analyze", validate=False)  # validated in main()
        print(f"Data statistics: {stats}")
        print(f"Review:          {stats.parent / 'datastats_review.md'} (plots in {stats.parent / 'review'})")
        if flagged := review_flag_lines(stats.parent):
            print("\n".join(flagged))
    if mode in ("generate", "full"):
        from auto3dseg.bundles.generate import generate

        step_banner("generate")
        if getattr(args, "algos_note", None):
            print(args.algos_note, file=sys.stderr)
        res = generate(work, datalist, dataroot, algos=args.algos, num_fold=args.num_fold, templates=args.templates,
                       num_epochs=args.num_epochs, patch_size=args.patch_size, budget=args.budget,
                       force=args.force and mode == "generate")
        print("\n".join(res.lines()))
    if mode in ("train", "full"):
        from auto3dseg.orchestration.train_bundles import train_bundles

        step_banner("train")
        algos = [args.algo] if args.algo else args.algos
        folds = None if args.fold is None else [args.fold]
        if args.task_index is not None:
            algos, folds = task_bundle(work, algos, args.task_index)
        if args.num_epochs or args.patch_size:  # generated bundles hold their own: apply these as overrides
            overrides = _settings_overrides(args, work, algos, folds, overrides)
        report = train_bundles(work, algos=algos, folds=folds, overrides=overrides, gpus=args.gpus,
                               force=args.force and mode == "train")
        print("\n".join(report.lines()))
        if not report.ok:
            print(f"error: {len(report.failed)} bundle(s) failed; fix and re-run: finished bundles are kept",
                  file=sys.stderr)
            return 1
    if mode == "full" and not has_testing(datalist):
        print(f"\nnote: {datalist} has no testing items: nothing to ensemble or submit. Predict new images with "
              "--mode predict --images ...")
        rc = oof_step(args, work, datalist) if args.oof else 0
        return tune_step(args, work, datalist) if args.oof and args.tune and rc == 0 else rc
    if args.require_trained and mode in ("ensemble", "submit", "oof", "full"):
        check_trained(work, args.algos)
    if mode == "predict":
        args.images = expand_predict_images(args.images)
        check_predict_images(args.images, datalist)
        for warning in label_like_images(args.images, datalist):
            print(warning, file=sys.stderr)
        if args.output_dir:
            check_output_dir(work, Path(args.output_dir), args.images)
    if mode in ("ensemble", "predict", "full"):
        from auto3dseg.ensembling.ensemble import run_ensemble

        step_banner("ensemble" if mode != "predict" else "predict")
        out = args.output_dir or (str(work / "predictions") if mode == "predict" else None)
        manifest = run_ensemble(work, method=args.ensemble_method, n_best=args.n_best, algos=args.algos,
                                images=args.images if mode == "predict" else None, output_dir=out,
                                force=args.force and mode in ("ensemble", "predict"),
                                allow_unfinished=args.allow_unfinished, tta=args.tta)
        print(f"Probability maps: {manifest.parent} (channels and files in {manifest})")
        if mode == "predict" and not args.postprocess:
            from auto3dseg.ensembling.predict_labels import retire_stale_labels

            retire_stale_labels(manifest)  # labels of earlier maps must not sit beside these
        if mode == "predict" and args.postprocess:
            from auto3dseg.ensembling.predict_labels import postprocess_predictions
            from auto3dseg.postprocess.tune import postprocess_params_for
            from datalists.cell_classes import is_cell_datalist

            dl = read_json(datalist)
            params = postprocess_params_for(work, args.postprocess_params, is_cell_datalist(dl), maps=manifest)
            folder, rows = postprocess_predictions(manifest, dl["class_table"], cells=is_cell_datalist(dl),
                                                   params=params)
            failed = [r for r in rows if r["status"] != "written"]
            print(f"Labels: {folder} ({len(rows) - len(failed)} images, {len(failed)} failed)")
            if failed:
                return 1
    rc = 0
    if mode == "submit" or (mode == "full" and has_test_labels(datalist, args.test_manifest)):
        rc = submit_step(args, work, datalist)
    if mode == "oof" or (mode == "full" and args.oof and rc == 0):
        rc = oof_step(args, work, datalist)
    if mode == "tune_postprocess" or (mode == "full" and args.oof and args.tune and rc == 0):
        rc = tune_step(args, work, datalist)
    return rc


def _settings_overrides(args: argparse.Namespace, work: Path, algos: Sequence[str], folds: list[int] | None,
                        overrides: dict) -> dict:
    """``overrides`` plus ``--num_epochs``/``--patch_size`` for the bundles that hold other values."""
    from auto3dseg.bundles.config import settings_overrides
    from auto3dseg.orchestration.train_bundles import select_bundles

    extra, lines = settings_overrides(select_bundles(work, algos, folds), work, num_epochs=args.num_epochs,
                                      patch_size=args.patch_size, overrides=overrides,
                                      force=args.force and args.mode == "train")
    for line in lines:
        print(line)
    return {**extra, **overrides}


def cli() -> int:
    """The command line (console script ``cellmap-auto3dseg``): :func:`main`, with Ctrl-C as one line."""
    try:
        return main()
    except KeyboardInterrupt:  # Ctrl-C: what was written so far is kept (temporaries, markers written last)
        from converters.cli import interrupted_message

        print(f"\n{interrupted_message()}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(cli())
