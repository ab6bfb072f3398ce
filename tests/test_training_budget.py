"""Epochs of a fixed number of iterations, and budgets of iterations or time."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import run_auto3dseg
from auto3dseg.bundles.config import derive_hyper_parameters
from auto3dseg.engine import budget as budget_mod
from auto3dseg.engine import training


def _cfg(converted, tmp_path, **extra):
    from auto3dseg.analysis.analyze import analyze

    out, _ = converted
    work = out.parent / "budget_work"
    if not (work / "datastats.yaml").is_file():
        analyze(out / "datalist.json", work, out, workers=0, validate=False)
    dl = json.loads((out / "datalist.json").read_text())
    cfg = derive_hyper_parameters("segresnet", yaml.safe_load((work / "datastats.yaml").read_text()), dl,
                                  datalist_path=out / "datalist.json", dataroot=out, fold=0,
                                  bundle_root=tmp_path / "segresnet_0", patch_size=16, budget=extra.pop("budget", None))
    cfg.update(num_workers=0, sw_batch_size=4, device="cpu", num_epochs_per_validation=100)
    cfg["network"].update(init_filters=8, dsdepth=2)
    cfg.update(extra)
    return cfg


def _count_steps(monkeypatch) -> dict:
    calls = {"n": 0}
    real = training.train_step

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(training, "train_step", counting)
    return calls


def test_defaults_are_epochs_of_250_iterations_reaching_40k(converted, tmp_path):
    cfg = _cfg(converted, tmp_path)
    assert cfg["num_iterations_per_epoch"] == 250 and cfg["num_epochs"] == 160 and cfg["budget"] is None


def test_an_epoch_is_a_fixed_number_of_iterations_whatever_the_items(converted, tmp_path, monkeypatch):
    cfg = _cfg(converted, tmp_path, num_iterations_per_epoch=5, num_epochs=2)
    n_items = len(training.fold_items(cfg["data_list_file_path"], cfg["dataroot"], 0)[0])
    assert n_items < 5
    calls = _count_steps(monkeypatch)
    training.train(cfg)
    assert calls["n"] == 10


def test_an_iteration_budget_sets_the_epochs(converted, tmp_path, monkeypatch, capsys):
    cfg = _cfg(converted, tmp_path, num_iterations_per_epoch=2, budget="6")
    calls = _count_steps(monkeypatch)
    summary = training.train(cfg)
    assert summary["epochs"] == 3 and calls["n"] == 6
    assert "budget 6 iterations / 2 per epoch" in capsys.readouterr().out


def test_an_iteration_budget_not_a_whole_number_of_epochs_is_rounded_up_and_says_so(converted, tmp_path, monkeypatch,
                                                                                    capsys):
    cfg = _cfg(converted, tmp_path, num_iterations_per_epoch=4, budget="6")
    calls = _count_steps(monkeypatch)
    summary = training.train(cfg)
    assert summary["epochs"] == 2 and calls["n"] == 8
    out = capsys.readouterr().out
    assert "rounded up to whole epochs: 8 iterations" in out and "divisor of 6" in out


def test_a_time_budget_plans_the_epochs_after_the_first_and_keeps_the_plan_on_resume(converted, tmp_path, monkeypatch,
                                                                                      capsys):
    seen = []

    def plan(minutes, seconds, cap):
        seen.append((minutes, seconds, cap))
        return 3

    monkeypatch.setattr(training, "epochs_for_time", plan)
    cfg = _cfg(converted, tmp_path, num_iterations_per_epoch=1, budget="90min", num_epochs=40)
    real_step, steps = training.train_step, {"n": 0}

    def dying(*a, **k):
        steps["n"] += 1
        if steps["n"] > 2:  # die in epoch 3
            raise KeyboardInterrupt
        return real_step(*a, **k)

    monkeypatch.setattr(training, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        training.train(cfg)
    assert len(seen) == 1 and seen[0][0] == 90 and seen[0][2] == 40 and seen[0][1] > 0
    assert "3 epochs planned" in capsys.readouterr().out
    state = torch.load(tmp_path / "segresnet_0" / "model" / "last.pt", weights_only=False)["state"]
    assert state["planned_epochs"] == 3 and state["epoch"] == 2
    monkeypatch.setattr(training, "train_step", real_step)
    summary = training.train(cfg)
    assert summary["epochs"] == 3 and summary["finished"] == "completed" and len(seen) == 1


def test_budget_text_is_checked_when_given():
    assert budget_mod.parse_budget("2h") == {"minutes": 120.0}
    with pytest.raises(ValueError, match="30min, 2h"):
        budget_mod.parse_budget("two hours")
    with pytest.raises(SystemExit):
        run_auto3dseg.main(["--mode", "train", "--work_dir", "nowhere", "--budget", "soon"])


def test_validation_interval_auto_keeps_validation_near_a_fifth(tmp_path):
    """At real size validating every epoch would take most of the run: 'auto' spaces validations,
    says so, and keeps at least 4; a number in the config is used as it is."""
    import nibabel as nib
    import numpy as np

    from auto3dseg.engine.budget import validation_interval
    from auto3dseg.engine.training import _validation_every

    every, cost = validation_interval(1.3e10, [128, 128, 128], 500, 160)
    assert every == 40 and 9 < cost < 11  # a validation of a challenge fold ~ 10 epochs
    assert validation_interval(3e5, [32, 32, 32], 6, 2)[0] == 1
    path = tmp_path / "val.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 64), np.uint8), np.eye(4)), str(path))
    cfg = {"num_epochs_per_validation": "auto", "patch_size": [8, 8, 8], "batch_size": 1, "num_patches_per_image": 2}
    every, cost, note = _validation_every(cfg, [{"image": str(path)}], 1, 100)
    assert every == 25 and cost > 100 and "validation every 25 epochs" in note  # capped: 4 validations
    assert _validation_every({**cfg, "num_epochs_per_validation": 3}, [{"image": str(path)}], 1, 100) == (3, 0.0, "")
