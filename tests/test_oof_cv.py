"""Out-of-fold maps and the cross-validated score on the built-in CellMap data (issue 20):
every training item predicted by a model that never saw it, the score equal to the scorer
run by hand, resumption, a fold without a model listed, a leak refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faults import retrain_weights

import run_auto3dseg
from auto3dseg.ensembling.oof import OutOfFoldLeak, run_oof, stale_reasons
from auto3dseg.evaluation.cv import run_cv
from auto3dseg.evaluation.score import score_submission

TINY = ["--override", "num_workers=0", "--override", "num_iterations_per_epoch=3",
        "--override", "segresnet:network#init_filters=8", "--override", "segresnet:network#dsdepth=2",
        "--override", "sw_batch_size=4"]


@pytest.fixture(scope="module")
def oof_run(converted, synthetic, tmp_path_factory):
    """``--mode full --oof`` once on a copy of the converted data (tests edit its datalist)."""
    out, _ = converted
    base = tmp_path_factory.mktemp("oof")
    data = base / "nifti"
    shutil.copytree(out, data)
    work = base / "work"
    args = ["--mode", "full", "--oof", "--datalist", str(data / "datalist.json"), "--work_dir", str(work),
            "--workers", "0", "--algos", "segresnet", "--num_epochs", "1", "--patch_size", "16", *TINY,
            "--truth", str(synthetic / "test_truth.zarr")]
    assert run_auto3dseg.main(args) == 0
    return work, data


def _oof(work: Path) -> dict:
    return json.loads((work / "oof" / "oof.json").read_text())


def test_every_training_item_is_predicted_by_a_model_that_never_saw_it(oof_run):
    work, data = oof_run
    dl = json.loads((data / "datalist.json").read_text())
    oof = _oof(work)
    by_image = {Path(it["image"]).name: it for it in oof["items"]}
    assert sorted(by_image) == sorted(Path(it["image"]).name for it in dl["training"]) and not oof["missing"]
    for item in dl["training"]:
        rec = by_image[Path(item["image"]).name]
        assert rec["fold"] == item["fold"] and rec["bundles"] == [f"segresnet_{item['fold']}"] and rec["verified"]
        split = json.loads((work / rec["bundles"][0] / "model" / "training_items.json").read_text())
        assert split["fold"] == item["fold"]
        assert rec["image"] in split["validation"] and rec["image"] not in split["training"]
        assert Path(rec["probabilities"]).is_dir()


def test_cv_score_equals_the_scorer_run_by_hand(oof_run, synthetic):
    work, _ = oof_run
    cv = json.loads((work / "cv" / "scores.json").read_text())
    assert cv["rules"] == "official" and not cv["cv"]["unscored"] and cv["cv"]["verified"]
    assert len(cv["cv"]["scored"]) == len(_oof(work)["items"])
    # the same store against the whole data root (every training crop's annotated classes), by hand
    by_hand = score_submission(work / "cv" / "oof_submission.zarr", synthetic, echo_warnings=False)
    assert by_hand["overall"] == cv["overall"]
    assert {k: v["score"] for k, v in by_hand["labels"].items()} == {k: v["score"] for k, v in cv["labels"].items()}
    md = (work / "cv" / "scores.md").read_text()
    assert "Cross-validated score" in md and f"{cv['overall']['score']:.4f}" in md


def test_rerun_keeps_maps_and_score(oof_run, capsys):
    work, _ = oof_run
    before = {p: p.stat().st_mtime_ns for p in (work / "oof").rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(work)]) == 0
    printed = capsys.readouterr().out
    assert "0 maps written" in printed and "up to date" in printed
    assert "Cross-validated score (out-of-fold, official rules)" in printed and "Test score" in printed
    assert "not comparable" not in printed  # the submission was post-processed as the CV was
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after


def test_cv_of_other_rules_or_parameters_keeps_the_earlier_scores_and_says_what_compares(oof_run, tmp_path, capsys):
    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    official, md = (copy / "cv" / "scores.json").read_bytes(), (copy / "cv" / "scores.md").read_bytes()
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy), "--score_rules", "strict"]) == 0
    printed = capsys.readouterr().out
    assert (copy / "cv" / "scores.json").read_bytes() == official and (copy / "cv" / "scores.md").read_bytes() == md
    assert json.loads((copy / "cv" / "scores_strict.json").read_text())["cv"]["rules"] == "strict"
    assert "scores_strict.md" in printed and (copy / "cv" / "scores_strict.md").is_file()
    # other post-processing: the earlier CV is kept aside (cv/replaced/scores-<time>), and the submission's test
    # score is not compared with it
    params = tmp_path / "other.yaml"
    params.write_text("mito:\n  threshold: 0.3\n")
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy), "--postprocess_params", str(params)]) == 0
    printed = capsys.readouterr().out
    assert "made with other post-processing parameters (mito)" in printed and "not comparable" in printed, printed
    kept = list((copy / "cv" / "replaced").glob("*/scores.json"))
    assert len(kept) == 1 and kept[0].read_bytes() == official and kept[0].with_suffix(".md").read_bytes() == md
    assert json.loads((copy / "cv" / "scores.json").read_text())["cv"]["signature"] != json.loads(official)["cv"][
        "signature"]
    # a submission made before submissions recorded their parameters: said, and an up-to-date submit records them
    (copy / "submission" / "submission_params.json").unlink()
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy)]) == 0
    printed = capsys.readouterr().out
    assert "does not record" in printed and "--mode submit --force" in printed, printed
    assert run_auto3dseg.main(["--mode", "submit", "--work_dir", str(copy)]) == 0
    assert (copy / "submission" / "submission_params.json").is_file()
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy)]) == 0
    assert "not comparable" not in capsys.readouterr().out


def test_a_test_score_of_other_networks_is_not_set_beside_the_cv_score(oof_run, tmp_path, capsys):
    """`oof --algos dints` printed the segresnet submission's test score beside the dints CV score."""
    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy)]) == 0
    assert "not comparable" not in capsys.readouterr().out  # the same networks
    manifest = copy / "ensemble_output" / "ensemble.json"  # as if the submission's maps came from dints
    ens = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**ens, "bundles": [{**b, "name": b["name"].replace("segresnet", "dints")}
                                                       for b in ens["bundles"]]}))
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy)]) == 0
    printed = capsys.readouterr().out
    assert "the submission's maps come from dints, the CV score's from segresnet" in printed, printed
    assert "not comparable" in printed


def test_a_fold_without_a_trained_bundle_is_listed_not_dropped(oof_run, tmp_path):
    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    (copy / "segresnet_1" / "training_done.json").unlink()
    manifest = run_oof(copy, log=lambda *_: None)
    oof = json.loads(manifest.read_text())
    assert oof["missing"] and all(m["fold"] == 1 and "no trained bundle of fold 1" in m["reason"] for m in oof["missing"])
    scores = json.loads(run_cv(copy, log=lambda *_: None).read_text())
    unscored = {u["item"] for u in scores["cv"]["unscored"]}
    assert {Path(m["image"]).name for m in oof["missing"]} <= unscored
    assert len(scores["cv"]["scored"]) == len(oof["items"])


def test_weights_copied_from_another_fold_are_refused(oof_run, tmp_path):
    """segresnet_1's model.pt copied over segresnet_0's: oof scored fold 0 with a model trained
    on it (a flattered CV) and called segresnet_0 "trained again"."""
    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    shutil.copy2(copy / "segresnet_1" / "model" / "model.pt", copy / "segresnet_0" / "model" / "model.pt")
    with pytest.raises(OutOfFoldLeak, match=r"segresnet_0 and segresnet_1 have the same weights \(one copied over"):
        run_oof(copy, log=lambda *_: None)
    with pytest.raises(OutOfFoldLeak, match="Retrain the copied bundle"):
        run_oof(copy, force=True, log=lambda *_: None)


def test_weights_saved_again_from_another_fold_are_refused(oof_run, tmp_path):
    """Another fold's weights loaded and saved again (same tensors, other bytes) passed the copy check."""
    import torch

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    other = torch.load(copy / "segresnet_1" / "model" / "model.pt", map_location="cpu", weights_only=False)
    torch.save(other, copy / "segresnet_0" / "model" / "model.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(OutOfFoldLeak, match=r"segresnet_0's model/model\.pt is not the weights its training wrote"):
        run_oof(copy, force=True, log=lambda *_: None)


def test_folds_changed_after_training_are_refused(oof_run, tmp_path):
    work, data = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    dl_path = data / "datalist.json"
    original = dl_path.read_text()
    dl = json.loads(original)
    for it in dl["training"]:  # swap the folds: each bundle now "holds out" what it trained on
        it["fold"] = 1 - it["fold"]
    try:
        dl_path.write_text(json.dumps(dl))
        with pytest.raises(OutOfFoldLeak, match="trained on .* should have held out"):
            run_oof(copy, log=lambda *_: None)  # without --force too: its maps were not "up to date"
        with pytest.raises(OutOfFoldLeak, match="trained on .* should have held out"):
            run_oof(copy, force=True, log=lambda *_: None)
    finally:
        dl_path.write_text(original)
    # the same swap on the data moved elsewhere (--force_new_datalist): the bundles' records name the old paths
    from auto3dseg.orchestration.workdir import repoint_input

    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    (moved / "datalist.json").write_text(json.dumps(dl))
    repoint_input(copy, moved / "datalist.json", moved)
    with pytest.raises(OutOfFoldLeak, match="trained on .* should have held out"):
        run_oof(copy, force=True, log=lambda *_: None)
    (moved / "datalist.json").write_text(original)  # moved, folds as trained: verified, no leak
    oof = json.loads(run_oof(copy, force=True, log=lambda *_: None).read_text())
    assert oof["items"] and all(it["verified"] for it in oof["items"])


def _purpose_built_maps(work: Path, value: float, background: float = 0.05, per_crop: dict | None = None) -> dict:
    """Replace the out-of-fold maps of a copied work_dir by maps built from the converted labels:
    ``value`` inside every class (groups through their parts), ``background`` elsewhere;
    ``per_crop`` maps a crop id to its own ``(value, background)``."""
    import nibabel as nib
    import numpy as np

    from auto3dseg.ensembling.probability_maps import write_probability_map

    oof = _oof(work)
    table = json.loads(Path(oof["datalist"]).read_text())["class_table"]
    by_name = {r["name"]: r for r in table}

    def ids(name: str) -> set[int]:
        row = by_name[name]
        return {int(row["id"])} | {i for p in row.get("parts") or [] for i in ids(next(
            r["name"] for r in table if int(r["id"]) == int(p)))}

    items = json.loads((Path(oof["datalist"]).parent / "datalist_items.json").read_text())
    crop_of = {str((Path(oof["datalist"]).parent / k).resolve()): int(v["crop_id"]) for k, v in items.items()}
    for it in oof["items"]:
        inside, outside = (per_crop or {}).get(crop_of[str(Path(it["image"]).resolve())], (value, background))
        lab_img = nib.load(it["label"])
        lab = np.asarray(lab_img.dataobj)
        prob = np.full((len(oof["channels"]), *lab.shape), outside, dtype=np.float32)
        for c, name in enumerate(oof["channels"]):
            prob[c][np.isin(lab, list(ids(name)))] = inside
        out = work / "oof" / Path(it["probabilities"]).name
        shutil.rmtree(out)
        write_probability_map(prob, lab_img.affine, out, oof["channels"], "sigmoid")
        it["probabilities"] = str(out)
    (work / "oof" / "oof.json").write_text(json.dumps(oof))
    return oof


def test_tuning_fixes_a_wrong_default_and_keeps_it_where_data_are_few(oof_run, tmp_path):
    from auto3dseg.postprocess.tune import TUNED_YAML, tune_postprocess

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    _purpose_built_maps(copy, 0.4)  # every class at 0.4: the default threshold 0.5 finds nothing
    report = tune_postprocess(copy, log=lambda *_: None)
    rows = {r["label"]: r for r in report["classes"]}
    # a semantic class seen in several crops: its threshold comes down below 0.4 and its score rises
    assert not rows["cyto"]["kept"] and rows["cyto"]["changed"]["threshold"] < 0.4
    assert rows["cyto"]["score_before"] == 0.0 and rows["cyto"]["score_after"] > 0.9
    # a class annotated in one crop only keeps its default, saying why
    assert rows["er_lum"]["kept"] and "fewer than 2" in rows["er_lum"]["reason"]
    assert report["after"]["overall"]["score"] > report["before"]["overall"]["score"]
    tuned = (copy / TUNED_YAML).read_text()
    assert "cyto:" in tuned and "er_lum" not in tuned
    # the cross-validated score then uses the tuned file, and equals the tuning's own figure
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy)]) == 0
    cv = json.loads((copy / "cv" / "scores.json").read_text())
    assert cv["overall"]["score"] == pytest.approx(report["after"]["overall"]["score"], abs=1e-12)


def test_an_up_to_date_tuning_is_kept_not_searched_again(oof_run, tmp_path):
    """A third `make demo` searched the post-processing again for the same maps and settings."""
    from auto3dseg.postprocess.tune import TUNED_YAML, _kept_report, tune_postprocess

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    _purpose_built_maps(copy, 0.4)
    first = tune_postprocess(copy, budget=2, log=lambda *_: None)
    report, tuned = (copy / "tuning" / "report.json").read_bytes(), (copy / TUNED_YAML).read_bytes()
    said: list[str] = []
    again = tune_postprocess(copy, budget=2, log=said.append)
    assert any("tuning is up to date" in s for s in said) and again["classes"] == json.loads(report)["classes"]
    assert (copy / "tuning" / "report.json").read_bytes() == report and (copy / TUNED_YAML).read_bytes() == tuned
    settings = json.loads(report)["settings"]
    assert _kept_report(copy / "tuning", settings, _oof(copy), copy / TUNED_YAML) is not None
    assert _kept_report(copy / "tuning", {**settings, "budget": 3}, _oof(copy), copy / TUNED_YAML) is None
    said.clear()
    tune_postprocess(copy, budget=2, force=True, log=said.append)  # --force: searched again
    assert not any("up to date" in s for s in said)
    (copy / TUNED_YAML).write_text((copy / TUNED_YAML).read_text() + "# edited\n")  # edited by hand: searched again
    assert _kept_report(copy / "tuning", settings, _oof(copy), copy / TUNED_YAML) is None
    assert first["tuned_file"]


def test_tuning_keeps_the_defaults_when_they_are_right(oof_run, tmp_path):
    from auto3dseg.postprocess.tune import TUNED_YAML, tune_postprocess

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    _purpose_built_maps(copy, 0.95)  # every threshold from 0.3 to 0.7 gives the same, perfect, masks
    report = tune_postprocess(copy, log=lambda *_: None)
    semantic = [r for r in report["classes"] if r["kind"] == "semantic" and r.get("evaluations")]
    assert semantic and all(r["kept"] and r["reason"] == "no value scored higher than the default" for r in semantic)
    tuned = (copy / TUNED_YAML).read_text() if (copy / TUNED_YAML).exists() else ""
    assert not any(f"\n{r['label']}:" in tuned for r in semantic)  # instance classes may still split better


def test_tuning_refuses_maps_older_than_the_bundles_until_oof_redoes_them(oof_run, tmp_path, capsys):
    import os

    from auto3dseg.postprocess.tune import tune_postprocess

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    manifest = copy / "oof" / "oof.json"  # the copy's own maps (a copy otherwise redoes every map)
    manifest.write_text(manifest.read_text().replace(str(work), str(copy)))
    weights = copy / "segresnet_1" / "model" / "model.pt"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # as cp -r leaves it
    assert stale_reasons(copy, _oof(copy)) == []  # the same weights: the maps stay current
    from auto3dseg.postprocess.tune import TUNED_YAML, TUNING_DIR, postprocess_params_for

    (copy / TUNED_YAML).write_text("mito:\n  threshold: 0.4\n")  # tuned on these maps: used, nothing to say
    (copy / TUNING_DIR).mkdir(exist_ok=True)
    (copy / TUNING_DIR / "report.json").write_text(json.dumps({"oof_signatures": _oof(copy)["signatures"]}))
    said: list[str] = []
    postprocess_params_for(copy, None, cells=False, log=said.append)
    assert not [s for s in said if "changed since" in s], said
    retrain_weights(weights)
    postprocess_params_for(copy, None, cells=False, log=said.append)  # submit would use them: said
    assert any("was tuned on out-of-fold maps of bundles that changed since" in s and "segresnet_1" in s
               for s in said), said
    (copy / TUNED_YAML).unlink()
    (copy / TUNING_DIR / "report.json").unlink()
    with pytest.raises(RuntimeError, match=r"older than the bundles \(fold 1: segresnet_1 trained again.*--mode oof"):
        tune_postprocess(copy, log=lambda *_: None)
    rc = run_auto3dseg.main(["--mode", "tune_postprocess", "--work_dir", str(copy)])
    assert rc == 2 and "trained again" in capsys.readouterr().err
    assert not (copy / "tuning" / "report.json").exists() or (copy / "tuning" / "report.json").read_bytes() == (
        work / "tuning" / "report.json").read_bytes()
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy)]) == 0
    n_fold1 = sum(it["fold"] == 1 for it in _oof(copy)["items"])
    assert f"{n_fold1} maps written" in capsys.readouterr().out  # only the changed fold is redone
    assert tune_postprocess(copy, budget=2, log=lambda *_: None)["kind"] == "cellmap"


@pytest.mark.parametrize("damage", ["deleted", "cut short"])
def test_a_map_that_lost_a_chunk_is_named_and_written_again(oof_run, tmp_path, capsys, damage):
    """A deleted chunk read as 0; one cut short (a full disk, a copy stopped) was kept as an
    up-to-date map until labels were made from it (probe B28)."""
    from auto3dseg.ensembling.probability_maps import open_probability_map

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    manifest = copy / "oof" / "oof.json"
    manifest.write_text(manifest.read_text().replace(str(work), str(copy)))
    damaged = Path(_oof(copy)["items"][0]["probabilities"])
    chunk = max((f for f in damaged.iterdir() if not f.name.startswith(".")), key=lambda f: f.stat().st_size)
    if damage == "deleted":
        chunk.unlink()  # its values would read as 0: an empty region, silently
        said = rf"{damaged}: 1 of the \d+ chunks it was written with are missing"
    else:
        chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
        said = rf"{damaged}: its chunks hold \d+ bytes, not the \d+ they were written with"
    with pytest.raises(ValueError, match=said):
        open_probability_map(damaged)
    capsys.readouterr()
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy)]) == 0
    assert "1 maps written" in capsys.readouterr().out
    assert chunk.is_file() and open_probability_map(damaged).n_channels


def test_strict_test_scores_are_kept_beside_the_official_ones(oof_run, synthetic, tmp_path, capsys):
    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    official = (copy / "submission" / "scores.json").read_bytes()
    assert json.loads(official)["rules"] == "official"
    assert run_auto3dseg.main(["--mode", "submit", "--work_dir", str(copy), "--truth",
                               str(synthetic / "test_truth.zarr"), "--score_rules", "strict"]) == 0
    assert (copy / "submission" / "scores.json").read_bytes() == official
    assert json.loads((copy / "submission" / "scores_strict.json").read_text())["rules"] == "strict"
    assert "scores_strict.json" in capsys.readouterr().out
    # the CV under strict rules is printed beside the strict test score, not the official one
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy), "--score_rules", "strict"]) == 0
    strict = json.loads((copy / "submission" / "scores_strict.json").read_text())["overall"]["score"]
    printed = capsys.readouterr().out
    assert f"Test score (submission against --truth, strict rules): {strict:.4f}" in printed, printed
    assert "not comparable" not in printed


def test_retuning_keeps_the_earlier_file_and_starts_from_postprocess_params(oof_run, tmp_path):
    import yaml

    from auto3dseg.postprocess.tune import TUNED_YAML, tune_postprocess

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    _purpose_built_maps(copy, 0.4)
    hand = "# edited by hand\nmito:\n  min_size_nm3: 123.0\n"
    (copy / TUNED_YAML).write_text(hand)
    base = tmp_path / "base.yaml"
    base.write_text("er_lum:\n  threshold: 0.35\n")  # er_lum is annotated in one crop: never tuned
    notes = []
    report = tune_postprocess(copy, base=base, log=notes.append)
    kept = list((copy / "tuning" / "replaced").glob("postprocess_tuned-*.yaml"))
    assert len(kept) == 1 and kept[0].read_text() == hand and any(str(kept[0]) in n for n in notes)
    tuned = yaml.safe_load((copy / TUNED_YAML).read_text())
    assert tuned["er_lum"] == {"threshold": 0.35} and tuned["cyto"]["threshold"] < 0.4  # the base's and the tuned
    assert report["settings"]["start"] == str(base)
    assert report["before"]["labels"]["er_lum"]["score"] == report["after"]["labels"]["er_lum"]["score"]
    tune_postprocess(copy, base=base, log=notes.append)  # the same values again: nothing more kept aside
    assert len(list((copy / "tuning" / "replaced").glob("*.yaml"))) == 1


def test_full_tune_prints_both_test_scores_and_keeps_the_earlier_submission(oof_run, synthetic, tmp_path, capsys):
    work, data = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    _purpose_built_maps(copy, 0.4)  # the default threshold finds nothing: tuning changes something
    default_score = json.loads((copy / "submission" / "scores.json").read_text())["overall"]["score"]
    args = ["--mode", "full", "--oof", "--tune", "--datalist", str(data / "datalist.json"), "--work_dir", str(copy),
            "--algos", "segresnet", "--num_epochs", "1", "--patch_size", "16", *TINY,
            "--truth", str(synthetic / "test_truth.zarr")]
    assert run_auto3dseg.main(args) == 0
    printed = capsys.readouterr().out
    (kept,) = (copy / "submission" / "replaced").iterdir()
    tuned_score = json.loads((copy / "submission" / "scores.json").read_text())["overall"]["score"]
    assert json.loads((kept / "scores.json").read_text())["overall"]["score"] == default_score
    assert (f"Test score with the default post-processing {default_score:.4f}, with the tuned one {tuned_score:.4f} "
            f"({tuned_score - default_score:+.4f}; the earlier submission is in {kept})") in printed, printed
    assert json.loads((copy / "submission" / "submission_params.json").read_text())["cyto"]["threshold"] < 0.4
    # the same command again: the tuned values made the submission before it, and nothing changes
    assert run_auto3dseg.main(args) == 0
    printed = capsys.readouterr().out
    assert (f"Test score with the earlier tuned post-processing {tuned_score:.4f}, with the tuned one "
            f"{tuned_score:.4f} (+0.0000; the same submission: nothing changed)") in printed, printed
    assert len(list((copy / "submission" / "replaced").iterdir())) == 1


def test_tuning_waits_for_no_oof_run_rewriting_the_maps(oof_run, tmp_path):
    import os

    from auto3dseg.orchestration.locks import LockBusy, step_lock
    from auto3dseg.postprocess.tune import TUNED_YAML, tune_postprocess

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    with step_lock(copy / "oof", "oof", log=lambda *_: None):  # as a running --mode oof --force holds it
        with pytest.raises(LockBusy, match=f"pid {os.getpid()}"):
            tune_postprocess(copy, log=lambda *_: None)
        (copy / "oof" / "oof.json").unlink()  # the running oof removed its marker: still "busy", not "run oof"
        with pytest.raises(LockBusy, match=f"pid {os.getpid()}"):
            tune_postprocess(copy, log=lambda *_: None)
    assert not (copy / TUNED_YAML).exists() and not (copy / "tuning" / "report.json").exists()


def test_a_start_file_scoring_below_the_packaged_defaults_is_not_installed(oof_run, tmp_path):
    from auto3dseg.postprocess import load_postprocess_params
    from auto3dseg.postprocess.params import params_for
    from auto3dseg.postprocess.tune import TUNED_YAML, tune_postprocess

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    _purpose_built_maps(copy, 0.9)  # the packaged threshold (0.5) gives perfect masks; 0.95 gives none
    base = tmp_path / "base.yaml"
    base.write_text("cyto:\n  threshold: 0.95\n")
    notes = []
    report = tune_postprocess(copy, base=base, budget=0, log=notes.append)  # no search: the start's values stand
    row = next(r for r in report["classes"] if r["label"] == "cyto")
    assert not row["kept"] and row["source"] == "packaged defaults" and row["score_after"] > row["score_before"]
    assert any("cyto: the packaged defaults score higher" in n for n in notes)
    packaged = params_for(load_postprocess_params(), "cyto")["threshold"]
    assert params_for(load_postprocess_params(str(copy / TUNED_YAML)), "cyto")["threshold"] == packaged


def test_values_that_score_lower_on_all_crops_than_on_the_sample_are_not_kept(oof_run, tmp_path):
    """Searched on one crop, where the maps are weak (0.4 inside), a low threshold wins; on the
    other crops the background is 0.35, so the same threshold floods them: the default stays."""
    from auto3dseg.postprocess.tune import CellMapObjective, tune_postprocess

    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    oof = _oof(copy)
    budget = 1  # one crop per class: the smallest
    objective = CellMapObjective(oof, oof["datalist"], max_voxels=budget)
    sampled = objective.search_crops("cyto")
    assert len(sampled) == 1 and len(objective.crops_of("cyto")) >= 3
    _purpose_built_maps(copy, 0.9, 0.35, per_crop={sampled[0]: (0.4, 0.05)})
    notes = []
    report = tune_postprocess(copy, max_voxels=budget, log=notes.append)
    row = next(r for r in report["classes"] if r["label"] == "cyto")
    assert row["kept"] and "scored lower on all" in row["reason"] and row["rejected"]["threshold"] < 0.4
    assert row["score_after"] == row["score_before"]
    assert report["after"]["overall"]["score"] >= report["before"]["overall"]["score"]
    assert any("cyto: tuned values not kept" in n for n in notes)


def test_tta_recomputes_the_maps_and_records_it(oof_run, tmp_path, capsys):
    work, _ = oof_run
    copy = tmp_path / "work"
    shutil.copytree(work, copy, symlinks=True)
    before = json.loads((copy / "cv" / "scores.json").read_text())["overall"]["score"]
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy), "--tta"]) == 0
    printed = capsys.readouterr().out
    oof = _oof(copy)
    assert oof["tta"] and f"{len(oof['items'])} maps written" in printed
    assert all(Path(it["probabilities"]).parent == copy / "oof" for it in oof["items"])
    after = json.loads((copy / "cv" / "scores.json").read_text())["overall"]["score"]
    assert after != before  # new maps, a new figure (a 3-iteration network is not mirror-symmetric)
    # the maps without mirroring are kept, and said to be that, not "trained again" (probe round 22 note)
    assert "made without test-time mirroring (--tta)) moved to" in printed and "trained again" not in printed, printed
    assert len(list((copy / "oof" / "replaced").glob("oof-*/*_prob.zarr"))) == len(oof["items"])
    # --force with the same weights: predicted again in place, and said (ensemble --force says it too)
    assert run_auto3dseg.main(["--mode", "oof", "--work_dir", str(copy), "--tta", "--force"]) == 0
    printed = capsys.readouterr().out
    assert f"note: --force: {len(oof['items'])} out-of-fold map(s)" in printed and "same bundles" in printed, printed
    assert len(list((copy / "oof" / "replaced").glob("oof-*"))) == 1
    capsys.readouterr()
    assert run_auto3dseg.main(["--mode", "ensemble", "--work_dir", str(copy), "--tta"]) == 0
    assert json.loads((copy / "ensemble_output" / "ensemble.json").read_text())["tta"] is True
    printed = capsys.readouterr().out  # the earlier maps are kept, and said to be the same weights' without --tta
    assert "without test-time mirroring (--tta)) moved to" in printed and "other weights" not in printed, printed


def test_cv_scores_only_the_classes_a_crop_annotates_for_the_model(synthetic, tmp_path):
    """A datasplit row's class list cuts classes from a crop: the CV plan leaves them out there."""
    from test_bad_input_cellmap import crop, cut_list, make_tree

    from converters.cellmap import zarr_tree as cz
    from converters.cellmap.convert import convert
    from auto3dseg.evaluation.cv import cellmap_cv_plan

    ds = make_tree(synthetic, tmp_path / "data")
    mito = {"mito", "mito_mem", "mito_lum"}
    cut_list(ds, "crop1", mito)
    report = convert(tmp_path / "o", cz.read_datasplit(ds), num_folds=1, progress=False)
    dl = json.loads((tmp_path / "o" / "datalist.json").read_text())
    oof = {"items": [{"image": str((tmp_path / "o" / it["image"]).resolve()), "probabilities": "unused",
                      "fold": it["fold"]} for it in dl["training"]], "missing": []}
    plan = cellmap_cv_plan(oof, tmp_path / "o" / "datalist.json")
    by_crop = {plan["crops"][c]: {t["label"] for t in targets} for c, targets in plan["wanted"].items()}
    assert not mito & by_crop["synth-1_crop1"] and mito <= by_crop["synth-1_crop2"]
    assert by_crop["synth-1_crop1"] <= set(crop(report, "synth-1_crop1")["annotated"])
    assert all(Path(p).name == "synth-1.zarr" for p in plan["truth"])


def test_cv_lists_crops_and_labels_whose_truth_is_gone_instead_of_scoring_the_rest(synthetic, tmp_path):
    """Truth moved or deleted after conversion: the crop (or label) is unscored with the path, not
    silently scored on what remains."""
    from test_bad_input_cellmap import make_tree, store

    from converters.cellmap import zarr_tree as cz
    from converters.cellmap.convert import convert
    from auto3dseg.evaluation.cv import cellmap_cv_plan

    ds = make_tree(synthetic, tmp_path / "data")
    convert(tmp_path / "o", cz.read_datasplit(ds), num_folds=1, progress=False)
    dl = json.loads((tmp_path / "o" / "datalist.json").read_text())
    oof = {"items": [{"image": str((tmp_path / "o" / it["image"]).resolve()), "probabilities": "unused",
                      "fold": it["fold"]} for it in dl["training"]], "missing": []}
    before = cellmap_cv_plan(oof, tmp_path / "o" / "datalist.json")
    ids = {name: c for c, name in before["crops"].items()}
    c1, c2 = ids["synth-1_crop1"], ids["synth-1_crop2"]
    gone = before["wanted"][c1][0]["label"]
    gt = next(store(ds).glob("recon-*/labels/groundtruth"))
    shutil.rmtree(gt / "crop1" / gone)  # one array deleted
    (gt / "crop2").rename(gt / "crop2_moved")  # a whole crop moved
    plan = cellmap_cv_plan(oof, tmp_path / "o" / "datalist.json")
    reasons = {u["item"]: u["reason"] for u in plan["unscored"]}
    assert "synth-1_crop2" in reasons and "ground truth not found at" in reasons["synth-1_crop2"]
    assert f"{store(ds).resolve()}/{(gt / 'crop2').relative_to(store(ds))}" in reasons["synth-1_crop2"], reasons
    assert c2 not in plan["wanted"] and all(c != c2 for c, _ in plan["only"])
    assert f"synth-1_crop1/{gone}" in reasons and f"crop1/{gone}" in reasons[f"synth-1_crop1/{gone}"]
    assert (c1, gone) not in plan["only"] and gone not in {t["label"] for t in plan["wanted"][c1]}
    assert {t["label"] for t in plan["wanted"][c1]} == {t["label"] for t in before["wanted"][c1]} - {gone}


def test_tuning_searches_a_sample_of_crops_within_the_voxel_budget(oof_run):
    from auto3dseg.postprocess.tune import CellMapObjective

    work, _ = oof_run
    oof = _oof(work)
    full = CellMapObjective(oof, oof["datalist"])
    budget = 150_000
    part = CellMapObjective(oof, oof["datalist"], max_voxels=budget)
    for label in ("cyto", "mito"):
        every, sample = full.search_crops(label), part.search_crops(label)
        assert every == full.crops_of(label) and set(sample) <= set(every) and sample
        sizes = {c: int(np.prod(part.plan["wanted"][c][0]["shape"])) for c in sample}
        assert len(sample) == 1 or sum(sizes.values()) <= budget
        assert part.search_crops(label) == sample  # seeded: the same sample every time
    assert len(part.search_crops("mito")) < len(full.crops_of("mito"))


def test_the_cv_signature_changes_with_the_truth_it_scores_against(tmp_path):
    """A crop's annotation corrected in its store after the CV was scored: the CV said up to date."""
    from auto3dseg.evaluation.cv import _signature

    truth = tmp_path / "crop1" / "mito" / "s0"
    truth.mkdir(parents=True)
    (truth / "0.0.0").write_bytes(b"old")
    oof = {"signatures": {"0": "abc"}, "items": [{"probabilities": "x_prob.zarr"}]}
    before = _signature(oof, {"mito": {}}, "official", None, [tmp_path / "crop1"])
    assert _signature(oof, {"mito": {}}, "official", None, [tmp_path / "crop1"]) == before
    (truth / "0.0.0").write_bytes(b"corrected")
    assert _signature(oof, {"mito": {}}, "official", None, [tmp_path / "crop1"]) != before
