"""``--mode slurm`` on a real Slurm (tests/slurm_cluster.py), and the pieces it relies on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import run_auto3dseg
from auto3dseg.orchestration.cli_checks import check_trained, task_bundle
from auto3dseg.orchestration import slurm as slurm_mod

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--algos", "segresnet", "--patch_size", "16", "--override", "num_workers=0", "--override", "num_iterations_per_epoch=3",
        "--override", "segresnet:network#init_filters=8", "--override", "segresnet:network#dsdepth=2"]


def _submit(datalist: Path, work: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    """The submitter as a user runs it: another directory, this project's Python."""
    cmd = [sys.executable, str(ROOT / "run_auto3dseg.py"), "--mode", "slurm", "--datalist", str(datalist),
           "--work_dir", str(work), "--slurm_cpus", "1", *TINY, *extra]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=os.environ.copy())


def _jobs(work: Path) -> dict[str, str]:
    return json.loads((work / "slurm" / "jobs.json").read_text())["jobs"]


def _time(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def test_slurm_chain_runs_prep_array_then_final_and_submits(slurm, converted, synthetic, tmp_path):
    out, _ = converted
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = _submit(out / "datalist.json", work, elsewhere, "--num_epochs", "1",
                  "--truth", str(synthetic / "test_truth.zarr"))
    assert res.returncode == 0, res.stderr
    jobs = _jobs(work)
    assert set(jobs) == {"prep", "train", "final"} and "squeue -j" in res.stdout
    again = _submit(out / "datalist.json", work, elsewhere, "--num_epochs", "1")
    assert again.returncode == 2 and "still active" in again.stderr  # no second chain beside a running one
    records = slurm.wait(list(jobs.values()))
    states = {step: [r["JobState"] for r in records[j]] for step, j in jobs.items()}
    assert states == {"prep": ["COMPLETED"], "train": ["COMPLETED", "COMPLETED"], "final": ["COMPLETED"]}, states
    array_end = max(_time(r["EndTime"]) for r in records[jobs["train"]])
    assert _time(records[jobs["final"]][0]["StartTime"]) >= array_end
    assert (work / "submission" / "submission.zip").is_file() and (work / "submission" / "scores.json").is_file()
    logs = sorted(p.name for p in (work / "logs").iterdir())
    assert any(n.startswith("a3d-train-work-") for n in logs) and len(logs) == 4
    assert not list(elsewhere.glob("*.out")) and not list(ROOT.glob("slurm-*.out"))
    for b in ("segresnet_0", "segresnet_1"):
        assert (work / b / "training_done.json").is_file()


def test_slurm_cancelled_task_is_resubmitted_and_the_chain_finishes(slurm, converted, tmp_path):
    out, _ = converted
    work = tmp_path / "work"
    res = _submit(out / "datalist.json", work, tmp_path, "--num_epochs", "12")
    assert res.returncode == 0, res.stderr
    jobs = _jobs(work)
    last = work / "segresnet_0" / "model" / "last.pt"
    deadline = time.time() + 300
    while not last.is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert last.is_file(), "task 0 never finished an epoch"
    slurm.run("scancel", f"{jobs['train']}_0")
    records = slurm.wait(list(jobs.values()))
    task0 = [r for r in records[jobs["train"]] if r.get("ArrayTaskId") == "0"][0]
    assert task0["JobState"] == "CANCELLED"
    assert records[jobs["final"]][0]["JobState"] == "FAILED"  # it ran (afterany) and refused a partial ensemble
    final_log = next((work / "logs").glob(f"a3d-final-work-{jobs['final']}.out")).read_text()
    assert "not trained: segresnet_0" in final_log
    assert not (work / "segresnet_0" / "training_done.json").is_file()

    res = _submit(out / "datalist.json", work, tmp_path, "--num_epochs", "12")
    assert res.returncode == 0, res.stderr
    second = json.loads((work / "slurm" / "jobs.json").read_text())
    assert set(second["jobs"]) == {"train", "final"} and second["array"] == "0"  # only what was unfinished
    records = slurm.wait(list(second["jobs"].values()))
    assert all(r["JobState"] == "COMPLETED" for recs in records.values() for r in recs), records
    assert "resuming from epoch" in (work / "segresnet_0" / "training.log").read_text()
    state = json.loads((work / "segresnet_0" / "training_done.json").read_text())
    assert state["best_avg_dice_score"] is not None
    assert (work / "ensemble_output" / "ensemble.json").is_file()


def test_slurm_refuses_what_no_node_can_give(slurm, converted, tmp_path, capsys):
    out, _ = converted
    rc = run_auto3dseg.main(["--mode", "slurm", "--datalist", str(out / "datalist.json"), "--work_dir",
                             str(tmp_path / "w"), "--slurm_cpus", "999"])
    err = capsys.readouterr().err
    assert rc == 2 and "999 CPUs" in err and "largest node" in err
    rc = run_auto3dseg.main(["--mode", "slurm", "--datalist", str(out / "datalist.json"), "--work_dir",
                             str(tmp_path / "w"), "--slurm_gpus", "1"])
    assert rc == 2 and "--slurm_gpus 0" in capsys.readouterr().err
    assert not (tmp_path / "w" / "slurm").exists()


# ----------------------------------------------------------------------------- no cluster needed
def test_dry_run_prints_the_chain_and_writes_nothing(converted, tmp_path, capsys, monkeypatch):
    out, _ = converted
    monkeypatch.setattr(slurm_mod, "probe_cluster", lambda p=None: slurm_mod.ClusterInfo(16, 64000, 4, ["gpu"]))
    rc = run_auto3dseg.main(["--mode", "slurm", "--datalist", str(out / "datalist.json"), "--work_dir",
                             str(tmp_path / "w"), "--dry_run", "--slurm_partition", "gpu", "--slurm_time", "1-00:00:00",
                             "--slurm_args=--constraint=a100", *TINY])
    text = capsys.readouterr().out
    assert rc == 0 and not (tmp_path / "w").exists()
    sbatch = [line for line in text.splitlines() if line.startswith("sbatch ")]
    assert len(sbatch) == 3
    assert all("--partition=gpu" in s and "--time=1-00:00:00" in s and "--constraint=a100" in s for s in sbatch)
    assert "--gres=gpu:1" in sbatch[1] and "--array=0,1" in sbatch[1] and "afterok:" in sbatch[1]
    assert "afterany:" in sbatch[2] and "--kill-on-invalid-dep=yes" in sbatch[2]
    assert "--gres" not in sbatch[0]  # analysis and generation need no GPU
    assert f"{sys.executable} {ROOT / 'run_auto3dseg.py'}" in text  # absolute paths, any directory


def test_resources_come_from_flags_then_environment_then_the_cluster():
    cluster = slurm_mod.ClusterInfo(max_cpus=4, max_mem_mb=16000, max_gpus=0)
    res = slurm_mod.resolve_resources({}, cluster, environ={})
    assert (res.cpus_per_task, res.gpus_per_task, res.mem, res.time) == (4, 0, None, None)
    env = {"AUTO3DSEG_SLURM_CPUS": "2", "AUTO3DSEG_SLURM_PARTITION": "short", "AUTO3DSEG_SLURM_MEM": "8G"}
    res = slurm_mod.resolve_resources({"cpus": 3}, cluster, environ=env)
    assert (res.cpus_per_task, res.partition, res.mem) == (3, "short", "8G")
    with pytest.raises(slurm_mod.SlurmError, match="32G"):
        slurm_mod.resolve_resources({"mem": "32G"}, cluster, environ={})


@pytest.mark.parametrize("args, says", [
    ("--dependency=afterany:1 --array=0-3", "sets --dependency, which --mode slurm sets itself for the chain's order"),
    ("--constraint=a100 -a 0-3", "sets -a, which --mode slurm sets itself for the training array"),
    ("-d afterok:5", "sets -d, which --mode slurm sets itself for the chain's order"),
    ("--cpus-per-task=4", "give it with --slurm_cpus"), ("--gres=gpu:a100:2", "give it with --slurm_gpus")])
def test_slurm_args_that_the_chain_or_a_flag_sets_are_refused(args, says):
    """--slurm_args came after the chain's own --dependency and --array: sbatch keeps the last, so
    the final job would start once another job ended, not once training did (probe round 24, J11)."""
    cluster = slurm_mod.ClusterInfo(max_cpus=4, max_mem_mb=16000, max_gpus=1)
    with pytest.raises(slurm_mod.SlurmError, match=re.escape(says)):
        slurm_mod.resolve_resources({"args": args}, cluster, environ={})
    with pytest.raises(slurm_mod.SlurmError, match="--slurm_args sets --array"):  # from the environment too
        slurm_mod.resolve_resources({}, cluster, environ={"AUTO3DSEG_SLURM_ARGS": "--array=1"})
    res = slurm_mod.resolve_resources({"args": "--constraint=a100 --exclusive"}, cluster, environ={})
    assert res.extra == ["--constraint=a100", "--exclusive"]


def test_sbatch_scripts_hold_no_site_specific_resources():
    for f in (ROOT / "sbatch").iterdir():
        text = f.read_text()
        assert not re.search(r"#SBATCH\s+--(gres|mem|time|cpus-per-task|partition|account|qos)", text), f.name
        assert not re.search(r"gpu:\d", text), f.name


def test_task_index_picks_the_work_dir_bundle_or_says_which_exist(tmp_path, capsys):
    for name in ("segresnet_0", "segresnet_1", "dints_0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "algo_object.json").write_text("{}")
    assert task_bundle(tmp_path, ["segresnet", "dints"], 2) == (["segresnet"], [1])
    with pytest.raises(ValueError, match=r"3 bundle\(s\).*valid indices are 0..2"):
        task_bundle(tmp_path, ["segresnet", "dints"], 3)
    with pytest.raises(RuntimeError, match="not trained: dints_0, segresnet_0, segresnet_1"):
        check_trained(tmp_path, ["segresnet", "dints"])


def test_dry_run_with_oof_ends_the_final_job_with_the_cross_validated_score(converted, tmp_path, capsys, monkeypatch):
    out, _ = converted
    monkeypatch.setattr(slurm_mod, "probe_cluster", lambda p=None: slurm_mod.ClusterInfo(16, 64000, 4, ["gpu"]))
    rc = run_auto3dseg.main(["--mode", "slurm", "--datalist", str(out / "datalist.json"), "--work_dir",
                             str(tmp_path / "w"), "--dry_run", "--oof", "--truth", str(tmp_path / "truth"),
                             "--score_rules", "strict", *TINY])
    text = capsys.readouterr().out
    final = text[text.index("# --- final"):]
    lines = [line for line in final.splitlines() if "run_auto3dseg.py --work_dir" in line]
    assert rc == 0 and [line.split("--mode ")[1].split()[0] for line in lines[:3]] == ["ensemble", "submit", "oof"]
    assert "--score_rules strict" in lines[2] and "--truth" not in lines[2]


def test_oof_and_tune_flags_are_refused_where_they_do_nothing(converted, tmp_path, capsys):
    out, _ = converted
    base = ["--datalist", str(out / "datalist.json"), "--work_dir", str(tmp_path / "w")]
    for args, expected in ((["--mode", "ensemble", "--oof"], "--oof and --tune are steps of --mode full and slurm"),
                           (["--mode", "full", "--tune"], "--tune needs --oof"),
                           (["--mode", "full", "--oof", "--tune", "--tune_min_gain", "nan"], "is not allowed")):
        with pytest.raises(SystemExit) as exc:
            run_auto3dseg.main([*base, *args])
        assert exc.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_dry_run_with_tune_submits_again_after_tuning(converted, tmp_path, capsys, monkeypatch):
    out, _ = converted
    monkeypatch.setattr(slurm_mod, "probe_cluster", lambda p=None: slurm_mod.ClusterInfo(16, 64000, 4, ["gpu"]))
    params = tmp_path / "start.yaml"
    params.write_text("mito:\n  threshold: 0.4\n")
    rc = run_auto3dseg.main(["--mode", "slurm", "--datalist", str(out / "datalist.json"), "--work_dir",
                             str(tmp_path / "w"), "--dry_run", "--oof", "--tune", "--tune_budget", "7", *TINY,
                             "--postprocess_params", str(params), "--dataroot", str(out)])
    text = capsys.readouterr().out
    final = text[text.index("# --- final"):]
    lines = [line for line in final.splitlines() if "run_auto3dseg.py --work_dir" in line]
    modes = [line.split("--mode ")[1].split()[0] for line in lines]
    assert rc == 0 and modes == ["ensemble", "submit", "oof", "tune_postprocess", "submit"]
    assert "--tune_budget 7" in final
    # tuning starts from the file; the submission after it uses the tuned file, which holds the start's values
    assert str(params) in lines[1] and str(params) in lines[3] and "--postprocess_params" not in lines[4]
    prep = [line for line in text[:text.index("# --- final")].splitlines() if "--mode analyze" in line
            or "--mode generate" in line]
    assert len(prep) == 2 and all(f"--dataroot {out.resolve()}" in line for line in prep)
    # every command of the chain is one its mode accepts (no flag refused as doing nothing)
    import shlex

    from auto3dseg.orchestration.flags import ignored_flags

    parser = run_auto3dseg.build_parser()
    for line in text.splitlines():
        if "run_auto3dseg.py --work_dir" in line:
            argv = shlex.split(line.replace('"$SLURM_ARRAY_TASK_ID"', "0").replace(
                '"$(( SLURM_CPUS_PER_TASK - 1 ))"', "1"))
            argv = argv[argv.index(next(a for a in argv if a.endswith("run_auto3dseg.py"))) + 1:]
            assert ignored_flags(parser.parse_args(argv), parser) == [], line


def _fake_bundles(work: Path, names: list[str], trained: bool = True) -> None:
    """Bundle folders as list_bundles finds them (algo_object.json), with a training record."""
    for name in names:
        (work / name).mkdir(parents=True)
        (work / name / "algo_object.json").write_text("{}")
        if trained:
            (work / name / "training_done.json").write_text(json.dumps({"best_avg_dice_score": 0.5}))


def test_a_network_added_to_the_command_is_generated_by_a_prep_job(converted, tmp_path, capsys, monkeypatch):
    """segresnet trained, `--algos segresnet dints`: only a final job was submitted, which ensembled
    segresnet alone (exit 0, dints never mentioned)."""
    out, _ = converted
    folds = sorted({int(it["fold"]) for it in json.loads((out / "datalist.json").read_text())["training"]})
    work = tmp_path / "w"
    _fake_bundles(work, [f"segresnet_{f}" for f in folds])
    (work / "datastats.yaml").write_text("stats_summary: {}\n")
    monkeypatch.setattr(slurm_mod, "probe_cluster", lambda p=None: slurm_mod.ClusterInfo(4, 16000, 0))
    rc = run_auto3dseg.main(["--mode", "slurm", "--datalist", str(out / "datalist.json"), "--work_dir", str(work),
                             "--dry_run", "--algos", "segresnet", "dints", "--slurm_cpus", "1"])
    said = capsys.readouterr()
    sbatch = [line for line in said.out.splitlines() if line.startswith("sbatch ")]
    assert rc == 0 and len(sbatch) == 3 and "a3d-prep" in sbatch[0], said.out
    assert f"--array={','.join(str(i) for i in range(len(folds)))} " in sbatch[1]  # dints_* sort first; segresnet done
    assert "--mode generate" in said.out and ", ".join(f"dints_{f}" for f in folds) + " not generated yet" in said.err
    rc = run_auto3dseg.main(["--mode", "slurm", "--datalist", str(out / "datalist.json"), "--work_dir", str(work),
                             "--dry_run", "--algos", "segresnet", "--num_fold", str(len(folds) + 1)])
    assert rc == 2 and f"has no training items in fold(s) [{len(folds)}]" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="--algos dints: .* has no bundle of it \\(not generated\\)"):
        check_trained(work, ["segresnet", "dints"])


def test_a_cpu_request_above_the_cluster_is_refused_once_with_its_size(converted, tmp_path, capsys, monkeypatch):
    """The dry run said "has 2" in a note, then "has 8" (an assumed cluster) in the error."""
    out, _ = converted
    monkeypatch.setattr(slurm_mod, "probe_cluster", lambda p=None: slurm_mod.ClusterInfo(2, 16000, 0))
    rc = run_auto3dseg.main(["--mode", "slurm", "--datalist", str(out / "datalist.json"), "--work_dir",
                             str(tmp_path / "w"), "--dry_run", "--slurm_cpus", "64", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "has 2" in err and "--slurm_cpus 2 or less" in err, err


def test_convert_script_names_a_missing_project_and_a_dry_run_ends_well(synthetic, tmp_path):
    """Submitted from elsewhere without PROJECT it failed with "./.venv/bin/python: No such file";
    with --dry_run its validation step failed (no datalist), so Slurm marked the job FAILED."""
    script = ROOT / "sbatch" / "convert_cellmap.sbatch"
    env = {**os.environ, "PY": sys.executable}
    env.pop("PROJECT", None)
    env.pop("SLURM_SUBMIT_DIR", None)
    proc = subprocess.run(["bash", str(script), str(synthetic), str(tmp_path / "o")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "pass --export=ALL,PROJECT=<repository>" in proc.stderr, proc.stderr
    proc = subprocess.run(["bash", str(script), str(synthetic), str(tmp_path / "o"), "--dry_run"], cwd=tmp_path,
                          env={**env, "PROJECT": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Plan (nothing written)" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "o").exists()
    # relative paths are those of the folder the job starts in, not of PROJECT (probe A5d)
    (tmp_path / "data").symlink_to(synthetic)
    proc = subprocess.run(["bash", str(script), "data", "o", "--num_folds", "2"], cwd=tmp_path,
                          env={**env, "PROJECT": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "o" / "datalist.json").is_file() and not (ROOT / "o").exists()
