"""Data pipeline of the bundles: MONAI transforms plus a few of our own.

The label stays a single-channel map of class ids (uint8) all the way to the patch crop;
only the cropped patch is expanded to one channel per class (:class:`LabelToChannelsd`).
Expanding a whole crop first costs ``C`` times the label's memory in every loader
worker; that is how a 14-class CellMap run exhausted 200 GB of RAM.

Voxels added by padding carry :data:`IGNORE_VALUE` in the label and are excluded from
the loss through the ``valid`` mask.

With the preprocessed cache (:mod:`auto3dseg.engine.preprocessed`; bundle keys ``cache``,
``cache_dir``) a draw reads only its patches from memory-mapped arrays and normalises them
with the crop's cached statistics (:class:`CachedPatchesd`); without it (``cache: false``) each
draw loads, normalises and pads the whole crop. Both give the same patches for the same seed.
"""

from __future__ import annotations

import math

from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensity,
    NormalizeIntensityd,
    RandCropByLabelClassesd,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRange,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    SpatialPad,
    SpatialPadd,
    SqueezeDim,
)
from monai.transforms.croppad.array import Crop
from monai.transforms.utils import generate_label_classes_crop_centers

from auto3dseg.engine.input_checks import CheckFinited, InputError
from auto3dseg.engine.preprocessed import CacheParams, cache_dir_of, ensure_entry, percentile_key
from datalists.annotated import UNANNOTATED, decode_annotated

__all__ = [
    "IGNORE_VALUE",
    "AnnotatedToClassMaskd",
    "CachedPatchesd",
    "DropSingletonDepthd",
    "LabelToChannelsd",
    "LoadCachedd",
    "NormaliseCachedd",
    "channel_first",
    "channel_members",
    "class_mask_from_annotated",
    "normalise_cached",
    "patch_box",
    "inference_transforms",
    "intensity_transform",
    "training_transforms",
    "validation_transforms",
]

#: label value of voxels that are not part of the crop (padding): no loss there
IGNORE_VALUE = UNANNOTATED  # the datalist contract: voxels nobody annotated, and padding


def channel_members(class_table: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Label values that count as each class, in class-table order.

    A leaf class is its own id; a group (``parts``) is its own id plus, recursively, the
    ids of its parts: the label map holds the most specific selected class per voxel. A
    CellMap group also counts every selected class whose atomic parts are a subset of its
    own: a voxel labelled ``er_mem_all`` (er_mem, eres_mem, ne_mem) is ``er`` too, though
    ``er_mem_all`` is no part of ``er`` (CellMap's parts are atomic classes).

    >>> table = [{"id": 1, "parts": []}, {"id": 2, "parts": []}, {"id": 3, "parts": [1, 2]}]
    >>> channel_members(table)
    [[1], [2], [1, 2, 3]]
    >>> channel_members([{"id": 1, "cellmap_id": 51, "parts": []}, {"id": 2, "cellmap_id": 64, "parts": []}])  # er, er_mem_all
    [[1, 2], [2]]
    """
    from datalists.cellmap_classes import CELLMAP_BY_ID

    by_id = {int(r["id"]): [int(p) for p in r.get("parts") or []] for r in class_table}

    def expand(i: int, seen: frozenset = frozenset()) -> set[int]:
        out = {i}
        for p in by_id.get(i, []):
            if p not in seen and p in by_id:
                out |= expand(p, seen | {i})
        return out

    atoms: dict[int, frozenset[int]] = {}
    for r in class_table:
        known = CELLMAP_BY_ID.get(int(r["cellmap_id"])) if isinstance(r.get("cellmap_id"), int) else None
        if known is not None:
            atoms[int(r["id"])] = frozenset(known.parts or (known.cellmap_id,))
    members = []
    for r in class_table:
        i = int(r["id"])
        mine = expand(i)
        if i in atoms:
            mine |= {j for j, theirs in atoms.items() if theirs <= atoms[i]}
        members.append(sorted(mine))
    return members


def class_mask_from_annotated(annotated_mask: int, class_ids: Sequence[int]) -> np.ndarray:
    """Per-channel 0/1 float mask: which of ``class_ids`` the item annotates.

    >>> class_mask_from_annotated(0b101, [1, 2, 3])
    array([1., 0., 1.], dtype=float32)
    """
    annotated = set(decode_annotated(int(annotated_mask)))
    return np.asarray([1.0 if c in annotated else 0.0 for c in class_ids], dtype=np.float32)


class LabelToChannelsd(MapTransform):
    """Label map ``[1, *S]`` → per-class target ``[C, *S]`` (uint8) and ``valid`` ``[1, *S]``.

    Parameters
    ----------
    keys : str
        The label key (replaced by the multi-channel target).
    members : list of list of int
        Label values per channel (see :func:`channel_members`).
    valid_key : str
        Where to put the validity mask (0 where the label is :data:`IGNORE_VALUE`).
    one_hot_with_background : bool
        Softmax mode: keep the map as it is (values 0..C) and only add ``valid``.
    """

    def __init__(self, keys: KeysCollection, members: Sequence[Sequence[int]], valid_key: str = "valid",
                 one_hot_with_background: bool = False):
        super().__init__(keys)
        self.members = [list(m) for m in members]
        self.valid_key = valid_key
        self.keep_map = one_hot_with_background

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = d[key]
            arr = lab.as_tensor() if hasattr(lab, "as_tensor") else torch.as_tensor(lab)
            valid = (arr != IGNORE_VALUE)
            d[self.valid_key] = valid.to(torch.uint8)
            if self.keep_map:
                d[key] = torch.where(valid, arr, torch.zeros_like(arr)).to(torch.uint8)
                continue
            target = torch.zeros((len(self.members), *arr.shape[1:]), dtype=torch.uint8)
            for c, values in enumerate(self.members):
                for v in values:  # one comparison per value: 5x faster than torch.isin for a few values
                    target[c] |= (arr[0] == v).to(torch.uint8)
            d[key] = target
        return d


class AnnotatedToClassMaskd(MapTransform):
    """Item's ``annotated_mask`` (int bitmask) → float ``class_mask`` ``[C]``."""

    def __init__(self, class_ids: Sequence[int], source_key: str = "annotated_mask", output_key: str = "class_mask",
                 annotate_all_if_missing: bool = True):
        super().__init__([source_key], allow_missing_keys=True)
        self.class_ids = list(class_ids)
        self.source_key, self.output_key = source_key, output_key
        self.default_all = annotate_all_if_missing

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.source_key in d:
            mask = class_mask_from_annotated(d[self.source_key], self.class_ids)
        elif self.default_all:
            mask = np.ones(len(self.class_ids), dtype=np.float32)
        else:
            raise KeyError(f"item {d.get('image')} has no {self.source_key!r}")
        d[self.output_key] = torch.from_numpy(mask)
        return d


def intensity_transform(keys: KeysCollection, intensity: Mapping[str, Any]) -> MapTransform:
    """Intensity normalisation from a bundle's ``intensity`` config.

    ``mode``: ``zscore`` (per image, EM and MRI), ``percentile`` (per image, to [0, 1]
    between the ``lower``/``upper`` percentiles: light microscopy), ``range`` (fixed
    ``a_min``/``a_max`` from the dataset statistics: CT-like calibrated data).
    """
    mode = intensity.get("mode", "zscore")
    if mode == "zscore":
        return NormalizeIntensityd(keys=keys, nonzero=False, channel_wise=True)
    if mode == "percentile":
        return ScaleIntensityRangePercentilesd(keys=keys, lower=float(intensity.get("lower", 1.0)),
                                               upper=float(intensity.get("upper", 99.0)), b_min=0.0, b_max=1.0,
                                               clip=True, channel_wise=True)
    if mode == "range":
        return ScaleIntensityRanged(keys=keys, a_min=float(intensity["a_min"]), a_max=float(intensity["a_max"]),
                                    b_min=0.0, b_max=1.0, clip=True)
    raise ValueError(f"unknown intensity mode {mode!r}; expected zscore, percentile or range")


class DropSingletonDepthd(MapTransform):
    """``[C, X, Y, 1]`` → ``[C, X, Y]`` for 2-D bundles (the affine loses its z row too).

    2-D images are stored as NIfTI ``x, y, 1[, channel]`` (the layout MONAI reads as a
    channel-first volume one slice thick); an array already 2-D is left as it is.
    """

    def __init__(self, keys: KeysCollection, spatial_dims: int = 2, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims = int(spatial_dims)
        self.squeeze = SqueezeDim(dim=-1, update_meta=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            if x.ndim == self.spatial_dims + 2 and x.shape[-1] == 1:
                d[key] = self.squeeze(x)
            elif x.ndim != self.spatial_dims + 1:
                source = (getattr(x, "meta", None) or {}).get("filename_or_obj") or key
                raise InputError(f"{source}: shape {tuple(x.shape)[1:]} is not a "
                                 f"{self.spatial_dims}-D image (a 2-D bundle takes x, y or x, y, 1 arrays): give "
                                 "images converted like the training data's (python -m converters.cells.convert)")
        return d


# ----------------------------------------------------------------------------- the preprocessed cache
#: what :class:`LoadCachedd` adds to an item: the entry's intensity statistics
STATS_KEY = "image_stats"


def channel_first(raw: np.ndarray, spatial_dims: int = 3, name: Any = "image") -> np.ndarray:
    """A cached array in the file's layout (x, y, z[, c]) as the loaders see it: ``[C, *S]``; a view.

    >>> channel_first(np.zeros((5, 4, 1, 3)), 2).shape, channel_first(np.zeros((5, 4, 6))).shape
    ((3, 5, 4), (1, 5, 4, 6))
    """
    view = np.moveaxis(raw, -1, 0) if raw.ndim == 4 else raw[None]
    if spatial_dims == 2 and view.ndim == 4 and view.shape[-1] == 1:
        view = view[..., 0]
    if view.ndim != spatial_dims + 1:
        raise ValueError(f"{name}: shape {tuple(view.shape)[1:]} is not a {spatial_dims}-D image (a 2-D bundle "
                         "takes x, y or x, y, 1 arrays)")
    return view


def normalise_cached(image: np.ndarray, stats: Mapping[str, Any], intensity: Mapping[str, Any]) -> torch.Tensor:
    """``[C, *S]`` values → float32, normalised as :func:`intensity_transform` does the whole crop,
    but with the crop's cached statistics: so a patch comes out as the same patch of the whole.

    >>> stats = {"mean": [2.0], "std": [2.0], "percentiles": {}}
    >>> normalise_cached(np.array([[0, 4]], np.uint8), stats, {"mode": "zscore"}).tolist()
    [[-1.0, 1.0]]
    """
    x = torch.from_numpy(np.array(image, dtype=np.float32))
    mode = intensity.get("mode", "zscore")
    if mode == "zscore":
        return NormalizeIntensity(subtrahend=list(stats["mean"]), divisor=list(stats["std"]), channel_wise=True)(x)
    if mode == "percentile":
        lows = stats["percentiles"][percentile_key(intensity.get("lower", 1.0))]
        highs = stats["percentiles"][percentile_key(intensity.get("upper", 99.0))]
        return torch.stack([torch.as_tensor(ScaleIntensityRange(a, b, 0.0, 1.0, clip=True)(c))
                            for c, a, b in zip(x, lows, highs)])
    if mode == "range":
        return torch.as_tensor(ScaleIntensityRange(float(intensity["a_min"]), float(intensity["a_max"]), 0.0, 1.0,
                                                   clip=True)(x))
    raise ValueError(f"unknown intensity mode {mode!r}; expected zscore, percentile or range")


def patch_box(center: Sequence[int], patch: Sequence[int], shape: Sequence[int],
              before: Sequence[int]) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """The part of a crop that a patch centred at ``center`` covers, and the padding around it.

    ``center`` is in the coordinates of the crop padded to the patch (``before`` voxels added in
    front, as ``SpatialPad`` does); the patch's slices are MONAI's (``Crop.compute_slices``).

    >>> patch_box([4, 2], [4, 4], [8, 2], [0, 1])
    ((slice(2, 6, None), slice(0, 2, None)), [(0, 0), (1, 1)])
    """
    region, pads = [], []
    for sl, p, s, b in zip(Crop.compute_slices(roi_center=list(center), roi_size=list(patch)), patch, shape, before):
        lo, hi = sl.start - b, sl.start - b + p
        region.append(slice(max(lo, 0), min(hi, s)))
        pads.append((max(-lo, 0), max(hi - s, 0)))
    return tuple(region), pads


def _pad(x: torch.Tensor, pads: Sequence[tuple[int, int]], value: float) -> torch.Tensor:
    if not any(lo or hi for lo, hi in pads):
        return x
    return torch.nn.functional.pad(x, [v for lo_hi in reversed(pads) for v in lo_hi], mode="constant", value=value)


class _ShiftedIndices(Sequence):
    """Flat indices of a crop as flat indices of the crop padded by ``before`` (one read at a time)."""

    def __init__(self, flat: np.ndarray, shape: Sequence[int], before: Sequence[int], padded: Sequence[int]):
        self.flat, self.shape, self.before, self.padded = flat, tuple(shape), tuple(before), tuple(padded)

    def __len__(self) -> int:
        return len(self.flat)

    def __getitem__(self, i):  # type: ignore[override]
        coords = np.unravel_index(int(self.flat[i]), self.shape)
        return int(np.ravel_multi_index(tuple(c + b for c, b in zip(coords, self.before)), self.padded))


class LoadCachedd(MapTransform):
    """Item → its cache entry: ``image`` and ``label`` as memory-mapped ``[C, *S]`` views, the
    image's statistics (:data:`STATS_KEY`) and, with ``num_classes``, the sampled voxels of each
    label value (``label_cls_indices``). A missing or stale entry is built first (under its lock).
    """

    def __init__(self, cache_dir: str, dataroot: str | None, params: CacheParams, spatial_dims: int = 3,
                 num_classes: int | None = None):
        super().__init__(["image", "label"])
        self.cache_dir, self.dataroot, self.params = str(cache_dir), dataroot, params
        self.spatial_dims, self.num_classes = int(spatial_dims), num_classes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        entry, action, reason = ensure_entry(d["image"], d["label"], self.cache_dir, self.dataroot, self.params)
        if action != "kept":
            print(f"preprocessed cache: {entry.folder.name} {action} ({reason})", flush=True)
        d["image"] = channel_first(entry.array("image"), self.spatial_dims, f"image of {d['image']}")
        d["label"] = channel_first(entry.array("label"), self.spatial_dims, f"label of {d['label']}")
        d[STATS_KEY] = entry.record["stats"]
        if self.num_classes:
            d["label_cls_indices"] = entry.class_indices(self.num_classes)
        return d


class CachedPatchesd(RandCropByLabelClassesd):
    """``RandCropByLabelClassesd`` on a cached crop: the same centres from the same random state
    (MONAI's ``generate_label_classes_crop_centers`` over the crop padded to the patch), but only
    the patches are read from the memory-mapped arrays, normalised with the cached statistics,
    then padded (image 0, label :data:`IGNORE_VALUE`): what padding and normalising the whole
    crop, then cropping, gives.
    """

    def __init__(self, patch: Sequence[int], num_classes: int, num_samples: int, intensity: Mapping[str, Any]):
        super().__init__(keys=["image", "label"], label_key="label", spatial_size=list(patch), num_classes=num_classes,
                         num_samples=num_samples, indices_key="label_cls_indices", warn=False)
        self.patch, self.intensity = [int(p) for p in patch], dict(intensity)

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> list[dict]:  # type: ignore[override]
        d = dict(data)
        image, label, stats = d.pop("image"), d.pop("label"), d.pop(STATS_KEY)
        shape = tuple(int(s) for s in label.shape[1:])
        before = [lo for lo, _ in SpatialPad(self.patch).compute_pad_width(shape)[1:]]
        padded = tuple(max(s, p) for s, p in zip(shape, self.patch))
        indices = d.pop(self.indices_key)
        if padded != shape:
            indices = [_ShiftedIndices(a, shape, before, padded) for a in indices]
        c = self.cropper
        centers = generate_label_classes_crop_centers(self.patch, c.num_samples, padded, indices, c.ratios, c.R,
                                                      c.allow_smaller, c.warn)
        out = []
        for center in centers:
            region, pads = patch_box(center, self.patch, shape, before)
            img = normalise_cached(image[(slice(None), *region)], stats, self.intensity)
            lab = torch.from_numpy(np.array(label[(slice(None), *region)], dtype=np.uint8))
            out.append({**deepcopy(d), "image": _pad(img, pads, 0.0), "label": _pad(lab, pads, IGNORE_VALUE)})
        return out


class NormaliseCachedd(MapTransform):
    """A whole cached crop (validation): image read and normalised with its cached statistics, label read."""

    def __init__(self, intensity: Mapping[str, Any]):
        super().__init__(["image", "label"])
        self.intensity = dict(intensity)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        d["image"] = normalise_cached(d["image"], d.pop(STATS_KEY), self.intensity)
        d["label"] = torch.from_numpy(np.array(d["label"], dtype=np.uint8))
        return d


def _cache_of(cfg: Mapping[str, Any]) -> tuple[str, str | None, CacheParams] | None:
    folder = cache_dir_of(cfg)
    return None if folder is None else (str(folder), cfg.get("dataroot"), CacheParams.from_cfg(cfg))


def _load(keys_dtypes: Sequence[tuple[str, Any]], spatial_dims: int = 3) -> list:
    out: list = []
    for key, dtype in keys_dtypes:
        out += [LoadImaged(keys=key, dtype=dtype, image_only=True), EnsureChannelFirstd(keys=key)]
        if key == "image":  # NaN voxels would turn every probability of the image into 0, silently
            out.append(CheckFinited(keys=[key]))
    if spatial_dims == 2:
        out.append(DropSingletonDepthd(keys=[k for k, _ in keys_dtypes]))
    return out


def training_transforms(cfg: Mapping[str, Any]) -> Compose:
    """Load → normalise → pad to the patch → class-balanced crop → augment → expand labels.

    ``cfg`` is a bundle config (keys ``patch_size``, ``num_patches_per_image``, ``intensity``,
    ``class_ids``, ``class_members``, ``output_activation``; ``cache``, ``cache_dir``). With the
    cache the first four steps read only the patches (:class:`CachedPatchesd`).
    """
    patch = [int(p) for p in cfg["patch_size"]]
    n_classes = max(max(m) for m in cfg["class_members"]) + 1
    softmax = cfg.get("output_activation", "sigmoid") == "softmax"
    spatial_axes = list(range(len(patch)))
    dims, intensity, samples = int(cfg.get("spatial_dims", 3)), cfg.get("intensity", {}), int(cfg.get(
        "num_patches_per_image", 1))
    cache = _cache_of(cfg)
    if cache is not None:
        crop: list = [LoadCachedd(*cache, spatial_dims=dims, num_classes=n_classes),
                      AnnotatedToClassMaskd(cfg["class_ids"]), CachedPatchesd(patch, n_classes, samples, intensity)]
    else:
        crop = [
            *_load([("image", np.float32), ("label", np.uint8)], dims),
            intensity_transform("image", intensity),
            SpatialPadd(keys="image", spatial_size=patch, mode="constant", value=0),
            SpatialPadd(keys="label", spatial_size=patch, mode="constant", value=IGNORE_VALUE),
            # a sample of each class's voxels is enough to centre patches; all of them would be
            # an int64 per voxel (8x the label map)
            ClassesToIndicesd(keys="label", num_classes=n_classes, indices_postfix="_cls_indices",
                              max_samples_per_class=int(cfg.get("max_samples_per_class", 100_000))),
            AnnotatedToClassMaskd(cfg["class_ids"]),
            RandCropByLabelClassesd(keys=["image", "label"], label_key="label", spatial_size=patch,
                                    num_classes=n_classes, num_samples=samples, indices_key="label_cls_indices",
                                    warn=False),
        ]
    return Compose([  # the random transforms in the same order either way: the same seed, the same patches
        *crop,
        *[RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=a) for a in spatial_axes],
        *_rotations(patch, cfg.get("spacing")),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        LabelToChannelsd(keys="label", members=cfg["class_members"], one_hot_with_background=softmax),
        EnsureTyped(keys=["image", "label", "valid", "class_mask"], track_meta=False),
    ])


def _rotations(patch: Sequence[int], spacing: Sequence[float] | None = None) -> list:
    """90° rotations in the first plane whose two patch sides, and voxel sizes, are equal: a
    rotation in a plane of unequal sides changes the patch's shape, and patches of one batch could
    not be stacked (a patch capped by small crops, [40, 32, 48], failed to collate); one in a plane
    of unequal voxel sizes would show the network a coarse axis where it expects a fine one. None
    when no plane qualifies.

    >>> [t.spatial_axes for t in _rotations([64, 64, 32])], _rotations([40, 32, 48])
    ([(0, 1)], [])
    >>> [t.spatial_axes for t in _rotations([32, 64, 32], [6.0, 6.0, 40.0])]
    []
    """
    sp = [float(v) for v in spacing] if spacing is not None and len(spacing) == len(patch) else [1.0] * len(patch)
    for a in range(len(patch)):
        for b in range(a + 1, len(patch)):
            if int(patch[a]) == int(patch[b]) and math.isclose(sp[a], sp[b], rel_tol=0.1):
                return [RandRotate90d(keys=["image", "label"], prob=0.5, max_k=3, spatial_axes=(a, b))]
    return []


def validation_transforms(cfg: Mapping[str, Any]) -> Compose:
    """Load and normalise a whole crop (from the cache when it has one); the label stays a map."""
    dims, cache = int(cfg.get("spatial_dims", 3)), _cache_of(cfg)
    load = ([LoadCachedd(*cache, spatial_dims=dims), NormaliseCachedd(cfg.get("intensity", {}))] if cache else
            [*_load([("image", np.float32), ("label", np.uint8)], dims),
             intensity_transform("image", cfg.get("intensity", {}))])
    return Compose([
        *load,
        AnnotatedToClassMaskd(cfg["class_ids"]),
        EnsureTyped(keys=["image", "label", "class_mask"], track_meta=False),
    ])


def inference_transforms(cfg: Mapping[str, Any]) -> Compose:
    """Load and normalise one image, keeping its metadata (affine) for writing results."""
    return Compose([*_load([("image", np.float32)], int(cfg.get("spatial_dims", 3))),
                    intensity_transform("image", cfg.get("intensity", {}))])
