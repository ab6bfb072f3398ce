"""Exact resume: a run interrupted after an epoch and resumed from ``last.pt`` trains exactly
as the uninterrupted run does (losses, validation, weights), with or without loader workers,
because the checkpoint carries the random state and each item's augmentation depends only on
(seed, epoch, rank, item index)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from auto3dseg.bundles.config import derive_hyper_parameters
from auto3dseg.engine import training


def _bundle_cfg(converted, root: Path, **extra) -> dict:
    """A tiny segresnet bundle on fold 0 of the converted synthetic data, trained on the CPU."""
    from auto3dseg.analysis.analyze import analyze

    out, _ = converted
    work = out.parent / "engine_work"
    stats = work / "datastats.yaml"
    if not stats.is_file():
        analyze(out / "datalist.json", work, out, workers=0, validate=False)
    dl = json.loads((out / "datalist.json").read_text())
    cfg = derive_hyper_parameters("segresnet", yaml.safe_load(stats.read_text()), dl,
                                  datalist_path=out / "datalist.json", dataroot=out, fold=0, bundle_root=root,
                                  num_epochs=3, patch_size=16)
    cfg.update(num_workers=0, sw_batch_size=4, device="cpu", num_iterations_per_epoch=0)
    cfg["network"].update({"init_filters": 8, "dsdepth": 2})
    cfg.update(extra)
    return cfg


def _steps_per_epoch(cfg) -> int:
    n = len(training.fold_items(cfg["data_list_file_path"], cfg["dataroot"], int(cfg["fold"]))[0])
    return math.ceil(n / int(cfg.get("batch_size", 1)))


def _train(cfg, monkeypatch, draws: list, die_after: int | None = None) -> None:
    """``training.train(cfg)``, each step first drawing from the global RNGs (as dropout or a
    user's transform would) into ``draws``; with ``die_after``, interrupted at the step after
    that many steps of this call."""
    real_step = training.train_step
    calls = {"n": 0}

    def step(*a, **k):
        calls["n"] += 1
        if die_after is not None and calls["n"] > die_after:
            raise KeyboardInterrupt
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(()))))
        return real_step(*a, **k)

    monkeypatch.setattr(training, "train_step", step)
    try:
        training.train(cfg)
    finally:
        monkeypatch.setattr(training, "train_step", real_step)


def _last(cfg) -> dict:
    return torch.load(Path(cfg["ckpt_path"]) / "last.pt", map_location="cpu", weights_only=False)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_run_equals_uninterrupted_run(converted, tmp_path, monkeypatch, capsys, num_workers):
    full = _bundle_cfg(converted, tmp_path / "full", num_workers=num_workers)
    full_draws: list = []
    _train(full, monkeypatch, full_draws)

    cut = _bundle_cfg(converted, tmp_path / "cut", num_workers=num_workers)
    cut_draws: list = []
    steps = _steps_per_epoch(cut)
    with pytest.raises(KeyboardInterrupt):
        _train(cut, monkeypatch, cut_draws, die_after=steps + 1)  # dies in the middle of epoch 2
    assert _last(cut)["state"]["epoch"] == 1
    del cut_draws[steps:]  # the draws of the epoch that did not complete
    capsys.readouterr()
    _train(cut, monkeypatch, cut_draws)
    out = capsys.readouterr().out
    assert "resuming from epoch 1 of 3" in out and "not exact" not in out

    a, b = _last(full), _last(cut)
    assert a["state"]["finished"] == b["state"]["finished"] == "completed"
    ha, hb = a["state"]["history"], b["state"]["history"]
    assert [h["epoch"] for h in hb] == [1, 2, 3]
    for ea, eb in zip(ha, hb):
        assert eb["loss"] == pytest.approx(ea["loss"], rel=0, abs=1e-6), (ea, eb)
        assert eb["lr"] == pytest.approx(ea["lr"], rel=1e-12)
        assert eb["val_dice"] == pytest.approx(ea["val_dice"], rel=0, abs=1e-6)
    # the global random streams continue where the interrupted run left them
    assert len(cut_draws) == len(full_draws) == 3 * steps
    assert cut_draws == full_draws
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-6, rtol=0), k


def test_checkpoint_holds_random_state_and_old_checkpoints_still_resume(converted, tmp_path, capsys):
    cfg = _bundle_cfg(converted, tmp_path / "old", num_epochs=1)
    training.train(cfg)
    last = Path(cfg["ckpt_path"]) / "last.pt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    assert ckpt["sampler_epoch"] == 0
    (rng,) = ckpt["rng"]  # one state per process
    assert {"python", "numpy", "torch"} <= rng.keys()
    assert ("cuda" in rng) == torch.cuda.is_available()
    assert isinstance(rng["torch"], torch.Tensor) and rng["numpy"][0] == "MT19937"

    # a checkpoint written before random states were saved
    for key in ("rng", "sampler_epoch"):
        del ckpt[key]
    torch.save(ckpt, last)
    capsys.readouterr()
    summary = training.train({**cfg, "num_epochs": 2})
    out = capsys.readouterr().out
    assert "resuming from epoch 1 of 2" in out and "not exact" in out
    assert summary["epochs"] == 2 and summary["finished"] == "completed" and summary["resumed"]
    assert "rng" in _last(cfg)
