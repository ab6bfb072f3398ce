"""What training writes after each epoch, in an order a kill cannot turn into a wrong result.

``last.pt`` is the commit point: it holds the weights, optimiser, random states *and* the
progress list. After an epoch the files go, each to a temporary name and then renamed:

1. ``model.pt`` (only when the epoch improved);
2. ``last.pt`` (with the progress list);
3. ``progress.yaml`` (what MONAI's ``get_score`` reads), rewritten from that list;
4. ``training_state.yaml``.

A kill before 2 resumes from the previous epoch, which is trained again exactly (resume is
exact) and rewrites the same ``model.pt``; a kill after 2 resumes after this epoch. On resume
``progress.yaml`` is rewritten from ``last.pt``, so it never keeps an entry of an epoch the
checkpoint does not have (which the re-trained epoch would then append a second time).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from auto3dseg.bundles.config import write_yaml_atomic

__all__ = ["CheckpointError", "CheckpointWriteError", "atomic_torch_save", "load_checkpoint", "resume_progress", "write_progress"]


class CheckpointError(RuntimeError):
    """A damaged checkpoint; the message names it and what to do."""

    user_message = True


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (a full disk, a quota, a file-size limit)."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``.tmp-<pid>-<name>``, then rename onto ``path``.

    A failed write (torch reports a full disk as ``RuntimeError: ... iostream error``, naming no
    file) is a :class:`CheckpointWriteError` naming ``path``; the temporary is removed and the
    previous checkpoint stays.
    """
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        torch.save(obj, tmp)
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointWriteError(
            f"{path}: cannot write the checkpoint ({reason}); is the disk full or a quota or file-size limit "
            f"reached (df -h {path.parent}; ulimit -f)? Free space and run the same command again: training "
            "resumes from the last checkpoint written") from exc
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, fix: str) -> dict:
    """``torch.load`` of a checkpoint; a truncated or corrupt file is a :class:`CheckpointError` naming
    it and saying ``fix`` (what to do)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickle, zip and EOF errors all mean "this file is damaged"
        raise CheckpointError(f"{path} is damaged and cannot be read ({type(exc).__name__}: {exc}). {fix}") from exc
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint of this project. {fix}")
    return dict(ckpt)


def write_progress(ckpt_dir: Path, progress: list) -> None:
    """``<ckpt_dir>/progress.yaml`` (MONAI reads ``[-1]["best_avg_dice_score"]``)."""
    write_yaml_atomic(ckpt_dir / "progress.yaml", progress)


def resume_progress(ckpt: Mapping[str, Any], ckpt_dir: Path, epochs_done: int) -> list:
    """The progress list of a resumed run, and ``progress.yaml`` made to agree with it.

    From ``last.pt`` when it holds one; an older checkpoint without it keeps the entries of
    ``progress.yaml`` up to ``epochs_done``.
    """
    import yaml

    f = ckpt_dir / "progress.yaml"
    on_disk = (yaml.safe_load(f.read_text()) or []) if f.is_file() else []
    if "progress" in ckpt:
        progress = list(ckpt["progress"])
    else:
        progress = [p for p in on_disk if int(p.get("best_avg_dice_score_epoch", 0)) <= epochs_done]
    if progress != on_disk:
        write_progress(ckpt_dir, progress)
    return progress
