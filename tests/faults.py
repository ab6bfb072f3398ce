"""Fault injection for tests: run a command in a child Python that dies or fails at a chosen point.

A real process (and every Python it starts: the fault is armed by ``fault_site/sitecustomize.py``,
counting renames per process) is killed with SIGKILL (no ``finally``, no ``atexit``) at the moment it renames a
file onto a chosen name, before or after the rename, so a test can ask "what does a kill at this
point leave, and does a re-run recover?". A failing write uses ``RLIMIT_FSIZE``: every write past
the limit fails with ``EFBIG`` as on a full disk, without mounting anything.

Example
-------
>>> proc = run_faulty(["-m", "converters.cellmap.convert", ...],
...                   kill_at="datalist.json", when="before")  # doctest: +SKIP
>>> proc.returncode == -9  # doctest: +SKIP
True
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[1]

SITE = Path(__file__).resolve().parent / "fault_site"  # its sitecustomize.py arms the fault


def run_faulty(args: Sequence[str], *, kill_at: str | None = None, when: str = "before", nth: int = 1,
               max_file_bytes: int | None = None, cwd: str | os.PathLike[str] | None = None,
               env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` with a fault: SIGKILL at a rename, or writes failing past a size.

    Parameters
    ----------
    args : sequence of str
        What follows ``python``: ``["-m", "module", ...]`` or ``["script.py", ...]``.
    kill_at : str, optional
        Shell pattern of a file name (``"datalist.json"``, ``"*.pt"``); the process kills itself
        with SIGKILL at the ``nth`` rename onto a matching name.
    when : {"before", "after"}
        Kill just before that rename or just after it.
    nth : int
        Which matching rename (1 = the first).
    max_file_bytes : int, optional
        ``RLIMIT_FSIZE``: writing past this many bytes in any file fails with ``EFBIG``.
    cwd, env, timeout
        As for :func:`subprocess.run`; ``env`` is added to the current environment.

    Returns
    -------
    subprocess.CompletedProcess
        ``returncode`` is ``-9`` when the kill happened.
    """
    if when not in ("before", "after"):
        raise ValueError(f"when must be 'before' or 'after', not {when!r}")
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), str(ROOT), full_env.get("PYTHONPATH")]))
    for key in ("FAULT_KILL_AT", "FAULT_WHEN", "FAULT_NTH", "FAULT_FSIZE"):
        full_env.pop(key, None)
    if kill_at:
        full_env.update(FAULT_KILL_AT=kill_at, FAULT_WHEN=when, FAULT_NTH=str(nth))
    if max_file_bytes is not None:
        full_env["FAULT_FSIZE"] = str(int(max_file_bytes))
    return subprocess.run([sys.executable, *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def retrain_weights(weights: Path) -> None:
    """Rewrite a bundle's checkpoint with other values, as training it again would (a new file
    time alone is what ``cp -r`` leaves, and is no change)."""
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    first = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][first] = ckpt["state_dict"][first] + 1e-3
    torch.save(ckpt, weights)
    bundle = weights.parent.parent  # training again also records the digests of what it wrote
    record_path = bundle / "training_done.json"
    if record_path.exists():
        from auto3dseg.ensembling.weights_stamp import weights_stamp

        record = json.loads(record_path.read_text())
        if isinstance(record.get("weights_digest"), dict):
            record["weights_digest"] = {w[0]: w[2] for w in weights_stamp(bundle)}
            record_path.write_text(json.dumps(record))
