"""Warnings for submissions that score badly, or too well, for a reason no model earned.

Every check returns a list of warnings, each ``{"crop", "label", "kind", "message"}``
(see :func:`make_warning`); :mod:`auto3dseg.evaluation.score` collects them under both
rule sets into the JSON ``warnings`` list, the Markdown report and stderr.

=====================  ==============================================================
kind                   raised when
=====================  ==============================================================
``axis_order``         the array lies outside the crop as written, or its foreground
                       shares under half of the smaller of it and the truth's foreground
                       as written but at least half (and twice as much) with its
                       ``translation`` and/or ``voxel_size`` read the other way round
``outside_crop``       the array does not reach the crop at all, either way round
``label_is_group``     the label is a group (e.g. multiscale ``s0``): scored missing
``bare_crop_dir``      a folder ``<N>/`` instead of ``crop<N>/``
``uint8_wrapped``      an instance array in (u)int8 whose largest id is 255 and that has
                       more connected components than ids: ids probably wrapped
``missing_label``      a (crop, label) of the truth that the submission lacks
``too_many_instances`` a crop with far too many predicted objects (skipped or failed)
``skipped_everywhere`` an instance class whose every crop was skipped for too many
                       objects: the official rules give it 1.0
``skipped_or_empty``   an instance class scoring 1.0 only from crops skipped for too many
                       objects and crops with no object on either side
``early_offset``       the official snapping of the translation puts the array at least
                       one whole voxel from where it lies (e.g. one voxel early when the
                       crop starts half a voxel off the lattice); names the offset
``float_instance_ids`` float instance ids that resampling blurred into values no object
                       has (each becomes an object)
``matching_tie``       two matchings cost the same and OR-tools, the official solver, is
                       not installed: the Hausdorff term may differ from the official one
``float_semantic``     a semantic array with values strictly between 0 and 1
``no_translation``     / ``no_voxel_size``: the attribute is absent
``truth_unknown``      an 8-bit truth with value 255 (official: semantic foreground, or one
                       more instance object; strict: left out)
``not_in_manifest``    / ``no_truth`` / ``grid_mismatch``: truth and manifest (or submission) disagree
``shape_mismatch``     the array's shape differs from its ``shape`` attribute, or from the
                       crop's while it has the crop's voxel size and translation (official
                       rules; the strict ones refuse the former)
``zarr_newer_than_zip`` a folder's zip was scored, but a ``*.zarr`` beside it was changed
                       after it (official rules)
=====================  ==============================================================

>>> make_warning(101, "ves", "missing_label", "not in the submission")["kind"]
'missing_label'
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cc3d
import numpy as np

from converters.geometry import Grid

__all__ = [
    "axis_order_warnings",
    "early_offset_warnings",
    "float_instance_warnings",
    "format_warning",
    "make_warning",
    "newer_zarr_warnings",
    "shape_mismatch_warnings",
    "skipped_class_warnings",
    "uint8_wrap_warnings",
    "unknown_truth_warnings",
    "value_warnings",
]

# Share of the smaller foreground (prediction or truth) that marks a placement as right.
MIN_SWAP_OVERLAP = 0.5
Placer = Callable[[Sequence[float] | None, Sequence[float] | None], np.ndarray]


def make_warning(crop: int | str, label: str, kind: str, message: str) -> dict[str, Any]:
    """One warning record; ``crop`` is the crop number (or a folder name when it has none)."""
    return {"crop": crop, "label": label, "kind": kind, "message": message}


def format_warning(w: dict[str, Any]) -> str:
    """The one-line form used on stderr and in the Markdown report.

    >>> format_warning(make_warning(3, "er", "no_translation", "assumed 0"))
    'crop3/er [no_translation]: assumed 0'
    """
    crop = f"crop{w['crop']}" if isinstance(w["crop"], int) else str(w["crop"])
    return f"{crop}/{w['label']} [{w['kind']}]: {w['message']}"


def _box(origin: Sequence[float], spacing: Sequence[float], shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    o, s, n = (np.asarray(v, float) for v in (origin, spacing, shape))
    return o - s / 2, o + (n - 0.5) * s


def _overlaps(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return bool(np.all(a[0] < b[1]) and np.all(b[0] < a[1]))


def axis_order_warnings(crop: int, label: str, shape: Sequence[int], voxel_size: Sequence[float] | None,
                        translation: Sequence[float] | None, target: Grid, placed: np.ndarray,
                        truth: np.ndarray, place: Placer) -> list[dict[str, Any]]:
    """Does the array's ``translation`` or ``voxel_size`` look written x, y, z?

    Parameters
    ----------
    shape, voxel_size, translation
        The submitted array's shape and attributes (None when absent).
    target : Grid
        The crop's grid.
    placed : ndarray
        The array as the active rules put it on ``target``.
    truth : ndarray
        The truth on ``target`` (foreground ``> 0``).
    place : callable
        ``place(voxel_size, translation)`` → the array on ``target`` with other attributes,
        by the active rules (called only when the placement as written shares under half).

    Examples
    --------
    >>> g = Grid((4.0, 4.0, 4.0), (8.0, 8.0, 8.0), (2, 2, 2))
    >>> w = axis_order_warnings(1, "er", (2, 2, 2), (8, 8, 8), (4.0, 4.0, 9004.0), g,
    ...                         np.zeros((2, 2, 2)), np.ones((2, 2, 2)), lambda v, t: np.ones((2, 2, 2)))
    >>> [x["kind"] for x in w]
    ['outside_crop']
    """
    if translation is None:
        return []
    tr = tuple(translation)
    crop_box = _box(target.origin, target.spacing, target.shape)
    if voxel_size is None:
        # Not resampled: padded/cropped about its centre to the crop's shape, then shifted; so
        # only the translation can be reversed, and each variant is placed the same way.
        vs: tuple[float, ...] | None = None
        variants: list[tuple[str, Any, tuple[float, ...]]] = [("translation", None, tr[::-1])] if tr[::-1] != tr else []
    else:
        vs = tuple(voxel_size)
        variants = [(name, v, t) for name, v, t in (
            ("translation", vs, tr[::-1]), ("voxel_size", vs[::-1], tr),
            ("translation and voxel_size", vs[::-1], tr[::-1])) if (v, t) != (vs, tr)]

    def extent(v: Sequence[float] | None, t: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        return _box(t, target.spacing, target.shape) if v is None else _box(t, v, shape)

    written = f"translation {list(tr)}" + (f", voxel_size {list(vs)}" if vs is not None else "")
    if not _overlaps(extent(vs, tr), crop_box):
        for name, v, t in variants:
            if _overlaps(extent(v, t), crop_box):
                return [make_warning(crop, label, "axis_order",
                                     f"the array lies outside the crop as written ({written}), but inside it "
                                     f"with its {name} read the other way round: {name} written x, y, z? "
                                     "CellMap attributes are z, y, x")]
        return [make_warning(crop, label, "outside_crop",
                             f"the array ({written}, shape {list(shape)}) does not reach the crop "
                             f"(translation {list(target.origin)}, shape {list(target.shape)}): it scores as empty")]
    truth_fg = np.asarray(truth) > 0
    n_truth = int(np.count_nonzero(truth_fg))

    def shared(fg: np.ndarray) -> float:
        n = min(int(np.count_nonzero(fg)), n_truth)
        return int(np.count_nonzero(fg & truth_fg)) / n if n else 0.0

    as_written = shared(np.asarray(placed) > 0)
    if not variants or not n_truth or as_written >= MIN_SWAP_OVERLAP:
        return []
    for name, v, t in variants:
        if not _overlaps(extent(v, t), crop_box):
            continue
        try:
            swapped = shared(np.asarray(place(v, t)) > 0)
        except ValueError:
            continue
        if swapped >= MIN_SWAP_OVERLAP and swapped >= 2 * as_written:
            return [make_warning(crop, label, "axis_order",
                                 f"its foreground shares {as_written:.0%} of the smaller of it and the truth's as "
                                 f"written ({written}) but {swapped:.0%} with its {name} read the other way round: "
                                 f"{name} written x, y, z? CellMap attributes are z, y, x")]
    return []


def early_offset_warnings(crop: int, label: str, voxel_size: Sequence[float] | None,
                          translation: Sequence[float] | None, target: Grid) -> list[dict[str, Any]]:
    """An array the official snapping puts at least one whole voxel away from where it lies.

    The official scorer floors the array's translation onto the crop's voxel lattice and
    counts whole voxels towards zero, while CellMap crops start half a voxel off that
    lattice (4 + 8k nm at 8 nm): an array that starts inside such a crop lands one voxel
    early. Its own position is where its first voxel lies once resampled to the crop's
    voxel size (edges aligned, as the official resampling does). Without a voxel size the
    array is padded/cropped about its centre instead: not checked.

    >>> g = Grid((4.0, 4.0, 4.0), (8.0, 8.0, 8.0), (20, 20, 20))
    >>> w = early_offset_warnings(3, "mito", (8.0, 8.0, 8.0), (100.0, 4.0, 4.0), g)
    >>> w[0]["kind"], w[0]["offset_voxels"]
    ('early_offset', [-1, 0, 0])
    >>> early_offset_warnings(3, "mito", (8.0, 8.0, 8.0), (4.0, 4.0, 4.0), g)
    []
    """
    if voxel_size is None or translation is None:
        return []
    from auto3dseg.evaluation.resample import official_offset

    v = np.asarray(target.spacing, float)
    own_vs = np.asarray(voxel_size, float)
    first = np.asarray(translation, float) - own_vs / 2 + v / 2  # centre of the first resampled voxel
    lies = (first - np.asarray(target.origin, float)) / v
    lands = official_offset(translation, target)
    off = lands - lies
    if not np.any(np.abs(off) > 0.5 + 1e-6):
        return []
    shift = [int(np.round(x)) if abs(x) > 0.5 + 1e-6 else 0 for x in off]
    axes = ", ".join(f"{abs(n)} voxel{'s' * (abs(n) != 1)} {'early' if n < 0 else 'late'} along {ax}"
                     for ax, n in zip("zyx", shift) if n)
    w = make_warning(crop, label, "early_offset",
                     f"the official scorer places it {axes} (offset {shift} voxels, z, y, x): its translation "
                     f"{[float(x) for x in translation]} is floored onto the crop's {list(target.spacing)} nm "
                     f"lattice, but the crop starts at {list(target.origin)}; write the label on the crop's "
                     "full grid (the manifest's translation and shape) to be scored where it lies")
    w["offset_voxels"] = shift
    return [w]


def float_instance_warnings(crop: int, label: str, src: np.ndarray, placed: np.ndarray,
                            status: str | None = None) -> list[dict[str, Any]]:
    """Float instance ids that resampling blurred into values no object has.

    Float arrays are smoothed (anti-aliased) when shrunk and interpolated between ids, so
    connected components then cut each object into many pieces: a crop skipped for too
    many objects, or objects split.

    >>> src = np.zeros((4, 4, 4), np.float32); src[:2] = 1; src[2:] = 2
    >>> placed = np.linspace(0, 2, 64, dtype=np.float32).reshape(4, 4, 4)
    >>> float_instance_warnings(1, "mito", src, placed)[0]["kind"]
    'float_instance_ids'
    """
    if src.dtype.kind != "f":
        return []
    src_values = np.unique(src)
    values = np.unique(placed)
    n_src, n_placed = int(np.count_nonzero(src_values)), int(np.count_nonzero(values))
    new = int(np.count_nonzero(~np.isin(values[values != 0], src_values)))
    if not new:
        return []
    effect = ("so the crop was skipped for too many objects" if status in ("skipped_too_many_instances",
                                                                          "too_many_instances")
              else "so objects are cut into pieces before matching")
    return [make_warning(crop, label, "float_instance_ids",
                         f"instance ids stored as {src.dtype} ({n_src} ids) were blurred by resampling into "
                         f"{n_placed} distinct values ({new} that no object has), and each value becomes its "
                         f"own object, {effect}: write instance ids as integers (uint16/uint32), which are "
                         "resampled by nearest neighbour")]


def uint8_wrap_warnings(crop: int, label: str, src: np.ndarray) -> list[dict[str, Any]]:
    """An 8-bit instance array whose ids look wrapped (largest id 255, more components than ids).

    >>> a = np.zeros((1, 1, 6), np.uint8); a[0, 0, 0] = 255; a[0, 0, 2] = 255; a[0, 0, 4] = 1
    >>> [w["kind"] for w in uint8_wrap_warnings(1, "ves", a)]
    ['uint8_wrapped']
    """
    if src.dtype not in (np.uint8, np.int8) or src.size == 0 or int(src.max()) < 127:
        return []
    if int(src.max()) != (255 if src.dtype == np.uint8 else 127):
        return []
    n_ids = int(np.count_nonzero(np.unique(src)))
    n_cc = int(cc3d.connected_components(np.ascontiguousarray(src), return_N=True)[1])
    if n_cc <= n_ids:
        return []
    return [make_warning(crop, label, "uint8_wrapped",
                         f"instance ids in {src.dtype} reach {int(src.max())} and {n_cc} connected pieces share "
                         f"{n_ids} ids: ids probably wrapped, so distinct objects share an id "
                         "(write instances as uint16/uint32)")]


def value_warnings(crop: int, label: str, kind: str, src: np.ndarray, rules: str) -> list[dict[str, Any]]:
    """A semantic array with values strictly between 0 and 1 (how each rule set reads it).

    >>> [w["kind"] for w in value_warnings(1, "er", "semantic", np.array([0.0, 0.3, 1.0]), "official")]
    ['float_semantic']
    """
    if kind != "semantic" or src.dtype.kind != "f":
        return []
    n = int(np.count_nonzero((src > 0) & (src < 1)))
    if not n:
        return []
    how = ("the official rules count every value above 0 as foreground at the crop's voxel size "
           "(above 0.5 only after resampling)" if rules == "official"
           else "the strict rules count values above 0 on the crop's own lattice, above 0.5 after interpolation")
    return [make_warning(crop, label, "float_semantic",
                         f"{n} voxels hold values strictly between 0 and 1 ({src.dtype}); {how}: write 0/1")]


def skipped_class_warnings(records: Sequence[dict[str, Any]], labels: dict[str, dict[str, Any]],
                           rules: str) -> list[dict[str, Any]]:
    """Crops skipped for too many objects, and classes skipped in every crop.

    >>> recs = [{"crop": 1, "label": "ves", "kind": "instance", "status": "skipped_too_many_instances",
    ...          "n_pred": 900, "n_truth_max_id": 2}]
    >>> [w["kind"] for w in skipped_class_warnings(recs, {"ves": {"score": 1.0}}, "official")]
    ['too_many_instances', 'skipped_everywhere']
    """
    out = []
    bad = ("skipped_too_many_instances", "too_many_instances")
    for r in records:
        if r.get("kind") == "instance" and r["status"] in bad:
            if rules == "official":
                what = (f"{r.get('n_pred')} predicted objects against a truth whose largest id is "
                        f"{r.get('n_truth_max_id')} ({r.get('reason', 'too many predicted objects')}); skipped: "
                        "the crop adds nothing to the class")
            else:
                what = (f"{r.get('n_pred')} predicted objects for {r.get('n_truth')} true ones; scored 0 "
                        "(the official rules skip such a crop instead)")
            out.append(make_warning(r["crop"], r["label"], "too_many_instances", what))
    for name, entry in labels.items():
        rows = [r for r in records if r["label"] == name]
        if rows and rows[0].get("kind") == "instance" and rules == "official" and entry.get("score") == 1.0:
            skipped = [r for r in rows if r["status"] in bad]
            empty = [r for r in rows if _both_empty(r)]
            if skipped and empty and len(skipped) + len(empty) == len(rows):
                out.append(make_warning("*", name, "skipped_or_empty",
                                        f"scores 1.0 only from {len(skipped)} crop(s) skipped for too many predicted "
                                        f"objects ({_crops(skipped)}) and {len(empty)} with no object on either side "
                                        f"({_crops(empty)}): a figure the leaderboard gives but no prediction earned"))
                continue
        if rows and rows[0].get("kind") == "instance" and all(r["status"] in bad for r in rows):
            if rules == "official":
                msg = (f"every crop ({len(rows)}) was skipped for too many predicted objects, so the class "
                       f"scores {entry['score']} by the official rules: a figure the leaderboard gives "
                       "but no prediction earned")
            else:
                msg = (f"every crop ({len(rows)}) failed for too many predicted objects (0 here); the official "
                       "rules skip such crops and would give the class 1.0")
            out.append(make_warning(rows[0]["crop"] if len(rows) == 1 else "*", name, "skipped_everywhere", msg))
    return out


def _both_empty(r: dict[str, Any]) -> bool:
    """A scored instance crop with no object on either side (it adds nothing to the class)."""
    return (r["status"] == "scored" and not (r.get("tp") or r.get("fp") or r.get("fn"))
            and not r.get("n_hausdorff"))


def _crops(rows: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"crop{r['crop']}" for r in rows)


def unknown_truth_warnings(crop: int, label: str, truth: np.ndarray, kind: str, rules: str) -> list[dict[str, Any]]:
    """An 8-bit truth holding 255 ("unknown"), and what the rules make of it.

    The official scorer takes it as foreground (semantic) or as one more true object
    (instance: a miss unless a prediction covers it); the strict rules leave it out.

    >>> t = np.array([0, 1, 255], np.uint8)
    >>> unknown_truth_warnings(1, "mito", t, "instance", "official")[0]["message"][:41]
    "1 truth voxels are 255 ('unknown'); they "
    """
    if truth.dtype != np.uint8:
        return []
    n = int(np.count_nonzero(truth == 255))
    if not n:
        return []
    if kind == "semantic":
        how = "count as foreground (official rules)" if rules == "official" else "are left out (strict rules)"
    elif rules == "official":
        how = ("count as one more true object, a miss unless predicted, as the official scorer does; "
               "--rules strict leaves them out")
    else:
        how = "are left out: truth and prediction are masked there (strict rules)"
    return [make_warning(crop, label, "truth_unknown", f"{n} truth voxels are 255 ('unknown'); they {how}")]


def _dims(shape: Sequence[int]) -> str:
    return "×".join(str(int(n)) for n in shape)


def shape_mismatch_warnings(crop: int, label: str, shape: Sequence[int], shape_attr: Any,
                            voxel_size: Sequence[float] | None, translation: Sequence[float] | None,
                            target: Grid) -> list[dict[str, Any]]:
    """An array whose shape differs from its own ``shape`` attribute, or from the crop it is written on.

    The official scorer reads no ``shape`` attribute: it resamples the array and pads or
    crops it to the crop's shape, so an array a slice short scores that slice as
    background without a word (the strict rules refuse a wrong attribute). Checked when
    the attribute disagrees with the array, or when the array has the crop's voxel size
    and translation (so it was meant to be the crop) but another shape.

    >>> g = Grid((4.0, 4.0, 4.0), (8.0, 8.0, 8.0), (32, 48, 56))
    >>> w = shape_mismatch_warnings(101, "cyto", (31, 48, 56), [32, 48, 56], (8, 8, 8), (4, 4, 4), g)
    >>> w[0]["message"][:62]
    'the array is 31×48×56, the crop 32×48×56 (its shape attribute '
    >>> shape_mismatch_warnings(101, "cyto", (64, 96, 112), None, (4, 4, 4), (2, 2, 2), g)
    []
    """
    try:
        said = None if shape_attr is None else tuple(int(n) for n in shape_attr)
    except (TypeError, ValueError):
        said = None  # unreadable: the official scorer ignores it too
    shape, crop_shape = tuple(int(n) for n in shape), tuple(int(n) for n in target.shape)
    on_crop_grid = (voxel_size is not None and np.allclose(voxel_size, target.spacing)
                    and (translation is None or np.allclose(translation, target.origin)))
    if not ((said is not None and said != shape) or (on_crop_grid and shape != crop_shape)):
        return []
    attr = f" (its shape attribute says {_dims(said)})" if said is not None else ""
    how = "it reads no shape attribute" if shape == crop_shape else "resized/padded"
    return [make_warning(crop, label, "shape_mismatch",
                         f"the array is {_dims(shape)}, the crop {_dims(crop_shape)}{attr}: scored as the "
                         f"official scorer does ({how}), check the submission")]


def _newest(folder: Path) -> tuple[float, Path]:
    """The latest modification time of ``folder`` or anything in it, and what has it."""
    best = (folder.stat().st_mtime, folder)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            path = Path(dirpath, name)
            try:
                best = max(best, (path.stat().st_mtime, path))
            except OSError:
                continue
    return best


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def newer_zarr_warnings(folder: str | os.PathLike[str], scored_zip: str | os.PathLike[str]
                        ) -> list[dict[str, Any]]:
    """A ``*.zarr`` beside the zip that was scored in its stead, changed after that zip.

    A folder holding a zip is read from that zip, as the official scorer does, even
    beside a ``submission.zarr``: a zarr edited since it was zipped is not what was scored.

    >>> import tempfile, time
    >>> d = Path(tempfile.mkdtemp()); (d / "submission.zip").touch(); (d / "submission.zarr").mkdir()
    >>> os.utime(d / "submission.zip", (time.time() - 600,) * 2)
    >>> [w["kind"] for w in newer_zarr_warnings(d, d / "submission.zip")]
    ['zarr_newer_than_zip']
    """
    folder, scored_zip = Path(folder), Path(scored_zip)
    zipped = scored_zip.stat().st_mtime
    out = []
    for zarr_dir in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.endswith(".zarr")):
        newest, path = _newest(zarr_dir)
        if newest > zipped:
            what = "it" if path == zarr_dir else path.relative_to(folder).as_posix()
            out.append(make_warning("*", "*", "zarr_newer_than_zip",
                                    f"{zarr_dir} was changed after {scored_zip.name} ({what}: "
                                    f"{_age(newest - zipped)} later), but the zip is what was scored (a folder "
                                    "holding both is read from its zip, as the official scorer does): zip it "
                                    f"again, or score the zarr with --submission {zarr_dir}"))
    return out
