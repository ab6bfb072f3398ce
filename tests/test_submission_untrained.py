"""A class no training crop annotates is in the class table (``--classes`` named it), so the model
has a channel for it, but that channel was never trained: submit wrote its untrained output and
called it "predicted" (probe round 24, J27)."""

from __future__ import annotations

import json

import numpy as np
import zarr


def test_a_class_no_training_crop_annotates_is_written_empty_and_said(trained_work, tmp_path):
    from auto3dseg.postprocess import load_postprocess_params
    from auto3dseg.submission.cellmap import write_crops

    ens = json.loads((trained_work / "ensemble_output" / "ensemble.json").read_text())
    prob = ens["items"][0]["probabilities"]
    table = [{"id": i + 1, "name": n} for i, n in enumerate(ens["channels"])]
    from auto3dseg.submission.cellmap import map_labels

    _, grid = map_labels(prob, ens["channels"], table, load_postprocess_params())
    voxel, origin, shape = list(grid.spacing), list(grid.origin), list(grid.shape)  # every voxel covered
    names = [n for n in ens["channels"] if n != "background"][:2]
    wanted = {7: [{"label": n, "voxel_size": voxel, "translation": origin, "shape": shape} for n in names]}
    said: list[str] = []
    params = load_postprocess_params(overrides={"default": {"min_size_nm3": 0}})
    report = write_crops(tmp_path / "a.zarr", wanted, {7: [prob]}, ens["channels"], table, params, said.append,
                         converted=[7], untrained=[names[0]])
    rows = {r["label"]: r for r in report.rows}
    assert rows[names[0]]["status"] == "never trained (no training crop annotates it)"
    assert rows[names[1]]["status"] == "predicted"
    assert any(f"no training crop annotates them, so their channels were never trained: written empty: {names[0]}"
               in m for m in said), said
    assert not np.asarray(zarr.open_group(str(tmp_path / "a.zarr"), mode="r")[f"crop7/{names[0]}"][...]).any()
    assert names[0] in {r["label"] for r in report.empty}
