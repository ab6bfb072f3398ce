"""Class facts of the procedural (``--scale N``) scene: object kinds and their layered classes,
EM intensities of every atomic class, annotation families and the lookup tables that turn a
rasterized block into per-class ground truth.

A *kind* paints its voxels by depth below its surface: ``KIND_LAYERS[kind]`` lists
``(depth_nm, class)`` from the outside in, the last depth being ``inf`` (the inside). This is
the demo's kind -> (shell class, inside class) idea with more than two layers (the nuclear
envelope is ``ne_mem`` / ``ne_lum`` / ``ne_mem``).

Examples
--------
>>> KIND_LAYERS["mito"][0]
(14.0, 'mito_mem')
>>> len(TESTED_CLASSES), sorted(FAMILIES)[:3]
(48, ['cell', 'endo', 'er'])
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from datalists.cellmap_classes import CELLMAP_CLASSES

from .layout import _cid

INF = math.inf

#: painted layers per kind, outside in: (depth below the surface in nm, class)
KIND_LAYERS: Mapping[str, tuple[tuple[float, str], ...]] = {
    "cell": ((16.0, "pm"), (INF, "cyto")),
    # the envelope; the chromatin band and nucleoplasm below it are painted by the rasterizer
    "nucleus": ((12.0, "ne_mem"), (32.0, "ne_lum"), (44.0, "ne_mem"), (INF, "nucpl")),
    "np": ((INF, "np_out"),),  # radial layers: see PORE_INNER_NM
    "echrom": ((INF, "echrom"),),
    "mito": ((14.0, "mito_mem"), (INF, "mito_lum")),
    "ribo": ((INF, "mito_ribo"),),
    "golgi": ((10.0, "golgi_mem"), (INF, "golgi_lum")),
    "ves": ((10.0, "ves_mem"), (INF, "ves_lum")),
    "endo": ((12.0, "endo_mem"), (INF, "endo_lum")),
    "lyso": ((14.0, "lyso_mem"), (INF, "lyso_lum")),
    "ld": ((8.0, "ld_mem"), (INF, "ld_lum")),
    "perox": ((10.0, "perox_mem"), (INF, "perox_lum")),
    "er": ((10.0, "er_mem"), (INF, "er_lum")),
    "eres": ((10.0, "eres_mem"), (INF, "eres_lum")),
    "mt": ((7.0, "mt_out"), (INF, "mt_in")),
}
#: a nuclear pore is ``np_in`` within this radius of its axis, ``np_out`` out to its radius
PORE_INNER_NM = 22.0
#: heterochromatin: a band this deep (nm) below the envelope, where the patch field is > 0
HCHROM_BAND_NM: tuple[float, float] = (44.0, 104.0)

#: kinds whose bodies carry instance ids, and the class whose array holds them
INSTANCE_KIND_CLASS: Mapping[str, str] = {
    "mito": "mito", "ves": "ves", "endo": "endo", "lyso": "lyso", "ld": "ld",
    "perox": "perox", "np": "np", "mt": "mt",
}
#: instance classes read from the cell index (``cell``) or the nucleus of that cell (``nuc``)
CELL_INSTANCE_CLASSES: tuple[str, ...] = ("cell", "nuc")

#: mean EM intensity per atomic class before texture, blur and noise (all distinct)
SCALE_EM_INTENSITY: Mapping[str, float] = {
    "ecs": 215.0, "pm": 55.0, "cyto": 150.0,
    "nucpl": 135.0, "hchrom": 80.0, "echrom": 110.0,
    "ne_mem": 50.0, "ne_lum": 165.0, "np_out": 70.0, "np_in": 95.0,
    "mito_mem": 45.0, "mito_lum": 105.0, "mito_ribo": 30.0,
    "golgi_mem": 60.0, "golgi_lum": 175.0,
    "ves_mem": 65.0, "ves_lum": 190.0,
    "endo_mem": 58.0, "endo_lum": 160.0,
    "lyso_mem": 52.0, "lyso_lum": 75.0,
    "ld_mem": 40.0, "ld_lum": 200.0,
    "perox_mem": 62.0, "perox_lum": 125.0,
    "er_mem": 48.0, "er_lum": 140.0,
    "eres_mem": 68.0, "eres_lum": 182.0,
    "mt_out": 42.0, "mt_in": 120.0,
}

#: the challenge's tested classes (atomic and groups), in class-table order
TESTED_CLASSES: tuple[str, ...] = tuple(n for n, c in CELLMAP_CLASSES.items() if c.tested)

#: annotation families: what a partially annotated crop annotates (or lists) together
FAMILIES: Mapping[str, tuple[str, ...]] = {
    "cell": ("ecs", "pm", "cyto", "cell"),
    "nuc": ("ne_mem", "ne_lum", "np_out", "np_in", "hchrom", "echrom", "nucpl",
            "nuc", "ne", "np", "chrom", "ne_mem_all"),
    "mito": ("mito_mem", "mito_lum", "mito_ribo", "mito"),
    "golgi": ("golgi_mem", "golgi_lum", "golgi"),
    "ves": ("ves_mem", "ves_lum", "ves"),
    "endo": ("endo_mem", "endo_lum", "endo"),
    "lyso": ("lyso_mem", "lyso_lum", "lyso"),
    "ld": ("ld_mem", "ld_lum", "ld"),
    "perox": ("perox_mem", "perox_lum", "perox"),
    "er": ("er_mem", "er_lum", "eres_mem", "eres_lum", "eres", "er", "er_mem_all"),
    "mt": ("mt_out", "mt_in", "mt"),
}
#: the group classes a group-level annotation of a family names (no parts)
FAMILY_GROUPS: Mapping[str, tuple[str, ...]] = {
    "cell": ("cell",), "nuc": ("nuc",), "mito": ("mito",), "golgi": ("golgi",),
    "ves": ("ves",), "endo": ("endo",), "lyso": ("lyso",), "ld": ("ld",),
    "perox": ("perox",), "er": ("er",), "mt": ("mt",),
}
#: the organelle kinds that make a family present (placed inside crops that need it)
FAMILY_KINDS: Mapping[str, tuple[str, ...]] = {
    "mito": ("mito",), "golgi": ("golgi",), "ves": ("ves",), "endo": ("endo",),
    "lyso": ("lyso",), "ld": ("ld",), "perox": ("perox",), "er": ("er",), "mt": ("mt",),
}


def family_of(name: str) -> str:
    """The family a class belongs to.

    >>> family_of("eres_lum"), family_of("chrom")
    ('er', 'nuc')
    """
    for fam, names in FAMILIES.items():
        if name in names:
            return fam
    raise KeyError(name)


def atomic_lut(names_to_values: Mapping[str, float], default: float = 0.0,
               dtype: type = np.float32) -> np.ndarray:
    """A 256-entry lookup table from CellMap atomic id to a value."""
    lut = np.full(256, default, dtype=dtype)
    for name, value in names_to_values.items():
        lut[_cid(name)] = value
    return lut


def semantic_lut(name: str) -> np.ndarray:
    """uint8 lookup table: 1 for the atomic ids that make up class ``name``, else 0.

    >>> int(semantic_lut("mito")[4]), int(semantic_lut("mito")[1])
    (1, 0)
    """
    cls = CELLMAP_CLASSES[name]
    lut = np.zeros(256, dtype=np.uint8)
    lut[list(cls.parts) if cls.parts else [cls.cellmap_id]] = 1
    return lut


def layer_class_ids(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(depth edges, class ids)`` of a kind: a voxel at depth ``t`` below the surface gets
    ``ids[searchsorted(edges, t, side='right')]``."""
    layers = KIND_LAYERS[kind]
    edges = np.asarray([d for d, _ in layers[:-1]], dtype=np.float64)
    ids = np.asarray([_cid(c) for _, c in layers], dtype=np.uint8)
    return edges, ids


def _check_tables() -> None:
    covered = {n for names in FAMILIES.values() for n in names}
    if covered != set(TESTED_CLASSES):
        raise AssertionError(f"families do not cover the tested classes: {covered ^ set(TESTED_CLASSES)}")
    painted = {c for layers in KIND_LAYERS.values() for _, c in layers} | {"np_in", "hchrom", "ecs"}
    atomic = {n for n in TESTED_CLASSES if not CELLMAP_CLASSES[n].parts}
    if painted != atomic or set(SCALE_EM_INTENSITY) != atomic:
        raise AssertionError("kinds or intensities do not cover the tested atomic classes")
    if len(set(SCALE_EM_INTENSITY.values())) != len(SCALE_EM_INTENSITY):
        raise AssertionError("EM intensities must be distinct")


_check_tables()
