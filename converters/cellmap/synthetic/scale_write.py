"""Running the block tasks of a procedural (``--scale N``) tree, in this process or in workers.

Memory is bounded by one block per process plus the scenes (a few MB each): nothing holds a
whole EM volume or a whole crop. Every task is a pure function of the seed, the scenes and
what the task tuple carries, and writes whole chunks of arrays that already exist:

* ``scene``: build a dataset's scene, pickle it into the scratch folder, and report which
  tested labels the dataset's test ROIs show (test labels are chosen from those);
* ``em``: a block of EM ``s0`` (:func:`converters.cellmap.synthetic.em_blocks.render_em_block`);
* ``gt``: a block of a training crop: every annotated class array and ``all``;
* ``truth``: a block of one grid of a test crop: the truth of its labels;
* ``down``: a block of EM level ``k``, the 2x2x2 mean of level ``k - 1`` (a later phase).

So the bytes do not depend on the block size or the number of workers. Workers load the
scenes they need from the scratch folder once.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from converters.pool import die_with_parent

from .cell_scene import CellScene, build_cell_scene
from .crops import CropSpec, TestCropSpec, _all_lut
from .em_blocks import downsample2, render_em_block
from .layout import EM_PATH, GT_PATH, TEST_TRUTH_NAME
from .raster import class_block, rasterize_block
from .scale_classes import TESTED_CLASSES, semantic_lut
from .scale_plan import SCALE_CHUNKS, DatasetPlan, TreePlan, base_grid
from .scale_store import block_grid, em_levels, gt_dtype, open_array, truth_grids

_STATE: dict[str, Any] = {}
SCENE_CACHE, ARRAY_CACHE = 2, 128


def scene_words(seed: int, index: int) -> tuple[int, int, int]:
    """Seed words of dataset ``index``'s scene and EM noise."""
    return (int(seed), 7, int(index))


def _set_state(root: Path, scratch: Path, seed: int, block: int) -> None:
    _STATE.clear()
    _STATE.update(root=Path(root), scratch=Path(scratch), seed=int(seed), block=int(block), scenes={}, arrays={})


def _init_worker(parent: int, root: Path, scratch: Path, seed: int, block: int) -> None:
    from numcodecs import blosc

    die_with_parent(parent)
    blosc.use_threads = False  # the workers are the parallelism; blosc threads would contend
    _set_state(root, scratch, seed, block)


def _cached(cache: dict, key: Any, make: Callable[[], Any], size: int) -> Any:
    """``cache[key]``, made on a miss; the oldest entries go beyond ``size`` (memory stays flat
    however many datasets and arrays the tree has: tasks come dataset by dataset)."""
    if key not in cache:
        cache[key] = make()
        while len(cache) > size:
            del cache[next(iter(cache))]
    return cache[key]


def _load_scene(d: int) -> CellScene:
    with open(_STATE["scratch"] / f"scene-{d}.pkl", "rb") as fh:
        return pickle.load(fh)


def _scene(d: int) -> CellScene:
    return _cached(_STATE["scenes"], d, lambda: _load_scene(d), SCENE_CACHE)


def _array(rel: str):
    return _cached(_STATE["arrays"], rel, lambda: open_array(_STATE["root"] / rel), ARRAY_CACHE)


def _slices(start: Sequence[int], shape: Sequence[int], f: int = 1) -> tuple[slice, ...]:
    return tuple(slice(f * a, f * (a + n)) for a, n in zip(start, shape))


def _ds_rel(name: str) -> str:
    return f"{name}/{name}.zarr"


def _shown_labels(scene: CellScene, spec: TestCropSpec, block: int) -> list[str]:
    """Tested labels with voxels in a test crop's ROI (at its base grid), block by block."""
    g = base_grid(spec)
    ids: set[int] = set()
    for start, shape in block_grid(g.shape, block):
        ids |= set(np.unique(rasterize_block(scene, g.translation, g.voxel_size, start, shape).atomic).tolist())
    found = np.asarray(sorted(ids), dtype=np.intp)
    return [lab for lab in TESTED_CLASSES if semantic_lut(lab)[found].any()]


def _task_scene(ds: DatasetPlan, tests: Sequence[TestCropSpec]) -> dict[str, Any]:
    lo, hi = ds.box
    scene = build_cell_scene(ds.name, scene_words(_STATE["seed"], ds.index), lo, hi, ds.needs, ds.anchor)
    with open(_STATE["scratch"] / f"scene-{ds.index}.pkl", "wb") as fh:
        pickle.dump(scene, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return {"max_id": scene.max_id, "bodies": len(scene.bodies), "cells": scene.n_cells,
            "shown": {t.name: _shown_labels(scene, t, _STATE["block"]) for t in tests}}


def _task_gt(d: int, spec: CropSpec, start, shape) -> dict[str, int]:
    scene = _scene(d)
    r = rasterize_block(scene, spec.translation, spec.voxel_size, start, shape)
    base = f"{_ds_rel(spec.dataset)}/{GT_PATH}/{spec.name}"
    absent = {}
    for name in spec.annotated:
        data = class_block(name, r, scene).astype(gt_dtype(name, scene.max_id))
        _array(f"{base}/{name}/s0")[_slices(start, shape)] = data
        absent[name] = int(data.size - np.count_nonzero(data))
    _array(f"{base}/all/s0")[_slices(start, shape)] = _all_lut(spec.annotated)[r.atomic]
    return absent


def _task_truth(d: int, spec: TestCropSpec, g: int, start, shape) -> dict[str, int]:
    vs, tr, _, labels = truth_grids(spec)[g]
    scene = _scene(d)
    r = rasterize_block(scene, tr, vs, start, shape)
    present = {}
    for label in labels:
        data = class_block(label, r, scene)
        _array(f"{TEST_TRUTH_NAME}/{spec.name}/{label}")[_slices(start, shape)] = data
        present[label] = int(np.count_nonzero(data))
    return present


def run_task(task: tuple) -> tuple[tuple, Any]:
    """Compute and write one task; return the task and what it reports."""
    kind = task[0]
    if kind == "scene":
        return task, _task_scene(task[1], task[2])
    if kind == "em":
        _, d, ds_name, voxel_nm, start, shape = task
        data = render_em_block(_scene(d), voxel_nm, scene_words(_STATE["seed"], d), start, shape, SCALE_CHUNKS)
        _array(f"{_ds_rel(ds_name)}/{EM_PATH}/s0")[_slices(start, shape)] = data
        return task, None
    if kind == "down":
        _, ds_name, level, start, shape = task
        base = f"{_ds_rel(ds_name)}/{EM_PATH}"
        src = _array(f"{base}/s{level - 1}")[_slices(start, shape, 2)]
        _array(f"{base}/s{level}")[_slices(start, shape)] = downsample2(src)
        return task, None
    if kind == "gt":
        return task, _task_gt(*task[1:])
    if kind == "truth":
        return task, _task_truth(*task[1:])
    raise ValueError(f"unknown task {task!r}")


def scene_tasks(plan: TreePlan) -> list[tuple]:
    """One task per dataset: build its scene (the largest first, for the workers' balance)."""
    tasks = [("scene", d, [t for t in plan.tests if t.dataset == d.name]) for d in plan.datasets]
    return sorted(tasks, key=lambda t: -int(np.prod(t[1].shape)))


def block_phases(plan: TreePlan, block: int) -> list[list[tuple]]:
    """EM ``s0``, crop and test-truth blocks (independent; dataset by dataset, so a worker needs
    one or two scenes at a time), then one phase per coarser EM level."""
    first: list[tuple] = []
    for d in plan.datasets:
        first += [("em", d.index, d.name, d.voxel_nm, s, n) for s, n in block_grid(d.shape, block)]
        for c in (c for c in plan.crops if c.dataset == d.name):
            first += [("gt", d.index, c, s, n) for s, n in block_grid(c.shape, block)]
        for t in (t for t in plan.tests if t.dataset == d.name):
            for g, (_, _, shape, _) in enumerate(truth_grids(t)):
                first += [("truth", d.index, t, g, s, n) for s, n in block_grid(shape, block)]
    phases = [first]
    for level in range(1, max(d.levels for d in plan.datasets)):
        phases.append([("down", d.name, level, s, n) for d in plan.datasets if level < d.levels
                       for s, n in block_grid(em_levels(d)[level][3], block)])
    return phases


class Runner:
    """Runs phases of tasks in this process (``workers <= 1``) or in a pool of spawned workers
    that lives across phases; a phase starts once the previous one is written."""

    def __init__(self, root: Path, scratch: Path, seed: int, block: int, workers: int):
        if block <= 0 or block % SCALE_CHUNKS[0]:
            raise ValueError(f"block must be a positive multiple of {SCALE_CHUNKS[0]} voxels, got {block}")
        self.workers = int(workers)
        self.pool = None
        _set_state(root, scratch, seed, block)
        if self.workers > 1:
            self.pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                               initializer=_init_worker,
                                               initargs=(os.getpid(), root, scratch, seed, block))

    def run(self, tasks: Sequence[tuple], tick: Callable[[], None] = lambda: None) -> Iterator[tuple[tuple, Any]]:
        if self.pool is None:
            for task in tasks:
                yield run_task(task)
                tick()
            return
        futures = [self.pool.submit(run_task, t) for t in tasks]
        try:
            for fut in cf.as_completed(futures):
                yield fut.result()
                tick()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        _STATE.clear()
