"""The training items preprocessed once, as nnU-Net's preprocessing does: a loader then reads
two patches from memory-mapped arrays instead of gunzipping and normalising a whole crop per draw.

One folder per datalist item, ``<cache_dir>/<key>/`` (``cache_dir`` defaults to
``<work_dir>/preprocessed``, shared by every bundle and fold)::

    image.npy    the image as the NIfTI stores it (uint8 EM stays uint8), uncompressed, in the
                 file's axis order x, y, z[, c] (Fortran order: the bytes are the file's bytes)
    label.npy    the label map as uint8, the same layout
    indices.npy  per label value 0..254, a sample of at most ``max_samples_per_class`` of its
                 voxels (flat C-order indices over x, y, z, as ``ClassesToIndicesd`` gives), concatenated
    record.json  written last (the completion marker): format version, the sources' path, size and
                 mtime_ns, the parameters, shapes, dtype, intensity statistics, the indices' offsets
    .build.lock  the entry's flock: one process builds it, the others wait

An entry is used only while its record matches: same format version, same source paths, sizes
and mtime_ns, built with the parameters asked for, every file present at its recorded size.
Otherwise it is rebuilt, and the reason given (``image mtime_ns changed (...)``).

A class's sample is every voxel of it when it has at most ``max_samples_per_class`` (then it
equals ``ClassesToIndicesd``'s), else voxels at evenly spaced ranks as ``ClassesToIndicesd`` takes
them, ranked in file order (x fastest) so that the build streams: deterministic, no seed needed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auto3dseg.engine.input_checks import InputError, NonFiniteImageError, _nonfinite_message
from auto3dseg.engine.stream_stats import ChannelStats, percentile_key
from auto3dseg.orchestration.locks import Lock, clean_temporaries
from converters.outputs import atomic_write, atomic_write_json

__all__ = ["FORMAT_VERSION", "CacheParams", "CachedEntry", "build_cache", "build_entry", "cache_dir_of",
           "ensure_entry", "entry_key", "percentile_key", "stale_reason"]

#: bumped whenever what an entry holds, or how, changes: older entries are rebuilt
FORMAT_VERSION = 1
#: elements read, converted and written at a time while building (bounded memory)
CHUNK = 1 << 23
#: label values that get a sample of voxels (255 marks voxels nobody annotated)
LABEL_VALUES = 255
_FILES = ("image.npy", "label.npy", "indices.npy")


@dataclass(frozen=True)
class CacheParams:
    """What an entry depends on besides its sources.

    >>> CacheParams.from_cfg({"intensity": {"mode": "percentile", "lower": 1, "upper": 99}})
    CacheParams(max_samples_per_class=100000, percentiles=(1.0, 99.0))
    """

    max_samples_per_class: int = 100_000  # 0: every voxel
    percentiles: tuple[float, ...] = ()

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> "CacheParams":
        intensity = cfg.get("intensity") or {}
        qs = ((float(intensity.get("lower", 1.0)), float(intensity.get("upper", 99.0)))
              if intensity.get("mode") == "percentile" else ())
        return cls(int(cfg.get("max_samples_per_class", 100_000) or 0), qs)


def cache_dir_of(cfg: Mapping[str, Any]) -> Path | None:
    """The cache folder of a bundle config (``cache``: default true, also for bundles written before
    the key; ``cache_dir``: default ``<work_dir>/preprocessed``, the bundle's parent), None without one.

    >>> cache_dir_of({"bundle_root": "/w/segresnet_0"}), cache_dir_of({"cache": False, "bundle_root": "/w/x"})
    (PosixPath('/w/preprocessed'), None)
    """
    if not cfg.get("cache", True):
        return None
    if cfg.get("cache_dir"):
        return Path(cfg["cache_dir"])
    return Path(cfg["bundle_root"]).parent / "preprocessed" if cfg.get("bundle_root") else None


def entry_key(image: str | os.PathLike, dataroot: str | os.PathLike | None) -> str:
    """The folder name of an item's entry: its image path under ``dataroot``, made a file name (a
    dataroot moved elsewhere keeps its entries' names: they are then rebuilt, ``path changed``).

    >>> entry_key("/d/images/crop_1.nii.gz", "/d")
    'images__crop_1-6ffb714c'
    """
    path = os.path.abspath(image)
    rel = os.path.relpath(path, os.path.abspath(dataroot)) if dataroot else path
    if rel.startswith(".."):
        rel = path
    stem = re.sub(r"(\.nii)?(\.gz)?$", "", rel.strip("/"))
    name = re.sub(r"[^A-Za-z0-9._-]+", "__", stem)[-80:]
    return f"{name}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def source_stat(path: str | os.PathLike) -> dict[str, Any]:
    """Path, size and mtime_ns of a source file (what its entry's validity rests on)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"not found: {path} (an item of the datalist: fix the path or re-convert)") from None
    return {"path": os.path.abspath(path), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def read_record(folder: Path) -> dict | str | None:
    """An entry's record; None when there is none, a string saying why when it is damaged."""
    try:
        record = json.loads((folder / "record.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"damaged record ({type(exc).__name__})"
    return record if isinstance(record, dict) else "damaged record (not an object)"


def stale_reason(folder: Path, image: str | os.PathLike, label: str | os.PathLike,
                 params: CacheParams) -> str | None:
    """Why the entry in ``folder`` cannot be used for these sources and parameters; None if it can:
    ``missing`` (no record: never built, or its build did not finish), ``damaged ...``, ``format version
    changed``, ``<image|label> <path|size|mtime_ns> changed (old -> new)``, ``max_samples_per_class changed``,
    ``percentile ... missing``."""
    record = read_record(folder)
    if record is None or isinstance(record, str):
        return record or "missing"
    try:
        if record.get("format_version") != FORMAT_VERSION:
            return f"format version changed ({record.get('format_version')} -> {FORMAT_VERSION})"
        for role, path in (("image", image), ("label", label)):
            now, was = source_stat(path), record["sources"][role]
            for field in ("path", "size", "mtime_ns"):
                if was.get(field) != now[field]:
                    return f"{role} {field} changed ({was.get(field)} -> {now[field]})"
        if record["max_samples_per_class"] != params.max_samples_per_class:
            return (f"max_samples_per_class changed ({record['max_samples_per_class']} -> "
                    f"{params.max_samples_per_class})")
        have = record["stats"]["percentiles"]
        for q in params.percentiles:
            if percentile_key(q) not in have:
                return f"percentile {q:g} missing (has {sorted(have)})"
        for name, size in record["files"].items():
            got = (folder / name).stat().st_size if (folder / name).is_file() else None
            if got != size:
                return f"damaged: {name} {'missing' if got is None else f'has {got} bytes, not {size}'}"
    except (KeyError, TypeError, AttributeError) as exc:
        return f"damaged record (no {exc})"
    return None


# ----------------------------------------------------------------------------- reading the NIfTI
def _unreadable(path: Any, exc: BaseException) -> InputError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return InputError(f"{path}: cannot read the image ({reason}); check that it is a complete NIfTI file "
                      "(re-convert or re-copy it)")


def nifti_chunks(path: str | os.PathLike,
                 chunk: int | None = None) -> tuple[tuple[int, ...], np.dtype, Iterator[np.ndarray]]:
    """Shape, dtype and the values of a NIfTI in file order (x fastest), ``chunk`` at a time.

    An unscaled image is streamed from the (gzipped) file as it is; a scaled one (``scl_slope``)
    is read whole through nibabel. Unreadable files raise :class:`InputError` naming them.
    """
    import nibabel as nib

    chunk = int(chunk or CHUNK)
    source_stat(path)  # a missing file is named as such
    try:
        img = nib.load(str(path))
        proxy, shape = img.dataobj, tuple(int(s) for s in img.shape)
        raw = (getattr(proxy, "order", None) == "F" and float(proxy.slope) == 1.0 and float(proxy.inter) == 0.0)
        # scaled values (scl_slope, scl_inter) are read whole: rare, and not streamable as bytes
        whole = None if raw else np.asanyarray(proxy).reshape(-1, order="F")
        dtype = np.dtype(img.get_data_dtype() if raw else whole.dtype).newbyteorder("=")
    except Exception as exc:  # noqa: BLE001 - whatever nibabel raises, the file is unreadable
        raise _unreadable(path, exc) from exc
    if whole is not None:
        return shape, dtype, (whole[s:s + chunk] for s in range(0, whole.size, chunk))

    def stream() -> Iterator[np.ndarray]:
        total, stored = math.prod(shape), np.dtype(img.get_data_dtype())
        opener = gzip.open if str(path).endswith(".gz") else open
        try:
            with opener(path, "rb") as fh:
                fh.seek(int(proxy.offset))
                for start in range(0, total, chunk):
                    n = min(chunk, total - start)
                    buf = fh.read(n * stored.itemsize)
                    if len(buf) < n * stored.itemsize:
                        raise EOFError(f"the file ends after {start + len(buf) // stored.itemsize} of {total} voxels")
                    yield np.frombuffer(buf, dtype=stored).astype(dtype, copy=False)
        except (OSError, EOFError, ValueError) as exc:
            raise _unreadable(path, exc) from exc

    return shape, dtype, stream()


def split_shape(shape: Sequence[int]) -> tuple[tuple[int, ...], int]:
    """Spatial shape and channels of a NIfTI array as MONAI's reader sees it (a 4th axis: channels).

    >>> split_shape((64, 64, 1, 3)), split_shape((64, 64, 32))
    (((64, 64, 1), 3), ((64, 64, 32), 1))
    """
    if len(shape) == 4:
        return tuple(shape[:3]), int(shape[3])
    if len(shape) in (2, 3):
        return tuple(shape), 1
    raise ValueError(f"{len(shape)}-D")


def _write_npy(tmp: Path, shape: Sequence[int], dtype: np.dtype, chunks: Iterable[np.ndarray]) -> None:
    """An ``.npy`` in Fortran order written chunk by chunk (never the whole array in memory)."""
    with open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": True, "shape": tuple(int(s) for s in shape)})
        for c in chunks:
            fh.write(np.ascontiguousarray(c).data)


def _npy_chunks(path: Path, chunk: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(first element, values)`` of an ``.npy`` in file order, read with plain reads (no mapping)."""
    chunk = int(chunk or CHUNK)
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)  # written by _write_npy or np.save: version 1.0
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        total = math.prod(shape)
        for start in range(0, total, chunk):
            yield start, np.fromfile(fh, dtype=dtype, count=min(chunk, total - start))


def _label_u8(values: np.ndarray, path: Any) -> np.ndarray:
    """Label values as uint8; anything but integers 0..255 is refused naming the file."""
    if values.dtype == np.uint8:
        return values
    ok = values.size == 0 or (values.min() >= 0 and values.max() <= 255)
    if ok and values.dtype.kind == "f":
        ok = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    if not ok or values.dtype.kind not in "uif":
        raise InputError(f"{path}: the label holds values other than integers 0..255 ({values.dtype}); "
                         "re-convert it (the converters write uint8 label maps)")
    return values.astype(np.uint8)


def sample_indices(label_npy: Path, spatial: Sequence[int], counts: np.ndarray,
                   max_samples: int) -> tuple[np.ndarray, list[int]]:
    """Per label value 0..254, its voxels' flat C-order indices (all, or ``max_samples`` at evenly
    spaced ranks in file order), sorted; concatenated, with offsets. Streams ``label_npy``.

    One stable sort per chunk (a radix sort for uint8) groups each value's voxels in file order.
    """
    targets = [None if not max_samples or n <= max_samples else
               np.round(np.linspace(0, n - 1, max_samples)).astype(np.int64) for n in counts[:LABEL_VALUES]]
    picks: list[list[np.ndarray]] = [[] for _ in range(LABEL_VALUES)]
    seen = np.zeros(LABEL_VALUES, np.int64)
    for start, chunk in _npy_chunks(label_npy):
        order = np.argsort(chunk, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(chunk, minlength=256))])
        for v in np.flatnonzero(bounds[1:LABEL_VALUES + 1] > bounds[:LABEL_VALUES]):
            seg = order[bounds[v]:bounds[v + 1]]
            r0, seen[v] = seen[v], seen[v] + seg.size
            t = targets[v]
            if t is not None:
                lo, hi = np.searchsorted(t, [r0, r0 + seg.size])
                seg = seg[t[lo:hi] - r0]
            picks[v].append(seg.astype(np.int64) + start)
    dtype = np.uint32 if math.prod(spatial) < 2**32 else np.int64
    arrays, offsets = [], [0]
    for v in range(LABEL_VALUES):
        flat_f = np.concatenate(picks[v]) if picks[v] else np.zeros(0, np.int64)
        flat_c = np.sort(np.ravel_multi_index(np.unravel_index(flat_f, spatial, order="F"), spatial))
        arrays.append(flat_c.astype(dtype))
        offsets.append(offsets[-1] + flat_c.size)
    return np.concatenate(arrays), offsets


# ----------------------------------------------------------------------------- building
def build_entry(folder: Path, image: str | os.PathLike, label: str | os.PathLike, params: CacheParams,
                where: str = "") -> dict[str, Any]:
    """Write the entry of (``image``, ``label``) in ``folder``; the caller holds its lock.

    Every file goes to a temporary name and is renamed; the record (removed first) comes last.
    Raises :class:`InputError` / :class:`NonFiniteImageError` / ``FileNotFoundError`` naming the file.
    """
    t0 = time.time()
    folder.mkdir(parents=True, exist_ok=True)
    clean_temporaries(folder)
    (folder / "record.json").unlink(missing_ok=True)
    sources = {"image": source_stat(image), "label": source_stat(label)}
    shape, dtype, chunks = nifti_chunks(image)
    lshape, _, lchunks = nifti_chunks(label)
    if not (2 <= len(shape) <= 4 and 2 <= len(lshape) <= 4):
        raise InputError(f"{image}: image {shape} or label {lshape} ({label}) has a dimensionality the "
                         "pipeline does not take (x, y, z or x, y, 1, channel)")
    (spatial, channels), (lspatial, lchannels) = split_shape(shape), split_shape(lshape)
    if lspatial != spatial or lchannels != 1:
        raise InputError(f"{label}: the label's shape {lshape} does not match its image's {shape} ({image}){where}; "
                         "re-convert the pair")
    stats = ChannelStats(dtype, channels, math.prod(spatial))

    def image_values() -> Iterator[np.ndarray]:
        start = 0
        for c in chunks:
            stats.add(start, c)
            start += c.size
            yield c

    atomic_write(folder / "image.npy", lambda tmp: _write_npy(tmp, shape, dtype, image_values()))
    if stats.nonfinite:
        (folder / "image.npy").unlink(missing_ok=True)
        raise NonFiniteImageError(_nonfinite_message(str(image), stats.nonfinite, math.prod(shape), where))
    counts = np.zeros(256, np.int64)

    def label_values() -> Iterator[np.ndarray]:
        for c in lchunks:
            u8 = _label_u8(c, label)
            counts[:] += np.bincount(u8, minlength=256)
            yield u8

    atomic_write(folder / "label.npy", lambda tmp: _write_npy(tmp, lshape, np.dtype(np.uint8), label_values()))
    indices, offsets = sample_indices(folder / "label.npy", lspatial, counts, params.max_samples_per_class)
    atomic_write(folder / "indices.npy", lambda tmp: np.save(tmp, indices))
    record = {
        "format_version": FORMAT_VERSION, "sources": sources, **asdict(params),
        "image_shape": list(shape), "image_dtype": dtype.str, "channels": channels, "spatial_shape": list(spatial),
        "stats": stats.result(params.percentiles, folder / "image.npy"),
        "label_counts": {str(v): int(n) for v, n in enumerate(counts) if n},
        "indices_offsets": offsets, "files": {f: (folder / f).stat().st_size for f in _FILES},
        "built": time.strftime("%Y-%m-%d %H:%M:%S"), "build_seconds": round(time.time() - t0, 3),
    }
    atomic_write_json(folder / "record.json", record)
    return record


def ensure_entry(image: str | os.PathLike, label: str | os.PathLike, cache_dir: str | os.PathLike,
                 dataroot: str | os.PathLike | None, params: CacheParams,
                 where: str = "") -> tuple["CachedEntry", str, str | None]:
    """The item's entry, built first when missing or stale (one process builds, others wait).

    Returns ``(entry, action, reason)``; action ``kept``, ``built`` (reason ``missing``) or ``rebuilt``.
    """
    folder = Path(cache_dir) / entry_key(image, dataroot)
    reason = stale_reason(folder, image, label, params)
    action = "kept"
    if reason is not None:
        with Lock(folder / ".build.lock", f"cache build of {folder.name}", wait=math.inf):
            reason = stale_reason(folder, image, label, params)  # another process may have built it meanwhile
            if reason is not None:
                build_entry(folder, image, label, params, where)
                action = "built" if reason == "missing" else "rebuilt"
    record = read_record(folder)
    if not isinstance(record, dict):  # removed between the build and here
        raise InputError(f"{folder}: the cache entry vanished while in use ({record or 'missing'}); run again")
    return CachedEntry(folder, record), action, reason


@dataclass
class CachedEntry:
    """A complete entry: memory-mapped arrays (only what is indexed gets read) and its record."""

    folder: Path
    record: dict

    def array(self, name: str) -> np.ndarray:
        """``image`` or ``label`` in the file's layout (x, y, z[, c]), memory-mapped read-only."""
        return np.load(self.folder / f"{name}.npy", mmap_mode="r")

    def class_indices(self, num_classes: int) -> list[np.ndarray]:
        """Sampled flat indices of label values ``0 .. num_classes - 1`` (memory-mapped)."""
        off = self.record["indices_offsets"]
        every = np.load(self.folder / "indices.npy", mmap_mode="r") if off[-1] else np.zeros(0, np.uint32)
        return [every[off[v]:off[v + 1]] if v < LABEL_VALUES else every[:0] for v in range(num_classes)]


def _items(datalist: Any, dataroot: str | os.PathLike) -> tuple[list[tuple[str, str]], str]:
    """(image, label) paths of the labelled items of a datalist (path, mapping or item list); its name."""
    source = "the datalist" if isinstance(datalist, Mapping) else ""
    if isinstance(datalist, (str, os.PathLike)):
        source = str(datalist)
        datalist = json.loads(Path(datalist).read_text())
    items = datalist.get("training", []) if isinstance(datalist, Mapping) else list(datalist)
    root = Path(dataroot)
    return [(str(root / it["image"]), str(root / it["label"])) for it in items
            if isinstance(it, Mapping) and it.get("label")], source


def _ensure_job(job: tuple) -> dict[str, Any]:
    _, image, label, cache_dir, dataroot, params, where = job
    t0 = time.time()
    entry, action, reason = ensure_entry(image, label, cache_dir, dataroot, params, where)
    return {"key": entry.folder.name, "image": image, "action": action, "reason": reason,
            "seconds": round(time.time() - t0, 3)}


def build_cache(datalist: Any, dataroot: str | os.PathLike, cache_dir: str | os.PathLike, params: CacheParams,
                workers: int = 0, progress: bool = True) -> list[dict[str, Any]]:
    """Build (or check) the entry of every labelled item, e.g. once before training.

    Parameters
    ----------
    datalist : path, mapping or list of items
        A ``datalist.json`` (its ``training`` items), its content, or items (``image``/``label``).
    dataroot : path
        What relative item paths are relative to (absolute ones are kept); part of the entries' keys.
    cache_dir : path
        The cache folder (``cache_dir_of(cfg)``).
    params : CacheParams
        ``CacheParams.from_cfg(bundle_config)``.
    workers : int
        Processes building at once (0 or 1: this one).
    progress : bool
        A tqdm bar, and one line per entry (re)built saying why.

    Returns
    -------
    list of dict
        Per item, in order: ``key``, ``image``, ``action`` (``kept``/``built``/``rebuilt``), ``reason``, ``seconds``.

    Examples
    --------
    >>> build_cache("nifti/datalist.json", "nifti", "work/preprocessed", CacheParams())  # doctest: +SKIP
    [{'key': 'images__crop1-...', 'image': 'nifti/images/crop1.nii.gz', 'action': 'built', 'reason': 'missing', ...}]
    """
    from tqdm import tqdm

    pairs, source = _items(datalist, dataroot)
    jobs = [(i, img, lab, str(cache_dir), str(dataroot), params, source and f" (training item {i} of {source})")
            for i, (img, lab) in enumerate(pairs)]
    results: dict[int, dict] = {}
    bar = tqdm(total=len(jobs), desc=f"preprocessed cache {cache_dir}", unit="item", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        from converters.pool import imap_pool

        done = ((job, res, exc) for job, res, exc in imap_pool(_ensure_job, jobs, workers))
    else:
        done = ((job, _ensure_job(job), None) for job in jobs)
    with bar:
        for job, res, exc in done:
            if exc is not None:
                raise exc
            results[job[0]] = res
            if progress and res["action"] != "kept":
                bar.write(f"{res['key']}: {res['action']} ({res['reason']}) in {res['seconds']:.1f} s")
            bar.update(1)
    return [results[i] for i in range(len(jobs))]
