"""What the training loop reads: a fold's items, and loaders whose epochs are a fixed number
of iterations with augmentation that does not depend on history.

An epoch is ``num_iterations_per_epoch`` batches, drawn from shuffled passes over the
training items (as nnU-Net does), whatever the number of items: two crops do not mean two
optimiser steps per epoch. ``num_iterations_per_epoch: 0`` keeps one pass per epoch.

Each draw's random transforms are seeded from (seed, epoch, position, rank, item), so the
patches are the same whichever worker loads them and whatever ran before: a resumed run
sees exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["SPLIT_RECORD", "EpochItems", "EpochSampler", "fold_items", "make_loader", "prepare_cache",
           "write_split_record"]

#: ``<bundle>/model/training_items.json``: the images a bundle trained and validated on (its fold's
#: split), so that out-of-fold prediction can prove that a model never saw an item
SPLIT_RECORD = "training_items.json"


def fold_items(datalist_path: str | os.PathLike, dataroot: str | os.PathLike, fold: int) -> tuple[list, list]:
    """Training and validation items of ``fold`` with absolute paths (validation = items of
    that fold; training = the rest). Numeric keys such as ``annotated_mask`` are kept."""
    with open(datalist_path) as fh:
        datalist = json.load(fh)
    root = Path(dataroot)
    train_items, val_items = [], []
    for item in datalist.get("training", []):
        it = dict(item)
        for key in ("image", "label"):
            if key in it and isinstance(it[key], str):
                it[key] = str(root / it[key])
        (val_items if int(it.get("fold", -1)) == int(fold) else train_items).append(it)
    if not train_items:
        raise ValueError(f"{datalist_path}: fold {fold} leaves no training items")
    if not val_items:
        raise ValueError(f"{datalist_path}: fold {fold} has no validation items; give every training item a "
                         "'fold' (the converter does) or choose an existing fold")
    return train_items, val_items


def write_split_record(folder: str | os.PathLike, fold: int, datalist_path: str | os.PathLike,
                       train_items: Sequence[Mapping[str, Any]], val_items: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``folder/training_items.json``: the fold, the datalist and the absolute image
    paths of the training and validation items (written atomically)."""
    from converters.outputs import atomic_write_text

    record = {"fold": int(fold), "datalist": str(Path(datalist_path).resolve()),
              "training": [str(Path(it["image"]).resolve()) for it in train_items],
              "validation": [str(Path(it["image"]).resolve()) for it in val_items]}
    path = Path(folder) / SPLIT_RECORD
    atomic_write_text(path, json.dumps(record, indent=1))
    return path


def prepare_cache(items: list, cfg: Mapping[str, Any], rank: int = 0, world: int = 1) -> list[dict]:
    """Build the preprocessed cache entries of ``items`` before the loaders start (their workers
    then only read); nothing when the bundle trains without a cache (``cache: false``).

    Each rank starts with its own share of the items; the entries' locks make the rest wait.
    Returns :func:`auto3dseg.engine.preprocessed.build_cache`'s per-item report.
    """
    from auto3dseg.engine.preprocessed import CacheParams, build_cache, cache_dir_of
    from auto3dseg.orchestration.train_bundles import available_cpus

    folder = cache_dir_of(cfg)
    if folder is None or not items:
        return []
    ordered = items[rank::world] + [it for i, it in enumerate(items) if i % world != rank]
    workers = max(0, min(int(cfg.get("num_workers", 4)), available_cpus() // max(1, world)))
    return build_cache(ordered, cfg["dataroot"], folder, CacheParams.from_cfg(cfg), workers, progress=rank == 0)


class EpochItems(torch.utils.data.Dataset):
    """Draw ``slot * n + index`` is item ``index`` with its random transforms seeded from
    (seed, slot, rank, index); ``slot`` numbers the draws of every epoch."""

    def __init__(self, ds, seed: int, rank: int):
        self.ds, self.seed, self.rank = ds, seed, rank

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, code: int):
        slot, index = divmod(int(code), len(self.ds))
        entropy = [int(v) % 2**32 for v in (self.seed, slot, self.rank, index)]
        self.ds.transform.set_random_state(seed=int(np.random.SeedSequence(entropy).generate_state(1)[0]))
        return self.ds[index]


class EpochSampler(torch.utils.data.Sampler):
    """``length`` draws per epoch for this rank: shuffled passes over ``n`` items (order from
    seed, epoch and pass), each rank taking every ``world``-th; yields ``slot * n + index``.

    ``length`` 0 means one pass: ``ceil(n / world)`` draws, as ``DistributedSampler``.

    >>> s = EpochSampler(3, length=5, seed=0, shuffle=False)
    >>> s.set_epoch(1); [c % 3 for c in s], [c // 3 for c in s]
    ([0, 1, 2, 0, 1], [5, 6, 7, 8, 9])
    """

    def __init__(self, n: int, length: int = 0, world: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        if n < 1:
            raise ValueError("no training item to sample from")
        self.n, self.world, self.rank, self.shuffle, self.seed = n, world, rank, shuffle, seed
        self.length = int(length) if length else math.ceil(n / world)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        draws: list[int] = []
        p = 0
        while len(draws) < self.length:
            if self.shuffle:
                g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + self.epoch * 10_007 + p)
                order = torch.randperm(self.n, generator=g).tolist()
            else:
                order = list(range(self.n))
            if self.n < self.world:  # every rank needs draws: wrap the few items around
                order = order * math.ceil(self.world / self.n)
            draws += order[self.rank::self.world]
            p += 1
        first = self.epoch * self.length
        return iter([(first + k) * self.n + i for k, i in enumerate(draws[: self.length])])


def make_loader(items: list, transforms, cfg: Mapping[str, Any], rank: int, world: int, shuffle: bool,
                seed: int | None = None):
    """A MONAI DataLoader and its sampler. With ``seed`` (training): an :class:`EpochSampler` of
    ``num_iterations_per_epoch × batch_size`` draws and :class:`EpochItems` seeding; without
    (validation): every item once, in order (this rank's share when ``world`` > 1)."""
    from monai.data import CacheDataset, DataLoader, Dataset, list_data_collate

    from auto3dseg.orchestration.train_bundles import available_cpus  # the SLURM allocation, not the node's core count

    cache_rate = float(cfg.get("cache_rate", 0.0))
    if cache_rate > 0:
        ds = CacheDataset(items, transforms, cache_rate=cache_rate, num_workers=0, progress=False)
    else:
        ds = Dataset(items, transforms)
    batch = int(cfg.get("batch_size", 1))
    sampler = None
    if seed is not None:
        length = int(cfg.get("num_iterations_per_epoch", 0) or 0) * batch
        sampler = EpochSampler(len(ds), length, world, rank, shuffle, seed)
        ds = EpochItems(ds, seed, rank)
    elif world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle)
    workers = max(0, min(int(cfg.get("num_workers", 4)), available_cpus() // max(1, world)))
    return DataLoader(ds, batch_size=batch, shuffle=shuffle and sampler is None, sampler=sampler, num_workers=workers,
                      collate_fn=list_data_collate, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(seed or 0)), sampler
