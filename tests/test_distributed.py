"""Two training processes on the CPU (torchrun, DistributedDataParallel with gloo), launched the
way ``--mode train --gpus 2`` launches them; and what a CPU machine says of ``--gpus 2``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from auto3dseg.bundles.bundle_algo import TEMPLATES_DIR
from auto3dseg.bundles.config import derive_hyper_parameters, write_yaml_atomic
from auto3dseg.orchestration.train_bundles import device_note, threads_per_process, train_bundle
from auto3dseg.orchestration.workdir import Bundle


def _bundle(converted, tmp_path: Path) -> Bundle:
    """A segresnet bundle folder (template scripts + derived tiny config), 2 epochs."""
    from auto3dseg.analysis.analyze import analyze

    out, _ = converted
    work = out.parent / "ddp_work"
    if not (work / "datastats.yaml").is_file():
        analyze(out / "datalist.json", work, out, workers=0, validate=False)
    path = tmp_path / "segresnet_0"
    shutil.copytree(TEMPLATES_DIR / "segresnet", path)
    dl = json.loads((out / "datalist.json").read_text())
    cfg = derive_hyper_parameters("segresnet", yaml.safe_load((work / "datastats.yaml").read_text()), dl,
                                  datalist_path=out / "datalist.json", dataroot=out, fold=0, bundle_root=path,
                                  num_epochs=2, patch_size=16)
    cfg.update(num_workers=0, sw_batch_size=4, num_iterations_per_epoch=2)
    cfg["network"].update(init_filters=8, dsdepth=2)
    write_yaml_atomic(path / "configs" / "hyper_parameters.yaml", cfg)
    return Bundle(path, "segresnet", 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU (gloo) path")
def test_two_cpu_processes_train_one_bundle_with_ddp(converted, tmp_path):
    bundle = _bundle(converted, tmp_path)
    status, score, detail = train_bundle(bundle, gpus="2", log=lambda *a: None)
    assert status == "trained", detail
    log = (bundle.path / "training.log").read_text()
    assert "torch.distributed.run" in log and "--nproc_per_node=2" in log
    assert "device cpu x2" in log  # both ranks joined one process group
    state = torch.load(bundle.path / "model" / "last.pt", weights_only=False)["state"]
    assert state["epoch"] == 2 and state["finished"] == "completed"
    assert score is not None and 0.0 <= score <= 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="says what --gpus means without CUDA")
def test_gpus_without_cuda_says_what_it_does():
    assert "2 CPU processes" in device_note("2") and "gloo" in device_note("2")
    assert device_note("cpu") is None and device_note(None) is None


def test_threads_follow_the_slurm_allocation():
    assert threads_per_process(4, {"SLURM_CPUS_PER_TASK": "8"}) == 2
    assert threads_per_process(16, {"SLURM_CPUS_PER_TASK": "8"}) == 1
    assert threads_per_process(2, {"SLURM_CPUS_PER_TASK": "8", "OMP_NUM_THREADS": "3"}) is None  # the user's wins
    assert threads_per_process(2, {}) is None
