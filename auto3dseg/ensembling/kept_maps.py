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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from auto3dseg.ensembling.probability_maps import PROB_SUFFIXES

__all__ = ["MOVING", "REPLACED", "keep_maps", "keep_other_images_map", "made_by_note", "maps_in"]

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


def made_by_note(previous: Mapping[str, Any], made: str, chosen: Sequence[Mapping[str, Any]], sig: str) -> str:
    """What made the earlier maps, beside the bundles now chosen: the same names are other
    weights (trained again, or another work_dir's), or the same weights with(out) --tta."""
    from monai.utils.enums import AlgoKeys

    if {str(b.get("name")) for b in previous.get("bundles", [])} != {str(a[AlgoKeys.ID]) for a in chosen}:
        return f"made by {made}"
    before = str(previous.get("signature", ""))
    if before.removesuffix("-tta") == sig.removesuffix("-tta"):
        return f"made by {made} {'with' if before.endswith('-tta') else 'without'} test-time mirroring (--tta)"
    return f"made by other weights of {made}"


def keep_other_images_map(out: Path, owner: str | None, image: str, out_dir: Path, log) -> None:
    """``out`` holds the map of ``owner``, another image of the same file name (predicted into the
    same folder before), or a map no manifest lists (``owner`` None: left by a killed run, or dropped
    from the list by a later one): move it to ``replaced/`` with a note, not overwrite it without a word."""
    from auto3dseg.orchestration.workdir import move_aside, moved_key

    if not out.exists() or owner == image or (owner is not None and moved_key(owner) == moved_key(image)):
        return
    if owner is None:
        keep_maps(out_dir, [out.name], what="unlisted-map", why=f"{out.name}, which no manifest lists: left by an "
                  "interrupted run, or dropped from the list by a later one", log=log)
        return
    kept = move_aside(out, out_dir)
    log(f"note: {out.name} in {out_dir} held the map of another image of the same file name ({owner}): moved to "
        f"{kept}; the map of {image} takes its place (predict each into its own --output_dir to keep both)")
