"""The CLI's steps after training: submit, out-of-fold + cross-validated score, tuning, SLURM.

:mod:`run_auto3dseg` parses the flags and calls these with its ``argparse`` namespace; each
prints what a user reads and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["has_test_labels", "has_testing", "oof_step", "read_json", "slurm_step", "step_banner", "submit_step",
           "test_score", "tune_step"]


def step_banner(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def tune_step(args: argparse.Namespace, work: Path, datalist: str) -> int:
    from auto3dseg.evaluation.cv import cv_summary, run_cv
    from auto3dseg.orchestration.workdir import data_kind
    from auto3dseg.postprocess.tune import TUNED_YAML, postprocess_params_for, tune_postprocess, tuning_summary

    step_banner("tune_postprocess")
    # what the submission made before this step (in --mode full) was post-processed with
    earlier = ("--postprocess_params " + str(args.postprocess_params) if args.postprocess_params else
               "the earlier tuned post-processing" if (work / TUNED_YAML).is_file() else "the default post-processing")
    report = tune_postprocess(work, budget=args.tune_budget, min_crops=args.tune_min_crops,
                              min_objects=args.tune_min_objects, min_gain=args.tune_min_gain, rules=args.score_rules,
                              max_voxels=args.tune_max_voxels or None, base=args.postprocess_params,
                              force=args.force and args.mode == "tune_postprocess")
    print(tuning_summary(report))
    print(f"Tuning report: {work / 'tuning' / 'report.md'}")
    cells = data_kind(datalist) == "cells"
    if report.get("tuned_file"):  # it holds --postprocess_params' values too: from here on, it is what is used
        args = argparse.Namespace(**{**vars(args), "postprocess_params": None})
    params = postprocess_params_for(work, args.postprocess_params, cells)
    print(cv_summary(json.loads(run_cv(work, params=params, rules=args.score_rules).read_text())))
    if args.mode == "full" and has_test_labels(datalist, args.test_manifest):
        before = test_score(work)
        replaced = work / "submission" / "replaced"
        kept_before = set(replaced.iterdir()) if replaced.is_dir() else set()
        rc = submit_step(args, work, datalist)  # with the tuned parameters; the previous submission is kept aside
        after = test_score(work)
        moved = sorted(set(replaced.iterdir()) - kept_before) if replaced.is_dir() else []
        if before is not None and after is not None:
            now = ("the tuned one" if report.get("tuned_file") else
                   "the packaged defaults (nothing tuned)" if not args.postprocess_params else
                   f"--postprocess_params {args.postprocess_params} (nothing tuned)")
            where = f"the earlier submission is in {moved[-1]}" if moved else "the same submission: nothing changed"
            print(f"Test score with {earlier} {before:.4f}, with {now} {after:.4f} ({after - before:+.4f}; {where})")
        return rc
    return 0


def test_score(work: Path, rules: str = "official") -> float | None:
    """The figure of <work_dir>/submission/scores.json (scores_<rules>.json; CellMap overall or cells
    mean F1), if scored."""
    path = work / "submission" / ("scores.json" if rules == "official" else f"scores_{rules}.json")
    if not path.is_file():
        return None
    t = read_json(path)
    return t.get("mean_f1") if "mean_f1" in t else (t.get("overall") or {}).get("score")


def _networks_differ(work: Path) -> str | None:
    """How the networks of the submission's maps (``ensemble.json``) differ from those of the
    out-of-fold maps (``oof/oof.json``), or None (the same, or a file unreadable)."""
    import json

    from auto3dseg.ensembling.oof import MANIFEST, OOF_DIR
    from auto3dseg.orchestration.workdir import ENSEMBLE_DIR

    def nets(names) -> set[str]:
        return {str(n).rpartition("_")[0] for n in names}

    try:
        ens = json.loads((work / ENSEMBLE_DIR / "ensemble.json").read_text())
        oof = json.loads((work / OOF_DIR / MANIFEST).read_text())
        test = nets(b["name"] for b in ens.get("bundles", []))
        cv = nets(n for it in oof.get("items", []) for n in it.get("bundles", []))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not test or not cv or test == cv:
        return None
    return (f"the submission's maps come from {', '.join(sorted(test))}, the CV score's from {', '.join(sorted(cv))}; "
            "run --mode ensemble and submit with the same --algos to compare")


def oof_step(args: argparse.Namespace, work: Path, datalist: str) -> int:
    from auto3dseg.evaluation.cv import cv_summary, oof_and_cv
    from auto3dseg.orchestration.workdir import data_kind

    from auto3dseg.postprocess.tune import postprocess_params_for

    step_banner("oof")
    params = postprocess_params_for(work, args.postprocess_params, data_kind(datalist) == "cells")
    scores = oof_and_cv(work, method=args.ensemble_method, n_best=args.n_best, algos=args.algos,
                        allow_unfinished=args.allow_unfinished, params=params, rules=args.score_rules, tta=args.tta,
                        force=args.force and args.mode == "oof")
    print(cv_summary(scores))
    figure, name = test_score(work, args.score_rules), f"scores_{args.score_rules}.json"
    if figure is None or args.score_rules == "official":
        figure, name = test_score(work), "scores.json"
    if figure is not None:
        from auto3dseg.submission.previous import params_differ

        scored = read_json(work / "submission" / name)
        rules = "official" if "mean_f1" in scored else scored.get("rules", "official")  # cells: always official
        other = params_differ(work / "submission", params)
        nets = _networks_differ(work)
        print(f"Test score (submission against --truth, {rules} rules): {figure:.4f}"
              + ("" if rules == args.score_rules else f"  (the CV score above uses {args.score_rules} rules: "
                 "not comparable; score the submission again with --mode submit --score_rules "
                 f"{args.score_rules})")
              + (f"  (the submission was {other}, not with those of the CV score above: not comparable; run "
                 "--mode submit --force with the same parameters to compare)" if other else "")
              + (f"  ({nets}: not comparable)" if nets else ""))
    from auto3dseg.evaluation.cv import scores_name

    name = scores_name(args.score_rules)
    print(f"Cross-validated scores: {work / 'cv' / name[:-5]}.md (and {name})")
    return 0


def slurm_step(args: argparse.Namespace, datalist: str) -> int:
    from auto3dseg.orchestration import slurm

    work = Path(args.work_dir).resolve()
    if getattr(args, "algos_note", None):
        print(args.algos_note, file=sys.stderr)
    flags = {"partition": args.slurm_partition, "account": args.slurm_account, "qos": args.slurm_qos,
             "gpus": args.slurm_gpus, "cpus": args.slurm_cpus, "mem": args.slurm_mem, "time": args.slurm_time,
             "args": args.slurm_args}
    try:
        partition = args.slurm_partition or os.environ.get("AUTO3DSEG_SLURM_PARTITION")
        cluster = slurm.probe_cluster(partition)
    except slurm.SlurmError as exc:  # no cluster to ask: a dry run assumes one
        if not args.dry_run:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"note: {exc}; the dry run assumes one GPU and 8 CPUs per task", file=sys.stderr)
        cluster = slurm.ClusterInfo(8, 0, 1)
    try:  # what was asked for against the cluster found (the real run checks the same)
        res = slurm.resolve_resources(flags, cluster)
    except slurm.SlurmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    generate_args = [*(["--num_epochs", str(args.num_epochs)] if args.num_epochs else []),
                     *(["--budget", str(args.budget)] if args.budget else []),
                     *(["--patch_size", str(args.patch_size)] if args.patch_size else []),
                     *(["--templates", str(Path(args.templates).resolve()) if Path(args.templates).exists()
                        else args.templates] if args.templates else [])]
    # bundles that exist already get --num_epochs, --budget and --patch_size at training
    train_args = [*generate_args[:2 * sum(1 for v in (args.num_epochs, args.budget, args.patch_size) if v)],
                  *(a for kv in args.override for a in ("--override", kv))]
    ensemble_args = ["--ensemble_method", args.ensemble_method,
                     *(["--n_best", str(args.n_best)] if args.ensemble_method == "best_n" else []),
                     *(["--tta"] if args.tta else [])]
    # oof and tune_postprocess read the rules and the parameters, not the truth or the manifest (test crops)
    scoring_args = [*(["--score_rules", args.score_rules] if args.score_rules != "official" else []),
                    *(["--postprocess_params", str(Path(args.postprocess_params).resolve())]
                      if args.postprocess_params else [])]
    submit_args = [*(["--truth", str(Path(args.truth).resolve())] if args.truth else []),
                   *(["--test_manifest", str(Path(args.test_manifest).resolve())] if args.test_manifest else []),
                   *scoring_args]
    try:
        result = slurm.submit_pipeline(work, datalist, res=res, algos=args.algos, num_fold=args.num_fold,
                                       generate_args=generate_args, train_args=train_args, ensemble_args=ensemble_args,
                                       submit_args=submit_args, submit=has_test_labels(datalist, args.test_manifest),
                                       dry_run=args.dry_run, force=args.force,
                                       oof_args=scoring_args if args.oof else None,
                                       tune_args=[*scoring_args,
                                                  "--tune_budget", str(args.tune_budget), "--tune_min_crops",
                                                  str(args.tune_min_crops), "--tune_min_objects",
                                                  str(args.tune_min_objects), "--tune_min_gain",
                                                  str(args.tune_min_gain), "--tune_max_voxels",
                                                  str(args.tune_max_voxels)] if args.tune else None,
                                       dataroot=args.dataroot)
    except slurm.SlurmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        for (step, text), cmd in zip(result.scripts.items(), result.commands):
            print(f"# --- {step}: {work / slurm.SLURM_DIR / (step + '.sbatch')}\n{text}")
            print(" ".join(slurm.shlex.quote(c) for c in cmd) + "\n")
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        return 0
    print(f"Submitted to SLURM for {work} ({len(result.bundles)} bundles; array tasks {result.array or 'none'}):")
    for step, job in result.jobs.items():
        print(f"  {step:6s} job {job}")
    for note in result.notes:
        print(f"  note: {note}")
    print("\n".join(slurm.how_to_watch(result, work)))
    return 0


def review_flag_lines(work: Path) -> list[str]:
    """The review's flags as the console shows them after the analysis (none when it has none)."""
    import json

    from auto3dseg.analysis.review import REVIEW_JSON, flag_summary

    try:
        flags = json.loads((work / REVIEW_JSON).read_text()).get("flags") or []
    except (OSError, ValueError, AttributeError):
        return []
    return flag_summary([str(f) for f in flags])


def read_json(path: str | Path, fix: str = "fix it, or write it again with the step that made it") -> dict:
    import json

    try:
        return json.loads(Path(path).read_text())
    except ValueError as exc:  # a file cut short (disk full, a copy interrupted) or edited by hand
        raise ValueError(f"{path} is not valid JSON ({exc}): {fix}") from None


def has_testing(datalist: str) -> bool:
    return bool(read_json(datalist).get("testing"))


def has_test_labels(datalist: str, test_manifest: str | None) -> bool:
    import json

    from datalists.cell_classes import is_cell_datalist

    if test_manifest:
        return True
    dl = json.loads(Path(datalist).read_text())
    if is_cell_datalist(dl):
        return bool(dl.get("testing"))
    items_file = Path(datalist).parent / dl.get("items_file", "datalist_items.json")
    if not items_file.is_file():
        return False
    return any(v.get("test_labels") for v in json.loads(items_file.read_text()).values())


def check_maps_cover_testing(ens: dict, datalist: str, manifest: Path) -> None:
    """Name testing images the datalist holds now that the ensemble has no map of (added after it
    ran: the submission reports them missing), and images it predicted that the datalist no longer
    lists. Images are compared by file name: a dataset moved as a whole still matches."""
    testing = [t["image"] if isinstance(t, dict) else t for t in read_json(datalist).get("testing", [])]
    want = {Path(str(t)).name for t in testing}
    have = {Path(str(it.get("image", ""))).name for it in ens.get("items", [])}
    if missing := sorted(want - have):
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        print(f"warning: {datalist} holds {len(missing)} testing image(s) that {manifest} has no probability map "
              f"of ({shown}): the datalist changed after the ensemble; run --mode ensemble (it predicts only what is "
              "missing), then --mode submit", file=sys.stderr)
    if extra := sorted(have - want):
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        print(f"warning: {manifest} holds map(s) of {len(extra)} image(s) that {datalist} no longer lists as testing "
              f"({shown}); run --mode ensemble --force to predict only the datalist's testing images",
              file=sys.stderr)


def _keep_other_truth_scores(out: Path, cached: dict | None, truth: str,
                             suffixes: tuple[str, ...] = (".json", ".md", ".csv")) -> None:
    """Scores of this submission against another truth are moved to replaced/, not overwritten."""
    from auto3dseg.submission.previous import keep_previous

    if cached and cached.get("truth") and cached.get("truth") != truth:
        keep_previous(out.parent, [out.with_suffix(s).name for s in suffixes], what="scores", first=out.name,
                      why=f"against {cached['truth']}")


def submit_step(args: argparse.Namespace, work: Path, datalist: str) -> int:
    from auto3dseg.ensembling.ensemble import ENSEMBLE_DIR
    from auto3dseg.postprocess.tune import postprocess_params_for
    from auto3dseg.submission.cellmap import write_submission

    step_banner("submit")
    if args.truth and (work / "submission").resolve() in (t := Path(args.truth).resolve(), *t.parents):
        raise ValueError(f"--truth {args.truth} is this work_dir's own submission: scored against itself it is 1.0; "
                         "give the ground truth")
    if args.truth and Path(args.truth).is_dir():
        from auto3dseg.evaluation.stores import truth_inside

        if linked := truth_inside(args.truth, work / "submission"):
            raise ValueError(f"--truth {args.truth}: {linked} links into this work_dir's own submission: scored "
                             "against itself it is 1.0; give the ground truth")
    manifest = work / ENSEMBLE_DIR / "ensemble.json"
    if manifest.parent.is_dir():
        from auto3dseg.orchestration.locks import wait_while_busy

        running = wait_while_busy(manifest.parent, "ensemble")  # a running ensemble writes ensemble.json last
        if running:
            raise FileNotFoundError(f"{manifest} is {'being rewritten' if manifest.is_file() else 'not written yet'}: "
                                    f"{running}")
    if not manifest.is_file():
        partial = manifest.with_name("ensemble.partial.json").is_file()
        why = (" (an ensemble interrupted, or stopped by an image it could not predict, left only part of the maps)"
               if partial else "")
        raise FileNotFoundError(f"{manifest} not found{why}: run --mode ensemble (again: it resumes; an image it "
                                "names must be fixed or removed first) first" if partial else
                                f"{manifest} not found: run --mode ensemble first")
    from auto3dseg.ensembling.weights_stamp import changed_bundles
    from datalists.cell_classes import is_cell_datalist

    ens = read_json(manifest, "run --mode ensemble (it writes it again, keeping the maps that are whole)")
    check_maps_cover_testing(ens, datalist, manifest)
    changed = changed_bundles(ens, work)
    if changed:  # the maps are still those models' predictions: usable, but not what the work_dir now holds
        print(f"warning: the probability maps in {manifest.parent} were made by bundles that changed since "
              f"({'; '.join(changed)}): this submission is built from them; run --mode ensemble to predict with the "
              "bundles as they are now", file=sys.stderr)
    from auto3dseg.bundles.checks import check_class_tables, older_channels_note
    from auto3dseg.orchestration.train_bundles import stale_bundles_note
    from auto3dseg.orchestration.workdir import list_bundles

    names = {str(b.get("name")) for b in ens.get("bundles", [])}
    made_by = [b for b in list_bundles(work) if b.name in names]
    check_class_tables(made_by, datalist, work)  # the datalist's table names the maps' channels, as for ensemble
    if note := older_channels_note(made_by, datalist, work):
        print(note, file=sys.stderr)
    if note := stale_bundles_note(made_by, "this submission is built from their maps"):
        print(note)
    if is_cell_datalist(read_json(datalist)):
        return submit_cells_step(args, work, datalist, manifest)
    params = postprocess_params_for(work, args.postprocess_params, cells=False, maps=manifest)
    zip_path, report = write_submission(manifest, datalist, work / "submission", params=params,
                                        test_manifest=args.test_manifest, force=args.force and args.mode == "submit")
    print(f"Submission: {zip_path} ({len(report.rows)} labels, {len(report.empty)} empty; "
          f"report {zip_path.parent / 'submission_report.md'})")
    if args.truth:
        import json

        from auto3dseg.evaluation.score import (
            format_scores_markdown,
            score_submission,
            write_scores,
        )
        from auto3dseg.evaluation.stores import truth_stamp

        # one file per rules: strict scores never replace the official ones
        out = zip_path.parent / ("scores.json" if args.score_rules == "official" else f"scores_{args.score_rules}.json")
        cached = json.loads(out.read_text()) if out.is_file() else None
        manifest = str(args.test_manifest) if args.test_manifest else None
        stamp = truth_stamp(args.truth)  # a truth corrected since is scored again
        if (cached and cached.get("truth") == str(args.truth) and cached.get("rules") == args.score_rules
                and cached.get("test_manifest") == manifest and not args.force and cached.get("truth_stamp") == stamp
                and out.stat().st_mtime >= zip_path.stat().st_mtime):
            scores = cached  # this submission was scored against this truth, with these rules, already
            if scores.get("submission") != str(zip_path):  # a copied work_dir: its report names its own zip
                scores = {**scores, "submission": str(zip_path)}
                write_scores(scores, out)
            for w in scores.get("warnings", []):
                print(f"warning: {w.get('crop')}/{w.get('label')} [{w.get('kind')}]: {w.get('message')}",
                      file=sys.stderr)
        else:
            scores = score_submission(zip_path, args.truth, rules=args.score_rules, test_manifest=args.test_manifest)
            scores["truth_stamp"] = stamp
            _keep_other_truth_scores(out, cached, str(args.truth))
            write_scores(scores, out)
        print(format_scores_markdown(scores))
        print(f"Scores: {out} (and {out.with_suffix('.md')})")
    return 0


def submit_cells_step(args: argparse.Namespace, work: Path, datalist: str, manifest: Path) -> int:
    from auto3dseg.postprocess.tune import postprocess_params_for
    from auto3dseg.submission.cells import write_cell_submission

    params = postprocess_params_for(work, args.postprocess_params, cells=True, maps=manifest)
    folder, rows = write_cell_submission(manifest, datalist, work / "submission", params=params,
                                         force=args.force and args.mode == "submit")
    failed = [r for r in rows if r["status"] != "written"]
    print(f"Submission: {folder} ({len(rows) - len(failed)} <stem>_label.tiff files, {len(failed)} failed; "
          f"report {folder.parent / 'submission_report.md'})")
    if args.truth:
        from auto3dseg.evaluation.cellseg import format_cellseg_markdown, score_folders, write_cellseg_scores

        out = folder.parent / "scores.json"
        cached = read_json(out) if out.is_file() else None
        signature = folder.parent / "submission_signature.txt"
        from converters.outputs import source_stamp

        stamp = source_stamp([args.truth], listing=True)  # a truth corrected since is scored again
        if (cached and cached.get("truth") == str(args.truth) and not args.force and signature.is_file()
                and cached.get("truth_stamp") == stamp and out.stat().st_mtime >= signature.stat().st_mtime):
            result = cached  # these labels were scored against this truth already
        else:
            result = dict(score_folders(args.truth, folder, progress=False), truth=str(args.truth), truth_stamp=stamp)
            _keep_other_truth_scores(out, cached, str(args.truth))
            write_cellseg_scores(result, out)
        print(format_cellseg_markdown(result))
        print(f"Scores: {out} (and {out.with_suffix('.md')}, {out.with_suffix('.csv')})")
    return 1 if failed else 0
