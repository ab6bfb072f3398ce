"""``--mode train``: train the generated bundles, resuming what is unfinished.

Each bundle is trained the way MONAI's ``BundleAlgo.train`` does it,
``python <bundle>/scripts/train.py run --config_file=<configs/*.yaml> --key=value ...``
(under ``torch.distributed.run`` when several GPUs are given), so any template that
follows MONAI's contract trains here. Differences from ``BundleAlgo.train``: the Python
of this environment is used (not whatever ``python`` is on PATH), the output is also
written to ``<bundle>/training.log``, a bundle counts as trained only when its training
exited cleanly (``training_done.json``; an interrupted run that already wrote a best
score in ``progress.yaml`` is *not* done), and one failing bundle does not stop the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auto3dseg.orchestration.locks import Lock, LockBusy, bundle_lock, clean_temporaries
from auto3dseg.orchestration.workdir import DONE_MARKER, Bundle, list_bundles, move_aside, weight_files

__all__ = [
    "TrainReport",
    "available_cpus",
    "device_note",
    "launch_training",
    "overrides_for",
    "parse_gpus",
    "select_bundles",
    "stale_bundles_note",
    "threads_per_process",
    "train_bundle",
    "train_bundles",
    "trained_on_other_files",
    "training_command",
]

_PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TrainReport:
    trained: dict[str, float | None] = field(default_factory=dict)  # name -> score
    already: dict[str, float | None] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # name -> reason

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        fmt = lambda s: "n/a" if s is None else f"{s:.4f}"
        out = [f"trained {n}: best mean Dice {fmt(s)}" for n, s in self.trained.items()]
        out += [f"already trained {n}: best mean Dice {fmt(s)}" for n, s in self.already.items()]
        out += [f"FAILED {n}: {why}" for n, why in self.failed.items()]
        return out


def select_bundles(work_dir: str | os.PathLike, algos: Sequence[str] | None = None,
                   folds: Sequence[int] | None = None) -> list[Bundle]:
    """Bundles of ``work_dir`` restricted to ``algos`` and ``folds`` (None: all)."""
    bundles = [b for b in list_bundles(Path(work_dir).resolve())
               if (not algos or b.algo in algos) and (folds is None or b.fold in folds)]
    return bundles


def parse_gpus(gpus: str | int | None) -> tuple[str | None, int]:
    """``--gpus`` → (CUDA_VISIBLE_DEVICES or None, number of processes).

    ``None``: every visible GPU (CPU if none); an int ``n``: GPUs ``0..n-1``; a list
    ``"0,2"`` (``"0,"`` for GPU 0 alone): those GPUs; ``0`` or ``"cpu"``: CPU.

    >>> parse_gpus("0,2")
    ('0,2', 2)
    >>> parse_gpus("cpu"), parse_gpus("0,")
    (('', 1), ('0', 1))
    """
    if gpus is None:
        import torch

        n = torch.cuda.device_count()
        return None, max(1, n)
    text = str(gpus).strip()
    if text.lower() in ("cpu", "0", "none", ""):
        return "", 1
    if "," in text:
        ids = [i.strip() for i in text.split(",") if i.strip()]
        return ",".join(ids), len(ids)
    n = int(text)
    return ",".join(str(i) for i in range(n)), n


def available_cpus(environ: Mapping[str, str] | None = None) -> int:
    """CPUs this process may use: the SLURM allocation, else the CPU affinity, else the count.

    ``os.cpu_count()`` is the node's count: in a SLURM job of 8 CPUs on a 128-core node,
    sizing threads and loader workers from it oversubscribes the allocation 16 times.
    """
    env = os.environ if environ is None else environ
    if env.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(env["SLURM_CPUS_PER_TASK"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def threads_per_process(nproc: int, environ: Mapping[str, str] | None = None) -> int | None:
    """OMP threads for each of ``nproc`` training processes inside a SLURM allocation
    (its CPUs shared between them); None outside SLURM or when ``OMP_NUM_THREADS`` is set.

    >>> threads_per_process(2, {"SLURM_CPUS_PER_TASK": "16"}), threads_per_process(1, {})
    (8, None)
    """
    env = os.environ if environ is None else environ
    if "OMP_NUM_THREADS" in env or not env.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return None
    return max(1, available_cpus(env) // max(1, nproc))


def device_note(gpus: str | int | None) -> str | None:
    """What ``--gpus`` will do when it cannot mean GPUs (no CUDA device), or None."""
    import torch

    _, nproc = parse_gpus(gpus)
    if gpus is not None and str(gpus).strip() == "0":  # "GPU 0" to a user of CUDA_VISIBLE_DEVICES=0
        return ("note: --gpus 0 is a count: no GPU, training on the CPU (for the first GPU alone give --gpus 1, or "
                "the list '--gpus 0,' with its comma)")
    if torch.cuda.is_available() or gpus is None or str(gpus).strip().lower() in ("cpu", "none", ""):
        return None
    if nproc > 1:
        return (f"note: no CUDA device here: --gpus {gpus} runs {nproc} CPU processes (DistributedDataParallel with "
                "gloo), which trains no faster than one; use --gpus cpu for a single CPU process")
    return f"note: no CUDA device here: --gpus {gpus} trains on the CPU"


def overrides_for(algo: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Overrides that apply to ``algo``: plain keys, and ``algo:key`` ones (prefix removed).

    >>> overrides_for("dints", {"num_workers": 2, "swinunetr:network#feature_size": 12, "dints:num_epochs": 5})
    {'num_workers': 2, 'num_epochs': 5}
    """
    out = {}
    for k, v in (overrides or {}).items():
        prefix, sep, key = str(k).rpartition(":")
        if not sep:
            out[k] = v
        elif prefix == algo:
            out[key] = v
    return out


def _config_files(bundle: Path) -> list[str]:
    cdir = bundle / "configs"
    return [str(cdir / f) for f in sorted(os.listdir(cdir)) if f.endswith(("yaml", "json"))]


def _fire_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(str(x) for x in v) + "]"
    return str(v)


def training_command(bundle: Path, overrides: Mapping[str, Any] | None = None, nproc: int = 1) -> list[str]:
    """The command that trains ``bundle`` (MONAI's calling convention)."""
    script = [str(bundle / "scripts" / "train.py"), "run", "--config_file=" + ",".join(_config_files(bundle))]
    script += [f"--{k}={_fire_value(v)}" for k, v in (overrides or {}).items()]
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
                "--standalone", *script]
    return [sys.executable, *script]


def _score(bundle: Path) -> float | None:
    """best_avg_dice_score from ``<ckpt_path>/progress.yaml`` (what MONAI's get_score reads),
    ``ckpt_path`` evaluated as MONAI does (official templates write ``$@bundle_root + '/model'``)."""
    from auto3dseg.orchestration.workdir import bundle_ckpt_path

    try:
        progress = yaml.safe_load((bundle_ckpt_path(bundle) / "progress.yaml").read_text())
        return float(progress[-1]["best_avg_dice_score"])
    except Exception:  # noqa: BLE001 - no score (or an unreadable config) is recorded as None, never fatal
        return None


def _record_score(bundle: Path, score: float | None) -> None:
    """Store the score in algo_object.json as MONAI's AutoRunner does (``best_metric``), rewritten
    under a temporary name: the file marks the folder as a bundle, a kill must not truncate it."""
    path = bundle / "algo_object.json"
    data = json.loads(path.read_text())
    data["best_metric"] = score
    if isinstance(data.get("_state_"), dict) and "best_metric" in data["_state_"]:
        data["_state_"]["best_metric"] = score
    _write_json_atomic(path, data)


def train_bundle(bundle: Bundle, *, overrides: Mapping[str, Any] | None = None, gpus: str | int | None = None,
                 force: bool = False, log=print) -> tuple[str, float | None, str]:
    """Train one bundle under its lock (:mod:`auto3dseg.orchestration.locks`); returns (status, score, detail)
    with status trained/already/failed (a bundle another run is training: failed, naming it)."""
    done = bundle.done
    if done and not force:
        return "already", done.get("best_avg_dice_score"), ""
    try:
        with bundle_lock(bundle.path, log=log) as lock:
            clean_temporaries(bundle.path, (DONE_MARKER,))
            return _train_locked(bundle, lock, overrides=overrides, gpus=gpus, force=force, log=log)
    except LockBusy as exc:
        return "failed", None, str(exc)


def _train_locked(bundle: Bundle, lock: Lock, *, overrides: Mapping[str, Any] | None, gpus: str | int | None,
                  force: bool, log) -> tuple[str, float | None, str]:
    done = bundle.done  # again: a run that held the lock before us may have finished it
    if done and not force:
        return "already", done.get("best_avg_dice_score"), ""
    if bundle.weights_lost:  # a marker vouching for deleted weights must not outlive this training
        (bundle.path / DONE_MARKER).unlink()
        if (bundle.path / "model").exists():  # resuming its last.pt would "finish" at once, with no best model
            log(f"[{bundle.name}] its best weights are gone: the rest of model/ moved to "
                f"{move_aside(bundle.path / 'model', bundle.path.parent)}; training from the first epoch")
    if force and (bundle.started or done):
        (bundle.path / DONE_MARKER).unlink(missing_ok=True)  # the marker goes first, before what it vouches for
        for sub in ("model",):
            p = bundle.path / sub
            if p.exists():
                log(f"[{bundle.name}] --force: previous {sub}/ moved to {move_aside(p, bundle.path.parent)}")
    visible, nproc = parse_gpus(gpus)
    cmd = training_command(bundle.path, overrides_for(bundle.algo, overrides), nproc)
    env = lock.child_env(os.environ.copy())
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    threads = threads_per_process(nproc, env)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    log_path = bundle.path / "training.log"
    data_files = bundle_data_files(bundle.path)  # before training reads them: an edit meanwhile is seen later
    t0 = time.time()
    with open(log_path, "a") as logf:
        logf.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        logf.flush()
        proc = launch_training(cmd, env, bundle.path, lock)
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            logf.write(line)
            logf.flush()
            if line.startswith("[") or "Error" in line or "error:" in line:
                log(line.rstrip())
            tail = (tail + [line.rstrip()])[-15:]
        rc = proc.wait()
    if rc != 0:
        detail = "\n      ".join(tail[-6:])
        return "failed", None, f"exit code {rc}; see {log_path}. Last lines:\n      {detail}"
    score = _score(bundle.path)
    try:
        _record_score(bundle.path, score)
    except Exception as exc:  # noqa: BLE001 - the done marker is what counts; the algo object is a convenience
        log(f"[{bundle.name}] note: could not record the score in algo_object.json ({exc})")
    from auto3dseg.ensembling.weights_stamp import weights_stamp

    record = {"best_avg_dice_score": score, "seconds": round(time.time() - t0, 1),
              "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "command": cmd,
              "weights": weight_files(bundle.path),  # what the marker vouches for (Bundle.weights_lost)
              "weights_digest": {w[0]: w[2] for w in weights_stamp(bundle.path)},  # a file replaced later is seen
              "training_files": data_files}  # what it learnt from: a file rewritten since is said
    _write_json_atomic(bundle.path / DONE_MARKER, record)  # last: the marker that the bundle is trained
    return "trained", score, ""


def bundle_data_files(bundle: Path) -> dict[str, list[int]]:
    """``[size, mtime_ns]`` of the training files of the datalist a bundle's configs name
    (:func:`auto3dseg.analysis.source_record.training_files`); empty when they name none it can read."""
    from auto3dseg.analysis.source_record import training_files
    from auto3dseg.orchestration.workdir import DATA_KEYS

    found: dict[str, str] = {}
    for f in sorted((bundle / "configs").glob("*.yaml")):
        try:
            cfg = yaml.safe_load(f.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(cfg, dict):
            found.update({k: str(cfg[k]) for k in DATA_KEYS if isinstance(cfg.get(k), str) and k not in found})
    datalist = found.get("data_list_file_path")
    root = found.get("dataroot") or found.get("data_file_base_dir")
    try:
        return training_files(datalist, root) if datalist else {}
    except (OSError, ValueError):
        return {}


def trained_on_other_files(bundle: Bundle) -> list[str]:
    """Training files of ``bundle``'s datalist rewritten since it was trained (its done marker
    records them), and those added or dropped (so marked); empty for bundles trained before
    markers did."""
    recorded = (bundle.done or {}).get("training_files")
    if not isinstance(recorded, dict) or not recorded:
        return []
    now = bundle_data_files(bundle.path)
    if not now:  # its configs or datalist cannot be read now: unknown, and said where they are read
        return []
    def how(k: str) -> str:
        if k not in now:
            return " (no longer in the datalist)"
        if k not in recorded:
            return " (new in the datalist)"
        return SAME_SIZE if list(now[k])[:1] == list(recorded[k])[:1] else ""

    return sorted(k + how(k) for k in set(now) | set(recorded) if now.get(k) != recorded.get(k))


#: how :func:`trained_on_other_files` marks a file whose size is the one trained on, its time not
SAME_SIZE = " (same size, other time)"


def stale_bundles_note(bundles: Sequence[Bundle], consequence: str) -> str | None:
    """One note naming the trained ``bundles`` whose training files changed since they were
    trained (an edited or re-converted label or image), and what follows (``consequence``);
    None when every one was trained on the files as they are."""
    stale = {b.name: changed for b in bundles if b.done and (changed := trained_on_other_files(b))}
    if not stale:
        return None
    files = sorted(set().union(*stale.values()))
    names = ", ".join(list(stale)[:4]) + (f" and {len(stale) - 4} more" if len(stale) > 4 else "")
    one = len(stale) == 1
    if all(f.endswith(SAME_SIZE) for f in files):  # re-converted or copied without times: perhaps the same bytes
        shown = ", ".join(f.removesuffix(SAME_SIZE) for f in files[:3]) + (
            f" and {len(files) - 3} more" if len(files) > 3 else "")
        return (f"note: {len(files)} training file(s) of {names} were written again since {'it was' if one else 'they were'} "
                f"trained, with the same sizes ({shown}): if they were only re-converted or copied, nothing changed; if "
                f"their contents changed, {consequence}, and --mode train --force retrains {'it' if one else 'them'}")
    changed = [f for f in files if not f.endswith(SAME_SIZE)]  # those that surely changed come first
    same = len(files) - len(changed)
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    also = f"; {same} more were written again with the same sizes (perhaps only re-converted)" if same else ""
    return (f"note: {names} {'was' if one else 'were'} trained before {len(changed)} of {'its' if one else 'their'} "
            f"training file(s) changed ({shown}){also}: {consequence}; --mode train --force retrains "
            f"{'it' if one else 'them'} (the old model/ is moved aside)")


def _not_trained_with(bundle: Bundle, overrides: Mapping[str, Any] | None) -> list[str]:
    """The ``key=value`` overrides of ``bundle`` that its training command (in its done marker)
    did not pass: those a run now would change. An override it was trained with is no news."""
    given = overrides_for(bundle.algo, overrides)
    if not given:
        return []
    try:
        command = set(json.loads((bundle.path / DONE_MARKER).read_text()).get("command") or [])
    except (OSError, ValueError, AttributeError):
        command = set()
    return [f"{k}={v}" for k, v in given.items() if f"--{k}={_fire_value(v)}" not in command]


def launch_training(cmd: list[str], env: Mapping[str, str], cwd: Path, lock: Lock) -> subprocess.Popen:
    """Start ``cmd`` (its output piped) under ``lock``: the child keeps the lock file open (the bundle
    stays locked while it trains), is recorded in it, and gets SIGTERM when this process dies, however
    it dies (:mod:`auto3dseg.orchestration.lifetime`; torchrun passes the signal on to its workers)."""
    from auto3dseg.orchestration.lifetime import launcher_command

    proc = subprocess.Popen(launcher_command(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(env), cwd=str(cwd), bufsize=1,
                            pass_fds=(lock.fd,) if lock.fd is not None else ())
    lock.note_child(proc.pid, " ".join(cmd))
    return proc


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def train_bundles(work_dir: str | os.PathLike, *, algos: Sequence[str] | None = None,
                  folds: Sequence[int] | None = None, overrides: Mapping[str, Any] | None = None,
                  gpus: str | int | None = None, force: bool = False, log=print) -> TrainReport:
    """Train every selected bundle one after another (see module docstring)."""
    bundles = select_bundles(work_dir, algos, folds)
    have = select_bundles(work_dir, algos, None) if not bundles and folds is not None else []
    if have:  # bundles there, of other folds
        raise ValueError(f"--fold {' '.join(str(f) for f in folds)}: {work_dir} has no bundle of that fold; its "
                         f"bundles{' of ' + ', '.join(algos) if algos else ''} are "
                         f"{', '.join(b.name for b in have)} (folds "
                         f"{', '.join(str(f) for f in sorted({b.fold for b in have}))})")
    if not bundles:
        raise FileNotFoundError(f"no generated bundles in {work_dir}"
                                + (f" for algos {list(algos)}" if algos else "")
                                + (f" and folds {list(folds)}" if folds is not None else "")
                                + ": run --mode generate first")
    from auto3dseg.bundles.migrate import migrate_work_dir

    migrate_work_dir(work_dir, [b.path for b in bundles], log=log)  # bundles of before the layout change
    for b in bundles:
        if b.weights_lost:
            log(f"note: {b.name}: {b.path / 'training_done.json'} is there but its weights are not (deleted?): "
                "it is trained again")
    todo = [b for b in bundles if force or not b.done]
    unfit: dict[str, str] = {}
    if todo:
        from auto3dseg.orchestration.training_checks import (check_bundles, label_rules_note, preflight_bundles,
                                                             recheck_training_files)

        check_bundles(work_dir, todo, overrides)
        recheck_training_files(work_dir, log)
        label_rules_note(work_dir, log)
        unfit = preflight_bundles(todo, overrides)
    elif overrides:  # nothing trains now, but a typo is still named (it would be met when something does)
        from auto3dseg.bundles.checks import check_overrides

        check_overrides(bundles, overrides, {b.algo for b in list_bundles(Path(work_dir).resolve())})
    if note := stale_bundles_note([b for b in bundles if b not in todo],
                                  "their predictions show what was learnt from the old files"):
        log(note)
    unapplied = {b.name: other for b in bundles if b not in todo and (other := _not_trained_with(b, overrides))}
    if unapplied:  # what they were trained with stays: say so, not drop the flag without a word
        for name, other in unapplied.items():
            log(f"note: {name} is trained already: not retrained with {', '.join(other)} (--force retrains it; "
                "the old model/ is moved aside)")
    report = TrainReport()
    note = device_note(gpus) if todo else None
    if note:
        log(note)
    log(f"{len(bundles)} bundles: {len(bundles) - len(todo)} already trained, {len(todo)} to train")
    for i, b in enumerate(bundles, 1):
        if b.name in unfit:  # reported like a failed training, before anything of it was moved or started
            report.failed[b.name] = unfit[b.name]
            log(f"[{b.name}] FAILED: {unfit[b.name]}")
            continue
        if b in todo:
            log(f"--- [{i}/{len(bundles)}] training {b.name}"
                + (" (from the first epoch: --force)" if force and b.started else " (resuming)" if b.started else ""))
        status, score, detail = train_bundle(b, overrides=overrides, gpus=gpus, force=force, log=log)
        if status == "failed":
            report.failed[b.name] = detail
            log(f"[{b.name}] FAILED: {detail}")
        else:
            getattr(report, status)[b.name] = score
    return report
