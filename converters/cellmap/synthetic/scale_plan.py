"""The plan of a procedural (``--scale N``) tree: how many crops of which sizes, which voxel
sizes and annotations, which test labels, and where each crop sits in which dataset.

Sizes follow the demo: the training crops hold about ``N`` times the demo's training voxels,
the test labels about ``N`` times the demo's test-label voxels. Crop sides are drawn
log-uniformly (volume within 1/3..3x of the mean, aspect ratios up to ~2) and the whole set
is rescaled to the target; crops are packed compactly (extreme-point packing on a 16 nm
lattice, so any crop at 4, 8 or 16 nm can sit on its EM level's grid) and the EM covers
their bounding box plus a margin.

Examples
--------
>>> plan = plan_tree(4.0, seed=0)
>>> len(plan.crops), len(plan.tests), len(plan.datasets)
(12, 4, 2)
>>> abs(plan.totals()["train_gt_voxels"] / (4 * DEMO_TRAIN_VOXELS) - 1) < 0.15
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from .cell_scene import CropNeed
from .crops import TEST_CROPS, TRAIN_CROPS, CropSpec, TestCropSpec, TestLabelSpec
from .layout import Shape3, Vec3
from .scale_classes import FAMILIES, FAMILY_GROUPS, FAMILY_KINDS, TESTED_CLASSES, family_of

DEMO_TRAIN_VOXELS = sum(int(np.prod(c.shape)) for c in TRAIN_CROPS)
DEMO_TEST_VOXELS = sum(int(np.prod(lab.shape)) for c in TEST_CROPS for lab in c.labels)
SCALE_CHUNKS: Shape3 = (64, 64, 64)
MIN_SIDE = 24
SHOWCASE_MIN: Shape3 = (48, 80, 80)  #: the crop that holds every tested class (8 nm)
UNIT_NM, GAP_NM, MARGIN_NM = 16, 32, 128
TEST_ID0, BIG_ID = 1001, 2001


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset: EM ``s0`` voxel size, shape and number of levels; the EM's physical box is
    ``[-voxel/2, shape * voxel - voxel/2)``."""

    name: str
    index: int
    voxel_nm: float
    shape: Shape3
    levels: int
    anchor: CropNeed | None = None
    needs: tuple[CropNeed, ...] = ()

    @property
    def box(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.full(3, -self.voxel_nm / 2.0)
        return lo, lo + self.voxel_nm * np.asarray(self.shape, dtype=np.float64)


@dataclass(frozen=True)
class TreePlan:
    """Everything :mod:`converters.cellmap.synthetic.scale_write` writes, decided up front."""

    seed: int
    scale: float
    datasets: tuple[DatasetPlan, ...]
    crops: tuple[CropSpec, ...]
    tests: tuple[TestCropSpec, ...]
    off_grid: frozenset[str] = field(default_factory=frozenset)

    def totals(self) -> dict[str, Any]:
        small = [t for t in self.tests if t.crop_id != BIG_ID]
        return {
            "train_gt_voxels": sum(int(np.prod(c.shape)) for c in self.crops),
            "train_gt_voxels_target": int(round(self.scale * DEMO_TRAIN_VOXELS)),
            "test_label_voxels": sum(int(np.prod(lab.shape)) for t in small for lab in t.labels),
            "test_label_voxels_target": int(round(self.scale * DEMO_TEST_VOXELS)),
            "big_test_label_voxels": sum(int(np.prod(lab.shape)) for t in self.tests if t.crop_id == BIG_ID
                                         for lab in t.labels),
            "em_s0_voxels": sum(int(np.prod(d.shape)) for d in self.datasets),
        }


# ------------------------------------------------------------------------------ sizes
def _draw_shapes(rng: np.random.Generator, n: int, target: float, weight: np.ndarray,
                 floor: Sequence[Shape3], even: bool = False) -> list[Shape3]:
    """Seeded shapes whose ``sum(prod(shape) * weight)`` is close to ``target``."""
    vol = np.exp(rng.uniform(-math.log(3.0), math.log(3.0), n))
    aspect = np.exp(rng.uniform(-0.35, 0.35, (n, 3)))
    aspect /= np.prod(aspect, axis=1, keepdims=True) ** (1.0 / 3.0)
    f = target / float((vol * weight).sum())
    shapes: list[Shape3] = []
    for _ in range(30):
        shapes = []
        for i in range(n):
            side = (f * vol[i]) ** (1.0 / 3.0) * aspect[i]
            s = [max(int(floor[i][k]), int(round(side[k] / 2.0) * 2 if even else round(side[k]))) for k in range(3)]
            shapes.append((s[0], s[1], s[2]))
        total = sum(np.prod(s) * w for s, w in zip(shapes, weight))
        if abs(total / target - 1.0) < 0.01:
            break
        f *= (target / total) ** 1.2
    return shapes


def _pack(sizes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Extreme-point packing of boxes (integer units): each box, largest first, goes to the
    candidate corner that keeps the bounding box smallest (then most cubic)."""
    order = sorted(range(len(sizes)), key=lambda i: (-int(np.prod(sizes[i])), i))
    placed: list[tuple[np.ndarray, np.ndarray]] = []
    points = [np.zeros(3, dtype=np.int64)]
    pos: dict[int, np.ndarray] = {}
    top = np.zeros(3, dtype=np.int64)
    for i in order:
        s = np.asarray(sizes[i], dtype=np.int64)
        best, best_key = None, None
        for p in points:
            if any(np.all(p < q + t) and np.all(q < p + s) for q, t in placed):
                continue
            hi = np.maximum(top, p + s)
            key = (int(np.prod(hi)), int(hi.max()), tuple(int(v) for v in p))
            if best_key is None or key < best_key:
                best, best_key = p, key
        assert best is not None
        placed.append((best, s))
        pos[i] = best
        top = np.maximum(top, best + s)
        points += [best + np.eye(3, dtype=np.int64)[k] * s[k] for k in range(3)]
    return [pos[i] for i in range(len(sizes))]


# ------------------------------------------------------------------------------ annotation
def _annotation(mode: str, rng: np.random.Generator) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(class_names, annotated)`` of a crop annotated ``full``, ``partial`` or ``group_only``."""
    fams = list(FAMILIES)
    order = [fams[i] for i in rng.permutation(len(fams))]
    if mode == "full":
        return TESTED_CLASSES, TESTED_CLASSES
    if mode == "partial":
        k_ann, k_list = int(rng.integers(1, 5)), int(rng.integers(1, 3))
        ann = {c for f in order[:k_ann] for c in FAMILIES[f]}
        listed = ann | {c for f in order[k_ann:k_ann + k_list] for c in FAMILIES[f]}
    else:
        ann = {c for f in order[:int(rng.integers(2, 6))] for c in FAMILY_GROUPS[f]}
        listed = ann
    names = tuple(c for c in TESTED_CLASSES if c in listed)
    return names, tuple(c for c in names if c in ann)


def _families(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f for n in names if (f := family_of(n)) in FAMILY_KINDS))


def _test_labels(rng: np.random.Generator, n: int, scale: float) -> list[list[str]]:
    """Provisional labels of each test crop (their number matters: it sizes the ROI; which
    labels is decided by :func:`assign_test_labels` once the scene is known)."""
    labels = [TESTED_CLASSES[i] for i in rng.permutation(len(TESTED_CLASSES))]
    per: list[list[str]] = [[] for _ in range(n)]
    for i, lab in enumerate(labels):
        per[i % n].append(lab)
    for i in range(n):
        # few extras at small scales: the label-voxel budget is small, so each ROI stays larger
        k = int(rng.integers(max(6, len(per[i])), max(6, len(per[i])) + 2 + min(10, int(scale // 8))))
        extra = [lab for lab in labels if lab not in per[i]]
        per[i] += [extra[j] for j in rng.permutation(len(extra))[: max(0, k - len(per[i]))]]
        per[i] = [c for c in TESTED_CLASSES if c in per[i]]
    return per


# ------------------------------------------------------------------------------ the plan
def _translation(box_lo: np.ndarray, v: float, offset: np.ndarray) -> Vec3:
    t = box_lo + v / 2.0 + offset
    return (float(t[0]), float(t[1]), float(t[2]))


@dataclass
class _Draw:
    """What was drawn for one crop before it is placed: ``kind`` "train" or "test"."""

    kind: str
    index: int
    voxel: float
    shape: Shape3
    off_grid: bool = False
    mode: str = ""
    names: tuple[str, ...] = ()
    annotated: tuple[str, ...] = ()
    usage: str = "train"
    labels: tuple[str, ...] = ()
    coarse: frozenset[str] = frozenset()


def _datasets(rng: np.random.Generator, n_train: int, n_test: int) -> tuple[list[float], dict]:
    """EM voxel size per dataset (the first 8 nm; about one in four of the others 4 nm, at
    least one) and the dataset of each crop (the showcase in the first, the rest dealt)."""
    n_ds = math.ceil((n_train + n_test) / 8)
    n4 = max(1, round(n_ds / 4)) if n_ds > 1 else 0
    ds_voxel = [8.0] * n_ds
    for i in 1 + rng.permutation(n_ds - 1)[:n4]:
        ds_voxel[int(i)] = 4.0
    items = [("train", i) for i in range(1, n_train)] + [("test", i) for i in range(n_test)]
    items = [items[i] for i in rng.permutation(len(items))]
    where = {("train", 0): 0}
    for k, it in enumerate(items):
        where[it] = (k + 1) % n_ds
    return ds_voxel, where


def _training(rng: np.random.Generator, n: int, scale: float, ds_voxel: list[float], where: dict) -> list[_Draw]:
    """Modes (crop 1 full, 2 partial, 3 group-only, then random), voxel sizes, shapes, usage."""
    modes = ["full", "partial", "group_only"][: min(3, n)]
    modes += [str(rng.choice(["full", "partial", "group_only"], p=[0.35, 0.4, 0.25])) for _ in range(n - len(modes))]
    voxel = []
    for i in range(n):
        dv = ds_voxel[where[("train", i)]]
        coarse = i > 0 and rng.random() < (1 / 6 if dv == 8.0 else 0.4)
        voxel.append(16.0 if coarse and dv == 8.0 else (8.0 if coarse else dv))
    floor = [SHOWCASE_MIN] + [(MIN_SIDE,) * 3] * (n - 1)
    shapes = _draw_shapes(rng, n, scale * DEMO_TRAIN_VOXELS, np.ones(n), floor)
    draws = []
    for i in range(n):
        names, ann = _annotation(modes[i], rng)
        draws.append(_Draw("train", i, voxel[i], shapes[i], mode=modes[i], names=names, annotated=ann))
    for i in 1 + rng.permutation(n - 1)[: max(1, round(0.1 * n))]:
        draws[int(i)].usage = "validate"
    return draws


def _testing(rng: np.random.Generator, n: int, scale: float, ds_voxel: list[float], where: dict) -> list[_Draw]:
    """Provisional labels, base voxel size, how many labels at twice it, ROI shapes (even)."""
    labels = _test_labels(rng, n, scale)
    t_voxel = [4.0 if ds_voxel[where[("test", i)]] == 4.0 and rng.random() < 0.6 else 8.0 for i in range(n)]
    coarse = []
    for i in range(n):
        k = len(labels[i])
        n_c = int(rng.integers(1, max(2, k // 3))) if rng.random() < 0.5 else 0
        coarse.append(frozenset(labels[i][j] for j in rng.permutation(k)[:n_c]))
    weight = np.array([len(labels[i]) - len(coarse[i]) + len(coarse[i]) / 8.0 for i in range(n)])
    shapes = _draw_shapes(rng, n, scale * DEMO_TEST_VOXELS, weight, [(MIN_SIDE,) * 3] * n, even=True)
    return [_Draw("test", i, t_voxel[i], shapes[i], labels=tuple(labels[i]), coarse=coarse[i]) for i in range(n)]


def _place(rng: np.random.Generator, d: int, e_ds: float, members: list[_Draw]
           ) -> tuple[list[CropSpec], list[TestCropSpec], DatasetPlan]:
    """Pack one dataset's crops and write their specs; the EM covers them plus a margin."""
    ext = [np.asarray(m.shape, dtype=np.float64) * m.voxel for m in members]
    pos = _pack([np.ceil((e + GAP_NM) / UNIT_NM).astype(np.int64) for e in ext])
    name = f"synth-{d + 1}"
    crops, tests, needs = [], [], []
    top = np.zeros(3)
    for m, p, e in zip(members, pos, ext):
        lo = -e_ds / 2.0 + MARGIN_NM + UNIT_NM * p.astype(np.float64)
        top = np.maximum(top, lo + e)
        v = m.voxel
        offset = rng.integers(1, int(v), 3).astype(np.float64) if m.off_grid else np.zeros(3)
        if m.kind == "train":
            crops.append(CropSpec(m.index + 1, name, m.mode, (v, v, v), _translation(lo, v, offset), m.shape,
                                  m.names, m.annotated, "converted", f"procedural {m.mode} annotation", m.usage,
                                  {"off_grid": m.off_grid}))
            fams = _families(m.annotated)
        else:
            tests.append(_test_spec(TEST_ID0 + m.index, name, m.labels, set(m.coarse), v,
                                    _translation(lo, v, offset), m.shape))
            fams = tuple(FAMILY_KINDS)  # labels are chosen later, among what the ROI shows
        needs.append(CropNeed(tuple(lo), tuple(lo + e), fams))
    return crops, tests, _dataset(name, d, e_ds, top, needs)


def plan_tree(scale: float, seed: int = 0, big_test_crop: int = 0) -> TreePlan:
    """Plan a procedural tree of ``scale`` times the demo's size (``scale > 1``, or any
    ``scale >= 1`` here); ``big_test_crop`` adds a test crop of that many voxels per side at
    8 nm in its own dataset."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 9001]))
    n_train = max(6, round(6 * math.sqrt(scale)))
    n_test = min(16, max(2, round(2 * math.sqrt(scale))))
    ds_voxel, where = _datasets(rng, n_train, n_test)
    draws = _training(rng, n_train, scale, ds_voxel, where) + _testing(rng, n_test, scale, ds_voxel, where)
    # one crop in six (training and test; never the showcase) off the EM grid
    for k in rng.permutation(len(draws) - 1)[: max(1, round(len(draws) / 6))]:
        draws[int(k) + 1].off_grid = True
    crops: list[CropSpec] = []
    tests: list[TestCropSpec] = []
    datasets: list[DatasetPlan] = []
    for d, e_ds in enumerate(ds_voxel):
        members = sorted((m for m in draws if where[(m.kind, m.index)] == d),
                         key=lambda m: (m.kind != "train", m.index))
        c, t, ds = _place(rng, d, e_ds, members)
        crops, tests, datasets = crops + c, tests + t, datasets + [ds]
    if big_test_crop:
        side = int(big_test_crop)
        lo = np.full(3, -4.0 + MARGIN_NM)
        tests.append(_test_spec(BIG_ID, "synth-big", list(TESTED_CLASSES), set(), 8.0,
                                _translation(lo, 8.0, np.zeros(3)), (side, side, side)))
        datasets.append(DatasetPlan("synth-big", len(ds_voxel), 8.0, _em_shape(lo + 8.0 * side, 8.0, 3), 3))
    crops.sort(key=lambda c: c.crop_id)
    tests.sort(key=lambda t: t.crop_id)
    off = frozenset(m for m in [c.name for c in crops if c.extra["off_grid"]]
                    + [f"crop{TEST_ID0 + m.index}" for m in draws if m.kind == "test" and m.off_grid])
    return TreePlan(int(seed), float(scale), tuple(datasets), tuple(crops), tuple(tests), off)


def base_grid(spec: TestCropSpec) -> TestLabelSpec:
    """The finest grid a test crop asks (its ROI at its base voxel size)."""
    return min(spec.labels, key=lambda lab: lab.voxel_size[0])


def assign_test_labels(plan: TreePlan, present: Mapping[str, set[str]]) -> TreePlan:
    """Choose each test crop's labels, keeping how many it asks and how many at twice its voxel
    size: every tested label goes to a crop whose ROI shows it (else to the crop with the most
    free places), then each crop fills up with labels it shows, then with random others.

    Parameters
    ----------
    plan : TreePlan
    present : mapping
        Test crop name -> tested labels with voxels in its ROI.
    """
    rng = np.random.default_rng(np.random.SeedSequence([plan.seed, 9002]))
    small = [t for t in plan.tests if t.crop_id != BIG_ID]
    want = [len(t.labels) for t in small]
    n_coarse = [sum(1 for lab in t.labels if lab.voxel_size[0] > base_grid(t).voxel_size[0]) for t in small]
    chosen: list[list[str]] = [[] for _ in small]
    for lab in (TESTED_CLASSES[i] for i in rng.permutation(len(TESTED_CLASSES))):
        free = [i for i in range(len(small)) if len(chosen[i]) < want[i]] or list(range(len(small)))
        shows = [i for i in free if lab in present.get(small[i].name, set())]
        pool = shows or free
        most = max(want[i] - len(chosen[i]) for i in pool)
        best = [i for i in pool if want[i] - len(chosen[i]) == most]
        chosen[int(best[int(rng.integers(len(best)))])].append(lab)
    tests = []
    for i, t in enumerate(small):
        shown = [lab for lab in TESTED_CLASSES if lab in present.get(t.name, set()) and lab not in chosen[i]]
        rest = [lab for lab in TESTED_CLASSES if lab not in shown and lab not in chosen[i]]
        for group in (shown, rest):
            for j in rng.permutation(len(group)):
                if len(chosen[i]) < want[i]:
                    chosen[i].append(group[int(j)])
        labels = [lab for lab in TESTED_CLASSES if lab in chosen[i]]
        coarse = {labels[int(j)] for j in rng.permutation(len(labels))[: n_coarse[i]]}
        g = base_grid(t)
        tests.append(_test_spec(t.crop_id, t.dataset, labels, coarse, g.voxel_size[0], g.translation, g.shape))
    tests += [t for t in plan.tests if t.crop_id == BIG_ID]
    return replace(plan, tests=tuple(tests))


def _test_spec(crop_id: int, dataset: str, labels: Sequence[str], coarse: set[str], v: float,
               translation: Vec3, shape: Shape3) -> TestCropSpec:
    lo = np.asarray(translation) - v / 2.0
    rows = []
    for lab in labels:
        if lab in coarse:  # the same physical ROI at twice the voxel size
            t2 = lo + v
            rows.append(TestLabelSpec(lab, (2 * v,) * 3, (float(t2[0]), float(t2[1]), float(t2[2])),
                                      (shape[0] // 2, shape[1] // 2, shape[2] // 2)))
        else:
            rows.append(TestLabelSpec(lab, (v, v, v), translation, shape))
    return TestCropSpec(crop_id, dataset, tuple(rows))


def _em_shape(top: np.ndarray, v: float, levels: int) -> Shape3:
    m = 2 ** (levels - 1)
    n = np.ceil((top + MARGIN_NM + v / 2.0) / v / m).astype(int) * m
    return (int(n[0]), int(n[1]), int(n[2]))


def _dataset(name: str, index: int, v: float, top: np.ndarray, needs: list[CropNeed]) -> DatasetPlan:
    levels = 3 if v >= 8.0 else 4  # down to 32 nm
    anchor = needs[0] if index == 0 else max(needs, key=lambda n: float(np.prod(np.subtract(n.hi, n.lo))))
    return DatasetPlan(name, index, v, _em_shape(top, v, levels), levels, anchor, tuple(needs))
