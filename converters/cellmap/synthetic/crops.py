"""The ground-truth and test crops: each training crop is one case a converter must handle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from datalists.cellmap_classes import CELLMAP_CLASSES

from .layout import EM_CHUNKS, EM_SHAPE, EM_VOXEL_NM, Shape3, Vec3


# --------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CropSpec:
    """A ground-truth crop and the case it stands for.

    ``class_names`` lists the crop's classes (``all`` excluded), ``annotated`` the subset
    that was annotated. ``extra`` goes into ``cases.json`` unchanged.
    """

    crop_id: int
    dataset: str
    case: str
    voxel_size: Vec3
    translation: Vec3
    shape: Shape3
    class_names: tuple[str, ...]
    annotated: tuple[str, ...]
    expected_verdict: str
    description: str
    usage: str = "train"
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        return f"crop{self.crop_id}"

    @property
    def not_annotated(self) -> tuple[str, ...]:
        return tuple(c for c in self.class_names if c not in self.annotated)


@dataclass(frozen=True)
class TestLabelSpec:
    """One (label, voxel size, ROI) row of the test manifest."""

    __test__ = False  # not a pytest test class despite the name

    label: str
    voxel_size: Vec3
    translation: Vec3
    shape: Shape3


@dataclass(frozen=True)
class TestCropSpec:
    """A test crop: EM present, truth only in ``test_truth.zarr``."""

    __test__ = False  # not a pytest test class despite the name

    crop_id: int
    dataset: str
    labels: tuple[TestLabelSpec, ...]

    @property
    def name(self) -> str:
        return f"crop{self.crop_id}"


_ALL_FULL = ("ecs", "pm", "cyto", "mito_mem", "mito_lum", "mito",
             "ves_mem", "ves_lum", "ves", "er_mem", "er_lum", "er")
_V8: Vec3 = (8.0, 8.0, 8.0)
_V16: Vec3 = (16.0, 16.0, 16.0)

TRAIN_CROPS: tuple[CropSpec, ...] = (
    CropSpec(1, "synth-1", "full", _V8, (128.0, 160.0, 160.0), (32, 64, 64),
             _ALL_FULL, _ALL_FULL, "converted",
             "Every class annotated; 8 nm on the EM s0 grid; holds a touching mito pair and a "
             "touching vesicle pair (distinct instance ids, shared face), ER, pm and ecs."),
    CropSpec(2, "synth-1", "partial_annotation", _V8, (64.0, 760.0, 240.0), (24, 56, 56),
             ("mito_mem", "mito_lum", "mito", "er_mem", "er_lum", "er"),
             ("mito_mem", "mito_lum", "mito"), "converted",
             "Only mito classes annotated; er_mem/er_lum/er are listed but unannotated (no "
             "chunks, fill 255, complement_counts unknown = all) although ER is present in "
             "the EM; ves classes are not listed at all. `all` holds only mito atomic ids."),
    CropSpec(3, "synth-1", "past_em_bounds", _V8, (96.0, 304.0, 896.0), (32, 64, 64),
             ("ecs", "pm", "cyto", "mito_mem", "mito_lum", "mito"),
             ("ecs", "pm", "cyto", "mito_mem", "mito_lum", "mito"), "converted",
             "Sticks out of the EM volume by 16 of its 64 voxels in x (EM x extent is "
             "[-4, 1276) nm); the image must be padded, padded fraction 0.25.",
             usage="validate",
             extra={"expected_padded_fraction": 0.25}),
    CropSpec(4, "synth-2", "coarse_gt", _V16, (196.0, 660.0, 660.0), (16, 32, 32),
             ("mito_mem", "mito_lum", "mito", "cyto"),
             ("mito_mem", "mito_lum", "mito", "cyto"), "converted",
             "Ground truth at 16 nm; like `csc fetch-data`, the EM s0 (8 nm) chunks that "
             "overlap the crop were not downloaded (deleted), s1/s2 are present: the image "
             "must come from s1 (translation on the s1 grid), not be a blank s0 read.",
             extra={"em_level_expected": "s1"}),
    CropSpec(5, "synth-2", "nothing_annotated", _V8, (260.0, 104.0, 1000.0), (24, 48, 32),
             ("mito_mem", "mito_lum", "mito", "er_mem", "er_lum"), (), "skipped",
             "Every class listed but none annotated (all arrays without chunks, "
             "complement_counts unknown = all); `all` has no chunks.",
             extra={"reason": "nothing_annotated"}),
    CropSpec(6, "synth-2", "offgrid_translation", _V8, (203.0, 99.0, 467.0), (32, 48, 64),
             ("mito", "ves_mem", "ves_lum", "ves"), ("mito", "ves_mem", "ves_lum", "ves"),
             "converted",
             "8 nm but translation not a multiple of 8 (EM must be resampled/snapped); mito is "
             "annotated as a group only, so `all` holds 50 (mito) there; holds a touching "
             "vesicle pair."),
)

TEST_CROPS: tuple[TestCropSpec, ...] = (
    TestCropSpec(101, "synth-1", tuple(
        TestLabelSpec(lbl, _V8, (240.0, 840.0, 760.0), (32, 48, 56))
        for lbl in ("mito", "mito_mem", "ves", "er", "cyto"))),
    TestCropSpec(102, "synth-2", (
        TestLabelSpec("mito", _V8, (100.0, 600.0, 100.0), (32, 64, 48)),
        TestLabelSpec("cyto", _V8, (100.0, 600.0, 100.0), (32, 64, 48)),
        # same physical ROI [96, 352) x [596, 1108) x [96, 480) nm at 16 nm
        TestLabelSpec("er", _V16, (104.0, 604.0, 104.0), (16, 32, 24)),
    )),
)


def crop_bounds_nm(voxel_size: Sequence[float], translation: Sequence[float],
                   shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Physical voxel-edge box ``[lo, hi)`` in nm of a grid given by its first voxel centre."""
    vs = np.asarray(voxel_size, dtype=np.float64)
    lo = np.asarray(translation, dtype=np.float64) - vs / 2.0
    return lo, lo + vs * np.asarray(shape, dtype=np.float64)


def s0_chunks_overlapping(voxel_size: Sequence[float], translation: Sequence[float],
                          shape: Sequence[int]) -> list[tuple[int, int, int]]:
    """Chunk indices of EM s0 whose voxels overlap a crop's physical box."""
    lo, hi = crop_bounds_nm(voxel_size, translation, shape)
    vs = np.asarray(EM_VOXEL_NM)
    i0 = np.maximum(np.floor((lo + vs / 2) / vs).astype(int), 0)
    i1 = np.minimum(np.ceil((hi + vs / 2) / vs).astype(int) - 1, np.asarray(EM_SHAPE) - 1)
    if np.any(i1 < i0):
        return []
    c0, c1 = i0 // np.asarray(EM_CHUNKS), i1 // np.asarray(EM_CHUNKS)
    return [(a, b, c) for a in range(c0[0], c1[0] + 1) for b in range(c0[1], c1[1] + 1)
            for c in range(c0[2], c1[2] + 1)]


def _all_lut(annotated: Sequence[str]) -> np.ndarray:
    """Map an atomic id to the most specific annotated class id covering it (0 if none)."""
    lut = np.zeros(256, dtype=np.uint8)
    groups = sorted((CELLMAP_CLASSES[n] for n in annotated if CELLMAP_CLASSES[n].parts),
                    key=lambda c: len(c.parts), reverse=True)  # broad first, specific last
    for g in groups:
        lut[list(g.parts)] = g.cellmap_id
    for n in annotated:
        c = CELLMAP_CLASSES[n]
        if not c.parts:
            lut[c.cellmap_id] = c.cellmap_id
    return lut


