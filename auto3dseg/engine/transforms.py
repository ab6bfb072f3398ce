"""Data pipeline of the bundles: MONAI transforms plus two of our own.

The label stays a single-channel map of class ids (uint8) all the way to the patch crop;
only the cropped patch is expanded to one channel per class (:class:`LabelToChannelsd`).
Expanding a whole crop first costs ``C`` times the label's memory in every loader
worker; that is how a 14-class CellMap run exhausted 200 GB of RAM.

Voxels added by padding carry :data:`IGNORE_VALUE` in the label and are excluded from
the loss through the ``valid`` mask.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
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
    NormalizeIntensityd,
    RandCropByLabelClassesd,
    RandFlipd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
    SqueezeDim,
)

from auto3dseg.engine.input_checks import CheckFinited
from datalists.annotated import UNANNOTATED, decode_annotated

__all__ = [
    "IGNORE_VALUE",
    "AnnotatedToClassMaskd",
    "DropSingletonDepthd",
    "LabelToChannelsd",
    "channel_members",
    "class_mask_from_annotated",
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
    ids of its parts: the label map holds the most specific selected class per voxel.

    >>> table = [{"id": 1, "parts": []}, {"id": 2, "parts": []}, {"id": 3, "parts": [1, 2]}]
    >>> channel_members(table)
    [[1], [2], [1, 2, 3]]
    """
    by_id = {int(r["id"]): [int(p) for p in r.get("parts") or []] for r in class_table}

    def expand(i: int, seen: frozenset = frozenset()) -> set[int]:
        out = {i}
        for p in by_id.get(i, []):
            if p not in seen and p in by_id:
                out |= expand(p, seen | {i})
        return out

    return [sorted(expand(int(r["id"]))) for r in class_table]


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
                target[c] = torch.isin(arr[0], torch.as_tensor(values, dtype=arr.dtype))
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
                raise ValueError(f"{key} of {d.get('image')}: shape {tuple(x.shape)[1:]} is not a "
                                 f"{self.spatial_dims}-D image (a 2-D bundle takes x, y or x, y, 1 arrays)")
        return d


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
    ``class_ids``, ``class_members``, ``output_activation``).
    """
    patch = [int(p) for p in cfg["patch_size"]]
    n_classes = max(max(m) for m in cfg["class_members"]) + 1
    softmax = cfg.get("output_activation", "sigmoid") == "softmax"
    spatial_axes = list(range(len(patch)))
    return Compose([
        *_load([("image", np.float32), ("label", np.uint8)], int(cfg.get("spatial_dims", 3))),
        intensity_transform("image", cfg.get("intensity", {})),
        SpatialPadd(keys="image", spatial_size=patch, mode="constant", value=0),
        SpatialPadd(keys="label", spatial_size=patch, mode="constant", value=IGNORE_VALUE),
        # a sample of each class's voxels is enough to centre patches; all of them would be
        # an int64 per voxel (8x the label map)
        ClassesToIndicesd(keys="label", num_classes=n_classes, indices_postfix="_cls_indices",
                          max_samples_per_class=int(cfg.get("max_samples_per_class", 100_000))),
        AnnotatedToClassMaskd(cfg["class_ids"]),
        RandCropByLabelClassesd(keys=["image", "label"], label_key="label", spatial_size=patch,
                                num_classes=n_classes, num_samples=int(cfg.get("num_patches_per_image", 1)),
                                indices_key="label_cls_indices", warn=False),
        *[RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=a) for a in spatial_axes],
        RandRotate90d(keys=["image", "label"], prob=0.5, max_k=3, spatial_axes=(0, 1)),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        LabelToChannelsd(keys="label", members=cfg["class_members"], one_hot_with_background=softmax),
        EnsureTyped(keys=["image", "label", "valid", "class_mask"], track_meta=False),
    ])


def validation_transforms(cfg: Mapping[str, Any]) -> Compose:
    """Load and normalise a whole crop; the label stays a map (scored class by class)."""
    return Compose([
        *_load([("image", np.float32), ("label", np.uint8)], int(cfg.get("spatial_dims", 3))),
        intensity_transform("image", cfg.get("intensity", {})),
        AnnotatedToClassMaskd(cfg["class_ids"]),
        EnsureTyped(keys=["image", "label", "class_mask"], track_meta=False),
    ])


def inference_transforms(cfg: Mapping[str, Any]) -> Compose:
    """Load and normalise one image, keeping its metadata (affine) for writing results."""
    return Compose([*_load([("image", np.float32)], int(cfg.get("spatial_dims", 3))),
                    intensity_transform("image", cfg.get("intensity", {}))])
