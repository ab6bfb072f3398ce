"""Probability maps on disk: a Zarr v2 array per image, written block by block, read class by class.

``<case>_prob.zarr`` holds one array, ``prob``: ``[C, z, y, x]`` (2-D images ``[C, y, x]``) of
uint8, probability ``q / 255``, chunked so that one class is read without the others. Its
attributes name the channels, the activation, the image's NIfTI affine and, for volumes,
``voxel_size``/``translation`` (nm, z/y/x, the CellMap convention), so napari or neuroglancer
open it as it is. A 1000³ map of 48 classes is 48 GB raw; nothing here holds more than one
block or one class of it.

The map is written under ``.tmp-<pid>-<name>`` and renamed when its last block is in: a map
with the final name is complete. Maps of earlier versions (4-D ``*_prob.nii.gz``, ``x, y, z,
class``) are still read.

Examples
--------
>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> w = ProbabilityMapWriter(os.path.join(d, "a_prob.zarr"), 2, (4, 3, 2), np.eye(4))
>>> w.write((slice(0, 4), slice(0, 3), slice(0, 2)), np.full((2, 4, 3, 2), 0.5, np.float32))
>>> m = open_probability_map(w.commit(["mito", "er"], "sigmoid"))
>>> m.shape, m.channels, int(m.channel(1)[0, 0, 0]), bool(m.mask(0, 0.4).all())
((2, 3, 4), ['mito', 'er'], 128, True)
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PROB_SUFFIXES", "ProbabilityMap", "ProbabilityMapWriter", "is_probability_map", "map_intact",
           "maps_signature", "read_map_manifest",
           "open_probability_map",
           "probability_map_name", "quantize", "write_probability_map"]

PROB_SUFFIXES = ("_prob.zarr", "_prob.nii.gz")
_ARRAY = "prob"
_FORMAT = "cellmap-auto3dseg probability map 1"


def probability_map_name(case: str) -> str:
    """File name of a case's map.

    >>> probability_map_name("jrc_hela-2_crop155")
    'jrc_hela-2_crop155_prob.zarr'
    """
    return f"{case}{PROB_SUFFIXES[0]}"


def is_probability_map(path: str | os.PathLike) -> bool:
    """True for a path named like a map (either format).

    >>> is_probability_map("x/a_prob.zarr"), is_probability_map("x/a.nii.gz")
    (True, False)
    """
    return str(path).rstrip("/").endswith(PROB_SUFFIXES)


def quantize(prob: Any) -> np.ndarray:
    """Probabilities (float, tensor or array) as uint8 ``round(255 p)``, clipped.

    >>> quantize(np.array([0.0, 0.5, 1.2], np.float32)).tolist()
    [0, 128, 255]
    """
    if hasattr(prob, "detach"):
        import torch

        return prob.detach().float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    out = np.asarray(prob, dtype=np.float32) * np.float32(255.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _grid_attrs(affine: np.ndarray, spatial_dims: int) -> dict[str, Any]:
    """``voxel_size``/``translation`` (z, y, x) of an axis-aligned 3-D affine; nothing otherwise."""
    a = np.asarray(affine, dtype=np.float64)
    if spatial_dims != 3 or a.shape != (4, 4) or np.count_nonzero(a[:3, :3] - np.diag(np.diag(a[:3, :3]))):
        return {}
    return {"voxel_size": [float(v) for v in np.abs(np.diag(a)[:3])[::-1]],
            "translation": [float(v) for v in a[:3, 3][::-1]]}


class ProbabilityMapWriter:
    """Write one map block by block; :meth:`commit` names it, :meth:`abort` removes it.

    Parameters
    ----------
    path : path
        Final path (``<case>_prob.zarr``).
    n_channels : int
        Number of classes (channels).
    spatial_shape : sequence of int
        The image's shape as MONAI loads it (``x, y, z``; ``x, y`` for 2-D).
    affine : ndarray
        The image's affine (4×4; 3×3 for 2-D), kept in the attributes.
    chunks : sequence of int, optional
        Spatial chunk shape in the loaded order (default 128 per axis, clipped).
    """

    def __init__(self, path: str | os.PathLike, n_channels: int, spatial_shape: Sequence[int], affine: Any,
                 chunks: Sequence[int] | None = None):
        import zarr
        from numcodecs import Blosc

        self.path = Path(path)
        self.tmp = self.path.with_name(f".tmp-{os.getpid()}-{self.path.name}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.spatial = tuple(int(s) for s in spatial_shape)
        self.affine = np.asarray(affine, dtype=np.float64)
        chunks = tuple(int(c) for c in (chunks or [min(128, s) for s in self.spatial]))
        self.array = zarr.open_array(
            str(self.tmp), mode="w", shape=(int(n_channels), *self.spatial[::-1]), dtype=np.uint8,
            chunks=(1, *chunks[::-1]), compressor=Blosc(cname="zstd", clevel=1, shuffle=Blosc.BITSHUFFLE),
            fill_value=0, write_empty_chunks=False)

    def write(self, core: Sequence[slice], prob: Any) -> None:
        """Put ``prob`` ``[C, *core]`` (loaded axis order, float in [0, 1]) at ``core``."""
        q = quantize(prob)
        rev = (slice(None), *tuple(core)[::-1])
        try:
            self.array[rev] = np.transpose(q, (0, *range(q.ndim - 1, 0, -1)))
        except OSError as exc:  # zarr's chunk writes name no file
            exc.filename = exc.filename or str(self.path)
            raise

    def commit(self, channels: Sequence[str] | None, activation: str | None) -> Path:
        """Write the attributes and rename the map into place (replacing an older one)."""
        dims = len(self.spatial)
        count, size = _chunk_files(self.tmp)
        self.array.attrs.put({
            "format": _FORMAT, "channels": list(channels) if channels else None, "activation": activation,
            "axes": ["class", *("zyx"[3 - dims:])], "scale": 255, "nifti_affine": self.affine.tolist(),
            # all-zero chunks are not stored: this count tells a deleted chunk from an empty one, and their
            # bytes tell a chunk cut short (a full disk, a copy stopped) from a whole one at open
            "stored_chunks": count, "stored_bytes": size, **_grid_attrs(self.affine, dims)})
        if self.path.exists():
            old = self.path.with_name(f".old-{os.getpid()}-{self.path.name}")
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_probability_map(prob: Any, affine: Any, path: str | os.PathLike, channels: Sequence[str] | None = None,
                          activation: str | None = None) -> Path:
    """A whole map ``[C, *S]`` (loaded axis order) at once; see :class:`ProbabilityMapWriter`."""
    spatial = tuple(prob.shape[1:])
    w = ProbabilityMapWriter(path, int(prob.shape[0]), spatial, affine)
    try:
        w.write(tuple(slice(0, s) for s in spatial), prob)
        return w.commit(channels, activation)
    except BaseException:
        w.abort()
        raise


class ProbabilityMap:
    """A map on disk, read one class at a time.

    Attributes
    ----------
    shape : tuple of int
        Spatial shape, ``z, y, x`` (``y, x`` for 2-D).
    n_channels : int
    channels : list of str or None
        Names, when the map records them.
    affine : ndarray
        The image's NIfTI affine (``x, y, z`` index order).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._nifti: np.ndarray | None = None
        if self.path.name.endswith(".nii.gz") or self.path.name.endswith(".nii"):
            self._open_nifti()
            return
        import zarr

        try:
            self._array = zarr.open_array(str(self.path), mode="r")
        except Exception as exc:  # noqa: BLE001 - zarr says "path '' contains a group" and the like
            raise ValueError(f"{self.path}: not a probability map ({exc}); re-run --mode ensemble") from exc
        attrs = dict(self._array.attrs)
        if attrs.get("format") != _FORMAT:
            raise ValueError(f"{self.path}: not a probability map of this project (no format attribute: an "
                             "interrupted write?); re-run --mode ensemble")
        stored = attrs.get("stored_chunks")
        count, size = _chunk_files(self.path) if stored is not None else (0, 0)  # one listing for both checks
        if stored is not None and count < int(stored):
            raise ValueError(f"{self.path}: {int(stored) - count} of the {stored} chunks it "
                             "was written with are missing (deleted or not copied?): its values would read as 0; "
                             "write it again (--mode ensemble / predict / oof with --force)")
        if attrs.get("stored_bytes") is not None and size != int(attrs["stored_bytes"]):
            raise ValueError(f"{self.path}: its chunks hold {size} bytes, not the {attrs['stored_bytes']} they were "
                             "written with (a chunk cut short or changed?): write it again (--mode ensemble / predict "
                             "/ oof with --force)")
        self.n_channels = int(self._array.shape[0])
        self.shape = tuple(int(s) for s in self._array.shape[1:])
        self.channels = attrs.get("channels")
        self.activation = attrs.get("activation")
        self.affine = np.asarray(attrs["nifti_affine"], dtype=np.float64)

    def _open_nifti(self) -> None:
        import nibabel as nib

        img = nib.load(str(self.path))
        raw = np.asarray(img.dataobj.get_unscaled())
        slope, inter = img.dataobj.slope, img.dataobj.inter
        if not (raw.dtype == np.uint8 and np.isclose(slope, 1 / 255) and inter == 0):
            raw = quantize(np.asarray(img.dataobj, dtype=np.float32))
        data = np.moveaxis(raw, -1, 0)  # class, x, y, z
        if data.shape[3] == 1 and data.ndim == 4:
            data = data[..., 0]
        self._nifti = np.ascontiguousarray(np.transpose(data, (0, *range(data.ndim - 1, 0, -1))))
        self.n_channels = int(self._nifti.shape[0])
        self.shape = tuple(int(s) for s in self._nifti.shape[1:])
        self.channels, self.activation = None, None
        self.affine = np.asarray(img.affine, dtype=np.float64)

    def channel(self, c: int) -> np.ndarray:
        """Class ``c`` as uint8 ``round(255 p)``, ``z, y, x`` (``y, x``), C-contiguous."""
        if not 0 <= int(c) < self.n_channels:
            raise IndexError(f"{self.path}: no channel {c} (it has {self.n_channels})")
        if self._nifti is not None:
            return self._nifti[int(c)]
        return np.asarray(self._array[int(c)])

    def mask(self, c: int, threshold: float) -> np.ndarray:
        """``p > threshold`` of class ``c`` (bool), without a float copy of the class."""
        lut = (np.arange(256, dtype=np.float32) / np.float32(255.0)) > np.float32(threshold)
        return lut[self.channel(c)]

    def probabilities(self) -> np.ndarray:
        """Every class as float32 ``[C, *shape]`` (small maps and tests)."""
        return np.stack([self.channel(c) for c in range(self.n_channels)]).astype(np.float32) / np.float32(255.0)


def open_probability_map(path: str | os.PathLike) -> ProbabilityMap:
    """:class:`ProbabilityMap` of a ``*_prob.zarr`` (or an older ``*_prob.nii.gz``).

    Raises
    ------
    FileNotFoundError
        When there is no such map (an interrupted ensemble: re-run it).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such probability map (was the ensemble interrupted? re-run --mode "
                                "ensemble)")
    return ProbabilityMap(p)


def read_map_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """``ensemble.json`` / ``oof.json`` with each item's map taken from the manifest's own folder
    (where every map of a manifest is written): a copied or moved work_dir reads its own maps,
    never the ones of the folder it was copied from (whose paths the manifest records), even when
    one of its own is missing: that map is then reported missing, not read from elsewhere."""
    manifest = Path(path)
    data = json.loads(manifest.read_text())
    for it in data.get("items", []):
        it["probabilities"] = str(manifest.parent / Path(it["probabilities"]).name)
    missing = [it["probabilities"] for it in data.get("items", []) if not Path(it["probabilities"]).exists()]
    if missing:
        step = "--mode oof" if manifest.name.startswith("oof") else "--mode ensemble (or predict)"
        listed = ", ".join(Path(m).name for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                                                 else "")
        raise FileNotFoundError(f"{manifest}: {len(missing)} of its {len(data['items'])} probability map(s) are "
                                f"missing from {manifest.parent} ({listed}); re-run {step} to write them again")
    return data


def maps_signature(manifest: dict[str, Any], *made_with: Any) -> str:
    """A short hash of the maps a manifest (``ensemble.json``/``oof.json``) lists and of what labels
    are made from them with (post-processing parameters, the labels asked for): labels whose
    recorded hash differs were made from other maps or parameters. Map file names, not paths,
    count, so a copied work_dir stays up to date, and each map's ``map_id`` (new each time the
    map is written), so a map predicted again (its image changed) is not taken for the old one.

    >>> maps_signature({"signature": "a1", "items": [{"probabilities": "/w/x.nii.gz"}]}, {"t": 0.5})
    '377cb9343eeb'
    """
    import hashlib

    names = [[Path(it["probabilities"]).name, it["map_id"]] if it.get("map_id") else Path(it["probabilities"]).name
             for it in manifest.get("items", [])]  # map_id: each writing of a map (older manifests have none)
    text = json.dumps([manifest.get("signature"), names, *made_with], sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _chunk_files(folder: str | os.PathLike) -> tuple[int, int]:
    """How many chunk files the Zarr v2 array in ``folder`` holds, and their bytes (its ``.z*``
    metadata left out): one listing of the folder."""
    count = size = 0
    with os.scandir(folder) as entries:
        for e in entries:
            if not e.name.startswith(".") and e.is_file():
                count, size = count + 1, size + e.stat().st_size
    return count, size


def map_intact(path: str | os.PathLike) -> bool:
    """True when the probability map at ``path`` opens and has every chunk it was written with.

    >>> map_intact("/no/such/map_prob.zarr")
    False
    """
    try:
        open_probability_map(path)
    except (OSError, ValueError):
        return False
    return True


def read_channels_json(path: str | os.PathLike) -> list[str] | None:
    """Channel names of ``ensemble.json`` beside a map, if any."""
    manifest = Path(path).parent / "ensemble.json"
    if manifest.is_file():
        channels = json.loads(manifest.read_text()).get("channels")
        return list(channels) if channels else None
    return None
