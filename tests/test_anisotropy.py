"""Anisotropic voxels (nnU-Net's lesson, bench/RESULTS.md): a segresnet told the voxel size does
not downsample the coarse axis first, so that axis needs fewer voxels per patch; the default patch
covers the same physical extent on every axis; rotations never mix a coarse and a fine axis."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from auto3dseg.bundles.config import derive_hyper_parameters, derive_patch_size
from auto3dseg.bundles.checks import override_value_problem
from auto3dseg.engine import training
from auto3dseg.engine.networks import build_network, patch_multiples
from auto3dseg.engine.transforms import training_transforms

TABLE = [{"id": 1, "name": "mito", "parts": []}]


def _stats(shape, spacing):
    return {"stats_summary": {"image_stats": {"shape": {"median": list(shape)}, "spacing": {"median": list(spacing)},
                                              "channels": {"max": 1}}}}


def _generate(tmp_path, algo, shape, spacing):
    dl = {"class_table": TABLE, "training": [{"annotated_mask": 1}], "modality": "em"}
    return derive_hyper_parameters(algo, _stats(shape, spacing), dl, datalist_path=tmp_path / "dl.json",
                                   dataroot=tmp_path, fold=0, bundle_root=tmp_path / f"{algo}_0")


def test_generation_plans_anisotropic_data_in_physical_units(tmp_path):
    # 6 x 6 x 40 nm, 10 slices per image (the SBEM sample's shape): z is not padded to 16
    cfg = _generate(tmp_path, "segresnet", [1000, 1000, 10], [6.0, 6.0, 40.0])
    assert cfg["network"]["resolution"] == [6.0, 6.0, 40.0]
    mults = patch_multiples("segresnet", cfg["network"])
    assert mults == [8, 8, 2]
    patch = cfg["patch_size"]
    assert patch[2] == 10 and all(p % m == 0 for p, m in zip(patch, mults))
    # the voxels z cannot take go in-plane, within the default's 128^3
    assert patch[0] == patch[1] > 128 and math.prod(patch) <= 128 ** 3
    # a network built from the bundle takes the patch and gives it back whole
    net = build_network("segresnet", 1, 1, {**cfg["network"], "init_filters": 4, "dsdepth": 1})
    small = [64, 64, 10]
    assert tuple(net(torch.zeros(1, 1, *small)).shape[2:]) == tuple(small)
    # without the voxel size the same network could not take 10 slices
    iso = build_network("segresnet", 1, 1, {**cfg["network"], "resolution": None, "init_filters": 4, "dsdepth": 1})
    with pytest.raises(ValueError):
        iso(torch.zeros(1, 1, *small))


def test_large_anisotropic_images_get_a_physically_cubic_patch(tmp_path):
    cfg = _generate(tmp_path, "segresnet", [2000, 2000, 2000], [6.0, 6.0, 40.0])
    x, y, z = cfg["patch_size"]
    assert x == y and abs(x * 6.0 - z * 40.0) <= 8 * 6.0  # equal extent in nm, to one rounding step
    assert math.prod(cfg["patch_size"]) <= 128 ** 3


def test_isotropic_data_keeps_the_cube_and_an_isotropic_network(tmp_path):
    cfg = _generate(tmp_path, "segresnet", [400, 400, 400], [8.0, 8.0, 8.0])
    assert cfg["patch_size"] == [128, 128, 128] and cfg["network"]["resolution"] is None
    # a crop thin on one axis gives the others its voxels (the patch stays within 128^3)
    thin = _generate(tmp_path, "segresnet", [500, 500, 40], [8.0, 8.0, 8.0])["patch_size"]
    assert thin[2] == 40 and thin[0] == thin[1] > 128 and math.prod(thin) <= 128 ** 3
    # --patch_size is a side, as before: no axis beyond it
    assert derive_patch_size("segresnet", [500, 500, 40], max_side=96) == [96, 96, 40]
    # networks that cannot skip an axis keep one multiple for all
    assert _generate(tmp_path, "dints", [1000, 1000, 10], [6.0, 6.0, 40.0])["patch_size"][2] == 16


def test_resolution_override_is_checked():
    assert override_value_problem("segresnet:network#resolution", "[6,6,40]", None) is None
    assert override_value_problem("segresnet:network#resolution", "null", [6, 6, 40]) is None
    assert "positive voxel size" in override_value_problem("segresnet:network#resolution", "[6,0,40]", None)


def test_rotations_never_swap_a_coarse_axis(converted, tmp_path):
    from monai.transforms import RandRotate90d

    cfg = {"patch_size": [16, 32, 16], "spacing": [8.0, 8.0, 40.0], "num_patches_per_image": 1,
           "intensity": {"mode": "zscore"}, "class_ids": [1], "class_members": [[1]], "spatial_dims": 3,
           "cache": False}
    assert not [t for t in training_transforms(cfg).transforms if isinstance(t, RandRotate90d)]
    cfg["spacing"] = [8.0, 8.0, 8.0]
    assert [t.spatial_axes for t in training_transforms(cfg).transforms if isinstance(t, RandRotate90d)] == [(0, 2)]


def test_anisotropic_segresnet_trains_and_predicts(converted, tmp_path):
    """A patch of 6 slices (not a multiple of 8) trains, checkpoints, and predicts whole images."""
    from auto3dseg.analysis.analyze import analyze
    from auto3dseg.engine.inference import InferClass

    out, _ = converted
    work = tmp_path / "work"
    analyze(out / "datalist.json", work, out, workers=0, validate=False)
    dl = json.loads((out / "datalist.json").read_text())
    cfg = derive_hyper_parameters("segresnet", yaml.safe_load((work / "datastats.yaml").read_text()), dl,
                                  datalist_path=out / "datalist.json", dataroot=out, fold=0,
                                  bundle_root=tmp_path / "segresnet_0", num_epochs=1)
    cfg.update(num_workers=0, sw_batch_size=2, num_iterations_per_epoch=2, patch_size=[16, 16, 6])
    cfg["network"].update(init_filters=4, dsdepth=2, resolution=[8.0, 8.0, 40.0])
    with pytest.raises(ValueError, match="multiple of 8"):  # the same patch without the voxel size
        training.train({**cfg, "network": {**cfg["network"], "resolution": None}})
    summary = training.train(cfg)
    assert summary["finished"] == "completed"
    hp = tmp_path / "hyper_parameters.yaml"
    hp.write_text(yaml.safe_dump(cfg))
    inferer = InferClass([str(hp)], device="cpu")
    assert inferer.cfg["network"]["resolution"] == [8.0, 8.0, 40.0]
    image = out / dl["testing"][0]["image"]
    prob = inferer.infer(str(image))
    import nibabel as nib

    assert tuple(prob.shape[1:]) == nib.load(str(image)).shape[:3]
    assert np.isfinite(prob.numpy()).all()
