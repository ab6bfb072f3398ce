"""Fixed layout of the synthetic CellMap tree: datasets, EM grid, array paths, encodings and the
per-kind classes and intensities shared by the scene, EM and crop writers.
"""

from __future__ import annotations

from typing import Mapping

from numcodecs import Blosc

from datalists.cellmap_classes import CELLMAP_CLASSES

Vec3 = tuple[float, float, float]
Shape3 = tuple[int, int, int]

# --------------------------------------------------------------------------------------
# Fixed layout
# --------------------------------------------------------------------------------------
DATASETS: tuple[str, ...] = ("synth-1", "synth-2")
EM_SHAPE: Shape3 = (64, 160, 160)
EM_VOXEL_NM: Vec3 = (8.0, 8.0, 8.0)
EM_LEVELS: int = 3
EM_CHUNKS: Shape3 = (32, 32, 32)
GT_CHUNKS: Shape3 = (32, 32, 32)
EM_PATH = "recon-1/em/fibsem-uint8"
GT_PATH = "recon-1/labels/groundtruth"
TEST_TRUTH_NAME = "test_truth.zarr"
COMPRESSOR = Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)

#: membrane (shell) thickness per object kind, nm
MEMBRANE_NM: Mapping[str, float] = {"cell": 16.0, "mito": 16.0, "ves": 12.0, "er": 12.0}
#: (shell class, inside class) per object kind
KIND_CLASSES: Mapping[str, tuple[str, str]] = {
    "cell": ("pm", "cyto"),
    "mito": ("mito_mem", "mito_lum"),
    "ves": ("ves_mem", "ves_lum"),
    "er": ("er_mem", "er_lum"),
}
#: object kinds whose objects carry instance ids
INSTANCE_KINDS: tuple[str, ...] = ("mito", "ves")
#: mean EM intensity per atomic class before texture, blur and noise
EM_INTENSITY: Mapping[str, float] = {
    "ecs": 210.0,
    "pm": 60.0,
    "cyto": 150.0,
    "mito_mem": 55.0,
    "mito_lum": 100.0,
    "ves_mem": 65.0,
    "ves_lum": 170.0,
    "er_mem": 60.0,
    "er_lum": 120.0,
}

SEMANTIC_ENCODING = {"absent": 0, "present": 1, "unknown": 255}
INSTANCE_ENCODING = {"absent": 0}
#: an unannotated instance array still needs a value for "unknown" (its fill value)
INSTANCE_UNKNOWN_ENCODING = {"absent": 0, "unknown": 255}
UNKNOWN_FILL = 255
_IDENTITY: tuple[Vec3, Vec3, Vec3] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _cid(name: str) -> int:
    """CellMap id of a class (the one table: :mod:`datalists.cellmap_classes`)."""
    return CELLMAP_CLASSES[name].cellmap_id


