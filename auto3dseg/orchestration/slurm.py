"""``--mode slurm``: the whole pipeline as a chain of SLURM jobs, from one command.

::

    prep   analyze + generate                     (CPU)
    train  one array task per (network, fold)     (--gpus_per_task GPUs each; afterok:prep)
    final  ensemble, then submit when there is    (one GPU if the cluster has GPUs; afterany:train)
           something to submit

Every job runs this project's Python and ``run_auto3dseg.py`` by absolute path, so the
chain works wherever it was submitted from; the job scripts are written to
``<work_dir>/slurm/`` and the logs to ``<work_dir>/logs/``. Array task *i* trains the
*i*-th bundle of ``<work_dir>`` (names sorted) among ``--algos``: the tasks read the
networks and folds from the work dir, never from defaults.

A failed or cancelled task cannot hold the chain: ``final`` waits for the array to *end*
(``afterany``), refuses to ensemble when a bundle is not trained (naming it), and exits
non-zero; jobs whose dependency can no longer be met are cancelled by Slurm
(``--kill-on-invalid-dep=yes``). Running the same command again submits only what is
unfinished: no prep when the bundles exist, array tasks only for untrained bundles (they
resume from their last epoch), and a new final job.

Resources come from flags, else from ``AUTO3DSEG_SLURM_<NAME>`` environment variables,
else from the cluster itself: CPUs per task ``min(8, largest node)``, one GPU per task when
the partition has GPUs (none otherwise), memory and time limits left to the partition's
defaults. Requests no node can satisfy are refused before anything is submitted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from auto3dseg.orchestration.workdir import DONE_MARKER, list_bundles

__all__ = ["ClusterInfo", "Resources", "SlurmError", "bundle_names", "probe_cluster", "resolve_resources",
           "submit_pipeline"]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
SLURM_DIR = "slurm"
LOGS_DIR = "logs"
JOBS_FILE = "jobs.json"
_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


class SlurmError(RuntimeError):
    """A request the cluster cannot satisfy, or a chain that is still running."""


@dataclass
class ClusterInfo:
    """What ``sinfo`` says of the nodes of a partition (or of all nodes)."""

    max_cpus: int
    max_mem_mb: int
    max_gpus: int
    partitions: list[str] = field(default_factory=list)


@dataclass
class Resources:
    """What each job asks for; None leaves it to the partition's defaults."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    mem: str | None = None
    time: str | None = None
    extra: list[str] = field(default_factory=list)


def _run(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SlurmError(f"{cmd[0]} not found: run this on a machine with the Slurm client commands "
                         "(sbatch, sinfo, squeue), e.g. a login node") from None
    if out.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def _gpus_in_gres(gres: str) -> int:
    """GPUs per node in a ``sinfo %G`` field, e.g. ``gpu:a100:4(S:0-1)`` → 4.

    >>> _gpus_in_gres("gpu:a100:4(S:0-1),shard:8"), _gpus_in_gres("(null)")
    (4, 0)
    """
    n = 0
    for part in gres.split(","):
        fields = part.split("(")[0].split(":")
        if fields[0] == "gpu":
            n += int(fields[-1]) if fields[-1].isdigit() else 1
    return n


def probe_cluster(partition: str | None = None) -> ClusterInfo:
    """Largest CPUs, memory and GPUs of one node of ``partition`` (default: every node)."""
    parts = [p.strip().rstrip("*") for p in _run(["sinfo", "-h", "-o", "%P"]).split()]
    if partition and partition not in parts:
        raise SlurmError(f"partition {partition!r} not found; this cluster has {', '.join(parts)}")
    cmd = ["sinfo", "-h", "-N", "-o", "%c|%m|%G"] + (["-p", partition] if partition else [])
    cpus = mem = gpus = 0
    for line in _run(cmd).splitlines():
        c, m, g = (line.split("|") + ["", "", ""])[:3]
        cpus = max(cpus, int(re.sub(r"\D", "", c) or 0))
        mem = max(mem, int(re.sub(r"\D", "", m) or 0))
        gpus = max(gpus, _gpus_in_gres(g.strip()))
    if not cpus:
        raise SlurmError(f"sinfo lists no node{' in partition ' + partition if partition else ''}")
    return ClusterInfo(cpus, mem, gpus, parts)


def _mem_mb(text: str) -> int:
    """``64G`` / ``2000M`` / ``1T`` / ``500`` (MB) → MB.

    >>> _mem_mb("64G"), _mem_mb("1500")
    (65536, 1500)
    """
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)B?\s*", str(text).upper())
    if not m:
        raise SlurmError(f"memory {text!r}: expected a number with an optional K/M/G/T suffix, e.g. 64G")
    factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return int(int(m.group(1)) * factor)


def _count(value: object, name: str, minimum: int) -> int:
    """A CPU or GPU count from a flag or ``AUTO3DSEG_SLURM_<NAME>``: a whole number >= ``minimum``.

    >>> _count("4", "cpus", 1)
    4
    """
    text = str(value).strip()
    if not text.lstrip("-").isdigit() or int(text) < minimum:
        raise SlurmError(f"--slurm_{name} / AUTO3DSEG_SLURM_{name.upper()} {text!r}: give a whole number >= {minimum}"
                         + (" (0 = train on CPUs)" if minimum == 0 else "") + ", or leave it out for the default")
    return int(text)


def resolve_resources(flags: dict, cluster: ClusterInfo, environ: dict | None = None) -> Resources:
    """Flags over ``AUTO3DSEG_SLURM_*`` variables over the cluster's own figures.

    ``flags`` keys: partition, account, qos, gpus, cpus, mem, time, args (None = not given).
    """
    env = os.environ if environ is None else environ

    def pick(key: str):
        value = flags.get(key)
        return value if value is not None else env.get(f"AUTO3DSEG_SLURM_{key.upper()}")

    gpus = pick("gpus")
    gpus = (1 if cluster.max_gpus else 0) if gpus in (None, "") else _count(gpus, "gpus", 0)
    cpus = pick("cpus")
    cpus = min(8, cluster.max_cpus) if cpus in (None, "") else _count(cpus, "cpus", 1)
    where = f"partition {flags.get('partition') or env.get('AUTO3DSEG_SLURM_PARTITION') or '(default)'}"
    if cpus > cluster.max_cpus:
        raise SlurmError(f"{cpus} CPUs per task asked, but the largest node of {where} has {cluster.max_cpus}: "
                         f"the job would wait forever. Pass --slurm_cpus {cluster.max_cpus} or less")
    if gpus > cluster.max_gpus:
        raise SlurmError(f"{gpus} GPUs per task asked, but the nodes of {where} have at most {cluster.max_gpus}"
                         + (": pass --slurm_gpus 0 to train on CPUs" if not cluster.max_gpus else ""))
    mem = pick("mem")
    if mem and cluster.max_mem_mb and _mem_mb(mem) > cluster.max_mem_mb:
        raise SlurmError(f"--slurm_mem {mem} is more than the largest node of {where} has "
                         f"({cluster.max_mem_mb} MB)")
    extra = shlex.split(pick("args") or "")
    refuse_chain_options(extra)
    return Resources(partition=pick("partition") or None, account=pick("account") or None, qos=pick("qos") or None,
                     gpus_per_task=gpus, cpus_per_task=cpus, mem=mem or None, time=pick("time") or None, extra=extra)


#: sbatch options each job of the chain sets itself (its order, its array, its name and log), and
#: those a --slurm_* flag sets: given again in --slurm_args, sbatch would keep the last one
_CHAIN_OPTIONS = {"--dependency": "the chain's order (prep, then the training array, then final)", "-d": "--dependency",
                  "--array": "the training array (one task per bundle)", "-a": "--array",
                  "--job-name": "each job's name", "-J": "--job-name", "--output": "each job's log", "-o": "--output",
                  "--parsable": "how the job ids are read", "--kill-on-invalid-dep": "the chain's order",
                  "--wrap": "each job's script"}
_FLAG_OPTIONS = {"--partition": "--slurm_partition", "-p": "--slurm_partition", "--account": "--slurm_account",
                 "-A": "--slurm_account", "--qos": "--slurm_qos", "-q": "--slurm_qos", "--cpus-per-task": "--slurm_cpus",
                 "-c": "--slurm_cpus", "--gres": "--slurm_gpus", "--gpus": "--slurm_gpus", "-G": "--slurm_gpus",
                 "--gpus-per-task": "--slurm_gpus", "--mem": "--slurm_mem", "--time": "--slurm_time", "-t": "--slurm_time"}


def refuse_chain_options(extra: Sequence[str]) -> None:
    """Raise :class:`SlurmError` when ``--slurm_args`` sets an option the chain sets itself
    (``--dependency``, ``--array``, ...), or one a ``--slurm_*`` flag sets and checks.

    Examples
    --------
    >>> refuse_chain_options(["--constraint=a100", "--exclusive"])
    >>> refuse_chain_options(["--dependency=afterany:1"])  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    SlurmError: --slurm_args sets --dependency, which --mode slurm sets itself ...
    """
    for token in extra:
        name = token.split("=", 1)[0] if token.startswith("--") else token[:2] if token.startswith("-") else ""
        if name in _CHAIN_OPTIONS:
            what = _CHAIN_OPTIONS[name]
            what = _CHAIN_OPTIONS.get(what, what)
            raise SlurmError(f"--slurm_args sets {name}, which --mode slurm sets itself for {what}: sbatch would keep "
                             "the last one given and the chain would run out of order. Leave it out (to start after "
                             "another job, submit once that job has ended)")
        if name in _FLAG_OPTIONS:
            raise SlurmError(f"--slurm_args sets {name}: give it with {_FLAG_OPTIONS[name]}, which checks it against "
                             "the cluster (an option repeated in --slurm_args would override it unchecked)")


def sbatch_command(res: Resources, script: Path, *, name: str, log: Path, gpus: int, array: str | None = None,
                   dependency: str | None = None) -> list[str]:
    """The ``sbatch`` command line of one job."""
    cmd = ["sbatch", "--parsable", f"--job-name={name}", f"--output={log}", f"--cpus-per-task={res.cpus_per_task}"]
    for flag, value in (("partition", res.partition), ("account", res.account), ("qos", res.qos),
                        ("mem", res.mem), ("time", res.time)):
        if value:
            cmd.append(f"--{flag}={value}")
    if gpus:
        cmd.append(f"--gres=gpu:{gpus}")
    if array:
        cmd.append(f"--array={array}")
    if dependency:
        cmd += [f"--dependency={dependency}", "--kill-on-invalid-dep=yes"]
    return cmd + list(res.extra) + [str(script)]


def _script(title: str, commands: list[list[str]], gpus: int) -> str:
    lines = ["#!/bin/bash", f"# {title}", f"# written by run_auto3dseg.py --mode slurm on {time.strftime('%Y-%m-%d %H:%M')}",
             "set -euo pipefail",
             "# threads per process: the task's CPUs shared by its training processes",
             f"export OMP_NUM_THREADS=$(( ${{SLURM_CPUS_PER_TASK:-1}} / {max(1, gpus)} ))",
             "[ \"$OMP_NUM_THREADS\" -ge 1 ] || export OMP_NUM_THREADS=1",
             "export MKL_NUM_THREADS=$OMP_NUM_THREADS PYTHONUNBUFFERED=1",
             f"cd {shlex.quote(str(_PROJECT_ROOT))}"]
    for c in commands:
        lines.append(" ".join(a if a.startswith('"$') else shlex.quote(a) for a in c))
    return "\n".join(lines) + "\n"


def bundle_names(work_dir: str | os.PathLike, algos: Sequence[str]) -> list[str]:
    """Generated bundles of ``algos`` in ``work_dir``, sorted: array task i trains the i-th."""
    return [b.name for b in list_bundles(Path(work_dir)) if b.algo in algos]


def _expected_bundles(datalist: Path, algos: Sequence[str], num_fold: int | None) -> list[str]:
    """The bundles generate makes for ``algos`` (``<algo>_<fold>``); ValueError, as generate's,
    when ``num_fold`` asks for folds the datalist has no training item in."""
    dl = json.loads(datalist.read_text())
    present = sorted({int(it["fold"]) for it in dl.get("training") or [] if isinstance(it, dict) and "fold" in it})
    folds = int(num_fold or dl.get("num_folds") or 1 + max(present, default=0))
    if present and (missing := [f for f in range(folds) if f not in present]):
        raise ValueError(f"{datalist} has no training items in fold(s) {missing}; it has folds {present}. Use "
                         f"--num_fold {len(present)} or re-convert with more folds")
    return sorted(f"{a}_{f}" for a in algos for f in range(folds))


def _active_jobs(work: Path) -> dict[str, str]:
    f = work / SLURM_DIR / JOBS_FILE
    if not f.is_file():
        return {}
    ids = [str(j) for j in json.loads(f.read_text()).get("jobs", {}).values() if j]
    if not ids:
        return {}
    out = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T"]) if ids else ""
    return {i: s for i, s in (line.split("|", 1) for line in out.splitlines() if "|" in line) if s in _ACTIVE}


@dataclass
class SubmitResult:
    jobs: dict[str, str] = field(default_factory=dict)  # step -> job id
    commands: list[list[str]] = field(default_factory=list)
    scripts: dict[str, str] = field(default_factory=dict)
    bundles: list[str] = field(default_factory=list)
    array: str = ""
    notes: list[str] = field(default_factory=list)


def _without(args: Sequence[str], flag: str) -> list[str]:
    """``args`` less ``flag`` and its value.

    >>> _without(["--truth", "t", "--postprocess_params", "p.yaml"], "--postprocess_params")
    ['--truth', 't']
    """
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        else:
            out.append(a)
    return out


def submit_pipeline(work_dir: str | os.PathLike, datalist: str | os.PathLike, *, res: Resources,
                    algos: Sequence[str], num_fold: int | None = None, generate_args: Sequence[str] = (),
                    train_args: Sequence[str] = (), ensemble_args: Sequence[str] = (),
                    submit_args: Sequence[str] = (), submit: bool = True, dry_run: bool = False,
                    force: bool = False, oof_args: Sequence[str] | None = None,
                    tune_args: Sequence[str] | None = None, dataroot: str | None = None) -> SubmitResult:
    """Submit what is unfinished of analyze → generate → train array → ensemble (→ submit).

    Parameters
    ----------
    generate_args, train_args, ensemble_args, submit_args : sequences of str
        Extra ``run_auto3dseg.py`` flags of generation, training, the ensemble and the
        submission (e.g. ``--num_epochs 50``, ``--override num_workers=8``, ``--truth DIR``).
    submit : bool
        Run ``--mode submit`` after the ensemble.
    oof_args : sequence of str, optional
        Run ``--mode oof`` (out-of-fold maps, cross-validated score) last, with these flags.
    tune_args : sequence of str, optional
        With ``oof_args``: then ``--mode tune_postprocess`` with these flags, and the
        submission again (with the tuned parameters).
    force : bool
        Submit even when jobs of an earlier chain are still pending or running.
    dataroot : str, optional
        ``--dataroot`` of the prep job (later steps read the one ``input.yaml`` records).
    """
    work = Path(work_dir).resolve()
    datalist = Path(datalist).resolve()
    result = SubmitResult()
    if not dry_run and not force:
        active = _active_jobs(work)
        if active:
            raise SlurmError(f"jobs of the chain submitted before for {work} are still active "
                             f"({', '.join(f'{i} {s}' for i, s in active.items())}): watch them with squeue, cancel "
                             "them with scancel, or wait; a re-run after that submits only what is unfinished")
    py, script = sys.executable, str(_PROJECT_ROOT / "run_auto3dseg.py")
    plain = [py, script, "--work_dir", str(work)]  # modes that read no --algos (it would be refused)
    base = [*plain, "--algos", *algos]
    existing = bundle_names(work, algos)
    expected = _expected_bundles(datalist, algos, num_fold)
    lacking = [n for n in expected if n not in existing]  # a network or fold added to the command: generated first
    need_prep = not existing or bool(lacking) or not (work / "datastats.yaml").is_file()
    names = sorted(set(existing) | set(expected))  # as the array's --task_index will find them after the prep job
    done = {b.name for b in list_bundles(work) if (b.path / DONE_MARKER).is_file()}
    todo = [i for i, n in enumerate(names) if n not in done]
    result.bundles = names
    result.array = ",".join(str(i) for i in todo)
    slurm_dir, logs = work / SLURM_DIR, work / LOGS_DIR
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", work.name)[:40]
    steps: list[tuple[str, str, list[list[str]], int, str | None]] = []
    if need_prep:
        fold_args = ["--num_fold", str(num_fold)] if num_fold else []
        root = ["--dataroot", str(Path(dataroot).resolve())] if dataroot else []
        steps.append(("prep", "analyze the data and generate the bundles", [
            [*plain, "--mode", "analyze", "--datalist", str(datalist), *root, "--workers",
             '"$(( SLURM_CPUS_PER_TASK - 1 ))"'],
            [*base, "--mode", "generate", "--datalist", str(datalist), *root, *fold_args, *generate_args]], 0, None))
    if todo:
        gpu_flag = str(res.gpus_per_task) if res.gpus_per_task else "cpu"
        steps.append(("train", "train one bundle: the array task index picks it among the work dir's bundles", [
            [*base, "--mode", "train", "--task_index", '"$SLURM_ARRAY_TASK_ID"', "--gpus", gpu_flag, *train_args]],
            res.gpus_per_task, result.array))
    final = [[*base, "--mode", "ensemble", "--require_trained", *ensemble_args]]
    if submit:
        final.append([*base, "--mode", "submit", "--require_trained", *submit_args])
    if oof_args is not None:
        final.append([*base, "--mode", "oof", "--require_trained", *ensemble_args, *oof_args])
        if tune_args is not None:
            final.append([*plain, "--mode", "tune_postprocess", *tune_args])
            if submit:  # the tuned file holds --postprocess_params' values: passing them again would shadow it
                final.append([*base, "--mode", "submit", "--require_trained", *_without(submit_args,
                                                                                         "--postprocess_params")])
    steps.append(("final", "ensemble the trained bundles" + (" and write the submission" if submit else "")
                  + (", the out-of-fold maps and the cross-validated score" if oof_args is not None else ""), final,
                  1 if res.gpus_per_task else 0, None))

    previous: str | None = None
    for step, title, commands, gpus, array in steps:
        path = slurm_dir / f"{step}.sbatch"
        text = _script(f"{step}: {title} ({work})", commands, gpus)
        result.scripts[step] = text
        dep = None
        if previous is not None:
            dep = f"{'afterany' if step == 'final' else 'afterok'}:{previous}"
        log = logs / ("%x-%A_%a.out" if array else "%x-%j.out")
        cmd = sbatch_command(res, path, name=f"a3d-{step}-{tag}", log=log, gpus=gpus, array=array, dependency=dep)
        result.commands.append(cmd)
        if dry_run:
            previous = f"<{step} job id>"
            continue
        slurm_dir.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        job = _run(cmd).strip().split(";")[0]
        result.jobs[step] = job
        previous = job
    if not need_prep:
        result.notes.append(f"bundles exist ({len(names)}): no prep job")
    elif existing and lacking:
        result.notes.append(f"{', '.join(lacking)} not generated yet: the prep job generates {'it' if len(lacking) == 1 else 'them'} "
                            f"(the {len(existing)} bundle(s) there are kept)")
    if not todo:
        result.notes.append("every bundle is trained: no training job")
    if not dry_run:
        record = {"submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "jobs": result.jobs, "bundles": names,
                  "array": result.array, "resources": asdict(res), "commands": result.commands}
        tmp = slurm_dir / f".tmp-{os.getpid()}-{JOBS_FILE}"
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, slurm_dir / JOBS_FILE)
    return result


def how_to_watch(result: SubmitResult, work: Path) -> list[str]:
    """Lines telling the user how to watch, cancel and resume the chain."""
    ids = ",".join(result.jobs.values())
    return [f"  watch:   squeue -j {ids}    (and sacct -j {ids} where accounting is enabled)",
            f"  logs:    {work / LOGS_DIR}/",
            f"  cancel:  scancel {ids.replace(',', ' ')}",
            "  resume:  run the same command again: it submits only what is unfinished"]
