"""Maps a run would write over are moved to ``<folder>/replaced/<what>-<time>/`` first, never lost.

Probability maps made by other bundles (trained again, another method or ``--algos``), and maps
no manifest lists (left by a killed run, or dropped from the list by a later run), cannot be
made again once their models are gone: a run that would write over them moves them aside and
says where. Maps made by the same weights are predicted again in place (``--force``).

The maps are moved first and the manifest last: a run killed part-way leaves the manifest
where it was, naming what is still to move, and the next run moves the rest into the same
folder (it is marked :data:`MOVING` until the move is whole).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from auto3dseg.ensembling.probability_maps import PROB_SUFFIXES

__all__ = ["REPLACED", "keep_maps", "maps_in"]

REPLACED = "replaced"
#: in a ``replaced/<what>-<time>/`` folder while files are moved into it
MOVING = ".moving"


def maps_in(folder: str | os.PathLike) -> list[str]:
    """Names of the probability maps directly in ``folder`` (either format), sorted.

    >>> maps_in("/no/such/folder")
    []
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(PROB_SUFFIXES) and not p.name.startswith("."))


def keep_maps(folder: str | os.PathLike, maps: Sequence[str], *, what: str, why: str,
              manifests: Sequence[str] = (), copies: Sequence[str] = (),
              log: Callable[[str], object] = print) -> Path | None:
    """Move ``maps`` (then ``manifests``) that exist in ``folder`` into a new
    ``folder/replaced/<what>-<time>/``, copy ``copies`` there (a manifest the run rewrites
    itself), and say so. None when nothing was there.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "a_prob.zarr").mkdir(), (d / "run.json").write_text("{}")
    >>> dest = keep_maps(d, ["a_prob.zarr", "b_prob.zarr"], what="ensemble", why="other bundles",
    ...                  manifests=["run.json"], log=lambda m: None)
    >>> sorted(p.name for p in dest.iterdir()), (d / "a_prob.zarr").exists()
    (['a_prob.zarr', 'run.json'], False)
    """
    folder = Path(folder)
    moved = [folder / n for n in [*maps, *manifests] if (folder / n).exists()]
    copied = [folder / n for n in copies if (folder / n).is_file()]
    if not moved:
        return None
    dest = _cut_short(folder, what, [p.name for p in moved])  # its other maps went there: keep them together
    if dest is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest, n = folder / REPLACED / f"{what}-{stamp}", 1
        while dest.exists():
            dest, n = folder / REPLACED / f"{what}-{stamp}-{n}", n + 1
        dest.mkdir(parents=True)
    resumed = (dest / MOVING).exists()
    (dest / MOVING).write_text("")  # removed once every file is moved: a folder still holding it was cut short
    for path in copied:
        shutil.copy2(path, dest / path.name)
    for k, path in enumerate(moved):  # the maps first, a manifest last (see the module docstring)
        try:
            os.replace(path, dest / path.name)
        except OSError as exc:  # half moved: say so, and that the same command finishes it
            raise RuntimeError(f"{path}: {exc.strerror} while moving the earlier maps aside ({k} of {len(moved)} "
                               f"files{' (maps, then the manifest)' if manifests else ''} moved to {dest}; nothing "
                               "was written over): make it movable (its permissions or "
                               "attributes) and run the same command again, which moves the rest first") from exc
    (dest / MOVING).unlink()
    maps_moved = sum(1 for p in moved if p.name.endswith(PROB_SUFFIXES))
    log(f"note: {maps_moved} earlier map(s) ({why}) moved to {dest}"
        + (", beside those a move cut short had put there" if resumed else "")
        + ": kept, not written over (delete the folder when no longer needed: maps are large)")
    return dest


def _cut_short(folder: Path, what: str, names: Sequence[str]) -> Path | None:
    """The newest ``replaced/<what>-*`` folder whose move was cut short (it still holds the
    :data:`MOVING` marker) and holds none of ``names``, else None."""
    found = sorted((p for p in (folder / REPLACED).glob(f"{what}-*") if (p / MOVING).is_file()),
                   key=lambda p: p.stat().st_mtime)
    if found and not any((found[-1] / n).exists() for n in names):
        return found[-1]
    return None
