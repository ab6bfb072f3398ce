"""Deterministic synthetic CellMap-like data: EM, partial ground truth and test crops.

Every dataset is an *analytic scene* in physical nanometre coordinates ``(z, y, x)``:
one big ellipsoidal cell (outside ``ecs``, a ~16 nm ``pm`` shell, ``cyto`` inside),
mitochondria (ellipsoids with a ``mito_mem`` shell and ``mito_lum`` inside), vesicles
(small spheres, ``ves_mem`` / ``ves_lum``) and ER tubes (polylines, ``er_mem`` /
``er_lum``). The EM volume and every ground-truth or test crop are rasterized from the
same scene with :func:`rasterize`, so a crop at any translation or voxel size agrees
with the EM.

The ground-truth crops are each one hard case a converter must handle (full
annotation, partial annotation, a crop past the EM bounds, ground truth coarser than
the downloaded EM, nothing annotated, an off-grid translation); they are listed with
their expected outcome in ``<out>/cases.json``.

Modules: ``layout`` (fixed paths, grid, encodings), ``shapes`` (analytic shapes and their
rasterization), ``scenes`` (seeded scenes and the EM rendered from them), ``crops`` (the cases),
``stores`` (the Zarr layout, manifest, datasplit), ``generate`` (the atomic driver and CLI);
``cell_drawing`` draws the 2-D cells of :mod:`converters.cells.synthetic`.

``--scale N`` (N > 1) writes a procedural tree of about N times the demo's size instead:
``scale_plan`` (crop counts, sizes, annotation, packing), ``scale_classes`` (kinds, layers,
intensities, families), ``cell_scene`` and ``organelles`` (cells, nuclei, organelles),
``raster`` (block rasterization, per-class truth), ``em_blocks`` (block EM), ``scale_store``
(Zarr layout), ``scale_write`` (block tasks, workers) and ``scale_tree`` (the driver,
``scale.json``, README). Every array is written block by block, each voxel a function of its
position and the seed, so memory stays flat and the bytes do not depend on the block size or
the number of workers.

Output tree (``--out DIR``)::

    DIR/
      synth-1/synth-1.zarr/recon-1/em/fibsem-uint8/{s0,s1,s2}
      synth-1/synth-1.zarr/recon-1/labels/groundtruth/crop{1,2,3}/<class>/s0
      synth-2/synth-2.zarr/...                       crop{4,5,6}
      test_truth.zarr/crop{101,102}/<label>         (truth of the test crops)
      test_crop_manifest.csv                        (toolbox format)
      datasplit.csv                                 (toolbox format, absolute paths)
      cases.json
      README.md

Examples
--------
Command line::

    python -m converters.cellmap.synthetic --out /tmp/synthetic_cellmap --seed 0 --force

From Python:

>>> summary = generate_synthetic_cellmap("/tmp/synthetic_cellmap", overwrite=True)  # doctest: +SKIP
>>> sorted(summary["cases"])  # doctest: +SKIP
['crop1', 'crop2', 'crop3', 'crop4', 'crop5', 'crop6']
"""

from __future__ import annotations

from .crops import TEST_CROPS, TRAIN_CROPS, CropSpec, TestCropSpec, TestLabelSpec, crop_bounds_nm, s0_chunks_overlapping
from .generate import generate_synthetic_cellmap, main
from .layout import DATASETS, EM_PATH, EM_SHAPE, EM_VOXEL_NM, GT_PATH
from .scenes import build_scene, downsample_mean, em_level_geometry, synthesize_em
from .shapes import Ellipsoid, HalfSpace, Scene, SceneObject, Tube, label_array, object_mask, rasterize, touching_pair
from .stores import multiscale_attrs

__all__ = [
    "Ellipsoid",
    "Tube",
    "HalfSpace",
    "SceneObject",
    "Scene",
    "CropSpec",
    "TestLabelSpec",
    "TestCropSpec",
    "DATASETS",
    "TRAIN_CROPS",
    "TEST_CROPS",
    "EM_SHAPE",
    "EM_VOXEL_NM",
    "EM_PATH",
    "GT_PATH",
    "build_scene",
    "rasterize",
    "object_mask",
    "label_array",
    "synthesize_em",
    "downsample_mean",
    "em_level_geometry",
    "s0_chunks_overlapping",
    "crop_bounds_nm",
    "touching_pair",
    "generate_synthetic_cellmap",
    "main",
    "multiscale_attrs",
]
