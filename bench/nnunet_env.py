"""Helpers of ``bench/compare_nnunet.py``: external commands with logs, and nnU-Net's own environment.

``setup_env`` builds the virtual environment nnU-Net runs in (a CPU torch of our torch's
version, ``nnunetv2`` pinned, the budget trainer of ``bench/nnunet_trainer_budget.py`` copied
where nnU-Net finds trainers by class name); ``run`` runs a command with its output in a log
file and names that log when the command fails.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NNUNET_VERSION = "2.8.1"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TRAINER = "nnUNetTrainerBudget"


class CommandFailed(RuntimeError):
    """An external command exited non-zero; the message names its log."""


def say(msg: str) -> None:
    """Print a progress message."""
    print(f"[compare_nnunet {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], log: Path, env: dict | None = None, what: str = "") -> float:
    """Run ``cmd`` (with ``env``) appending its output to ``log``; return its wall-clock seconds.

    Raises
    ------
    CommandFailed
        Exit status not 0; the message names the command (``what``), the log and its last lines.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"{what or cmd[0]}: running (output: {log})")
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(map(str, cmd))}\n")
        f.flush()
        rc = subprocess.call([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    seconds = time.perf_counter() - t0
    if rc != 0:
        tail = "\n      ".join(log.read_text(errors="replace").splitlines()[-8:])
        raise CommandFailed(f"{what or cmd[0]} failed (exit {rc}) after {seconds:.0f} s; full output in {log}. "
                            f"Last lines:\n      {tail}")
    say(f"{what or cmd[0]}: done in {seconds:.1f} s")
    return seconds


def env_tool(env_dir: Path, name: str) -> str:
    """Path of a console command (or python) inside the nnU-Net environment."""
    return str(env_dir / "bin" / name)


def env_versions(env_dir: Path) -> dict:
    """Versions of torch, torchvision, nnunetv2, numpy and dynamic_network_architectures in the env ({} if none)."""
    code = ("import importlib.metadata as m, json\nv = {}\nfor p in ('torch', 'torchvision', 'nnunetv2', 'numpy', "
            "'dynamic_network_architectures'):\n    try: v[p] = m.version(p)\n    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(v))")
    if not (env_dir / "bin" / "python").exists():
        return {}
    out = subprocess.run([env_tool(env_dir, "python"), "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def install_trainer(env_dir: Path) -> dict:
    """Copy ``nnunet_trainer_budget.py`` where nnU-Net finds trainers; check that it is found.

    nnU-Net's documented place is ``nnunetv2/training/nnUNetTrainer/variants/``. Its search by
    class name imports the subpackages in alphabetical order, ``primus`` (which imports timm,
    hence torchvision) before ``variants``; with a CPU torch and a PyPI torchvision built for
    CUDA, that import fails and no trainer in ``variants/`` can be found. Then the file goes one
    level up, into ``nnUNetTrainer/`` itself, whose modules are searched before any subpackage.

    Returns
    -------
    dict
        ``path`` of the installed file and ``note`` (why there).
    """
    py = env_tool(env_dir, "python")
    pkg = subprocess.run([py, "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    base = Path(pkg) / "training" / "nnUNetTrainer"
    timm = subprocess.run([py, "-c", "import timm"], capture_output=True, text=True)
    documented = base / "variants" / "training_length" / f"{TRAINER}.py"
    if timm.returncode == 0:
        dest, note = documented, "nnU-Net's documented place for trainers (variants/)"
    else:
        last = (timm.stderr.strip().splitlines() or ["?"])[-1]
        dest = base / f"{TRAINER}.py"
        note = (f"placed in nnUNetTrainer/ rather than variants/: 'import timm' fails in this env ({last}), and "
                "nnU-Net's trainer search imports primus/ (timm) before variants/")
    for old in (documented, base / f"{TRAINER}.py"):
        old.unlink(missing_ok=True)
    shutil.copyfile(BENCH / "nnunet_trainer_budget.py", dest)
    check = ("import os, nnunetv2; from nnunetv2.utilities.find_class_by_name import recursive_find_python_class as f; "
             f"c = f(os.path.join(nnunetv2.__path__[0], 'training', 'nnUNetTrainer'), '{TRAINER}', "
             "'nnunetv2.training.nnUNetTrainer'); assert c is not None, 'not found'")
    found = subprocess.run([py, "-c", check], capture_output=True, text=True)
    if found.returncode != 0:
        raise CommandFailed(f"nnU-Net does not find {TRAINER} after copying it to {dest}: "
                            f"{found.stderr.strip()[-600:]}")
    return {"path": str(dest), "note": note}


def setup_env(env_dir: Path, logs: Path) -> dict:
    """Create ``env_dir`` (kept if it holds this nnunetv2): CPU torch of our torch's version,
    ``nnunetv2==NNUNET_VERSION``, the trainer; pip's output to ``logs/setup.log``.

    Returns
    -------
    dict
        Versions, seconds taken and where the trainer went (also in ``env_dir/setup.json``).
    """
    import torch

    t0 = time.perf_counter()
    log = logs / "setup.log"
    torch_version = torch.__version__.split("+")[0]  # the same torch as ours, as a CPU build
    pip = [env_tool(env_dir, "python"), "-m", "pip", "install", "--retries", "2"]
    if env_versions(env_dir).get("nnunetv2") != NNUNET_VERSION:
        if not (env_dir / "bin" / "python").exists():
            run([sys.executable, "-m", "venv", env_dir], log, what="create the venv")
        try:  # torchvision for timm (nnunetv2 needs it): the CPU index's matches a CPU torch; PyPI's is for CUDA
            run(pip + [f"torch=={torch_version}", "torchvision", "--index-url", TORCH_CPU_INDEX], log,
                what="pip: CPU torch + torchvision")
        except CommandFailed:
            say(f"no CPU torchvision to be had; CPU torch alone (see {log})")
            run(pip + [f"torch=={torch_version}", "--index-url", TORCH_CPU_INDEX], log, what="pip: CPU torch")
        pins = env_dir / "constraints.txt"  # keep the CPU torch: nnunetv2's dependencies would replace it
        have = env_versions(env_dir)
        pins.write_text("".join(f"{p}=={have[p]}\n" for p in ("torch", "torchvision") if p in have))
        run(pip + [f"nnunetv2=={NNUNET_VERSION}", "-c", pins], log, what=f"pip: nnunetv2=={NNUNET_VERSION}")
    trainer = install_trainer(env_dir)
    info = {"versions": env_versions(env_dir), "trainer": trainer, "seconds": round(time.perf_counter() - t0, 1),
            "when": datetime.datetime.now().isoformat(timespec="seconds")}
    (env_dir / "setup.json").write_text(json.dumps(info, indent=1))
    say(f"nnU-Net env ready in {info['seconds']:.0f} s: {info['versions']}; trainer: {trainer['note']}")
    return info
