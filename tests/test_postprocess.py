"""Post-processing: probabilities -> semantic masks and instance ids (tiny arrays, fast)."""

from __future__ import annotations

import doctest

import cc3d
import edt
import numpy as np
import pytest
import yaml
from skimage.segmentation import watershed

import auto3dseg.postprocess as pp
from auto3dseg.postprocess import (
    class_masks,
    distance_maxima,
    ids,
    instances,
    label_instances,
    load_postprocess_params,
    params,
    params_for,
    pipeline,
    postprocess_probabilities,
    remove_small_objects,
    semantic,
    smallest_id_dtype,
    split,
    split_touching,
    voxels_for_volume,
)
from datalists.cellmap_classes import INSTANCE_CLASSES

ISO = (8.0, 8.0, 8.0)
TABLE = [
    {"id": 1, "name": "mito_mem", "cellmap_id": 3, "instance": False, "parts": []},
    {"id": 2, "name": "mito_lum", "cellmap_id": 4, "instance": False, "parts": []},
    {"id": 3, "name": "mito", "cellmap_id": 50, "instance": True, "parts": [1, 2]},
]


def balls(shape: tuple[int, int, int], spacing: tuple[float, ...], centres_nm: list[tuple[float, ...]],
          radius_nm: float) -> np.ndarray:
    """Union of balls given in nm (so anisotropic voxels give ellipsoids in voxel space)."""
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    mask = np.zeros(shape, dtype=bool)
    for c in centres_nm:
        mask |= sum(((g * s - ci) ** 2 for g, s, ci in zip(grid, spacing, c))) <= radius_nm**2
    return mask


def two_touching_balls() -> np.ndarray:
    """Two balls of radius 7 voxels, centres 12 voxels apart: one component with a neck."""
    return balls((20, 20, 36), ISO, [(80, 80, 88), (80, 80, 184)], 56)


def n_objects(labels: np.ndarray) -> int:
    return int(np.count_nonzero(np.unique(labels)))


def default_params(**changes: dict) -> dict:
    return load_postprocess_params(overrides=changes)


# --------------------------------------------------------------------------- splitting
def test_touching_balls_are_one_component_but_two_objects_after_the_split():
    mask = two_touching_balls()
    assert n_objects(label_instances(mask, ISO)) == 1
    labels = label_instances(mask, ISO, watershed=True, min_distance_nm=40)
    assert n_objects(labels) == 2
    # each ball's centre half goes to one object, the two objects differ
    left, right = labels[:, :, :11][mask[:, :, :11]], labels[:, :, 25:][mask[:, :, 25:]]
    assert len(set(left.tolist())) == 1 and len(set(right.tolist())) == 1
    assert left[0] != right[0]
    assert (labels > 0).sum() == mask.sum()  # nothing lost to the split


def test_touching_balls_through_postprocess_probabilities():
    mask = two_touching_balls()
    prob = np.stack([np.where(mask, 0.9, 0.1)] * 2 + [np.full(mask.shape, 0.1)]).astype(np.float32)
    split_on = default_params(mito={"watershed": True, "min_distance_nm": 40, "h_nm": 0, "min_size_nm3": 0})
    out = postprocess_probabilities(prob, ["mito_mem", "mito_lum", "mito"], TABLE, ISO, split_on)
    assert out["mito"].dtype == np.uint16 and n_objects(out["mito"]) == 2
    assert out["mito_mem"].dtype == np.uint8 and set(np.unique(out["mito_mem"]).tolist()) == {0, 1}
    split_off = default_params(mito={"watershed": False, "min_size_nm3": 0})
    assert n_objects(postprocess_probabilities(prob, ["mito_mem", "mito_lum", "mito"], TABLE, ISO,
                                               split_off)["mito"]) == 1


def test_anisotropic_spacing_split_uses_nanometres():
    spacing = (40.0, 8.0, 8.0)
    # balls of radius 120 nm (3 voxels in z, 15 in y/x), centres 200 nm apart along z (5 voxels)
    mask = balls((16, 34, 34), spacing, [(200, 136, 136), (400, 136, 136)], 120)
    assert n_objects(label_instances(mask, spacing)) == 1
    labels = label_instances(mask, spacing, watershed=True, min_distance_nm=100)
    assert n_objects(labels) == 2
    assert labels[5, 17, 17] != labels[10, 17, 17] and labels[5, 17, 17] and labels[10, 17, 17]
    # the seeds are 200 nm apart: a larger min_distance_nm keeps one object
    assert n_objects(label_instances(mask, spacing, watershed=True, min_distance_nm=250)) == 1
    # read as isotropic 8 nm voxels, the seeds would be 40 nm apart and suppressed
    assert n_objects(label_instances(mask, ISO, watershed=True, min_distance_nm=100)) == 1


def test_split_matches_skimage_watershed_from_the_same_seeds():
    mask = balls((24, 24, 48), ISO, [(96, 96, 80), (96, 96, 176), (96, 150, 250)], 64)
    labels = cc3d.connected_components(mask)
    assert labels.max() == 1
    dist = edt.edt(mask.view(np.uint8), anisotropy=ISO)
    seeds = distance_maxima(dist, labels, ISO, 40)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers.ravel()[seeds] = np.arange(1, seeds.size + 1)
    reference = watershed(-dist, markers, mask=mask, connectivity=3)
    ours = split_touching(mask, ISO, 40)
    assert n_objects(ours) == n_objects(reference) == 3
    # the same partition but for a few voxels on the cuts
    _, overlaps = np.unique(np.stack([ours[mask], reference[mask]]), axis=1, return_counts=True)
    assert np.sort(overlaps)[-3:].sum() >= 0.98 * mask.sum()


def test_h_maxima_keeps_a_shallow_second_maximum_whole():
    # a ball of radius 9 voxels and one of 7, centres 14 apart: a neck, a saddle ~20 nm deep
    mask = balls((30, 30, 44), ISO, [(120, 120, 100)], 72) | balls((30, 30, 44), ISO, [(120, 120, 212)], 56)
    assert n_objects(label_instances(mask, ISO)) == 1
    assert n_objects(label_instances(mask, ISO, watershed=True, min_distance_nm=24, h_nm=8)) == 2
    assert n_objects(label_instances(mask, ISO, watershed=True, min_distance_nm=24, h_nm=32)) == 1


def test_region_reached_only_through_a_corner_joins_its_object():
    mask = balls((24, 24, 48), ISO, [(96, 96, 72), (96, 96, 184)], 64)
    # a 2x2x2 blob touching ball A (centre voxel 12, 12, 9) by one corner only, its maxima
    # within min_distance of A's seed: no seed of its own, and no face towards A
    blob = (slice(21, 23), slice(13, 15), slice(10, 12))
    assert not mask[blob].any() and mask[20, 12, 9] and not mask[20, 13:15, 10:12].any()
    mask[blob] = True
    assert cc3d.connected_components(mask, connectivity=6).max() == 2  # a corner contact
    labels = label_instances(mask, ISO, watershed=True, min_distance_nm=104)
    assert n_objects(labels) == 2
    assert set(np.unique(labels[blob]).tolist()) == {int(labels[12, 12, 9])} != {int(labels[12, 12, 23])}


def test_connectivity_is_honoured():
    mask = np.zeros((3, 3, 3), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # touch by a corner only
    assert n_objects(label_instances(mask, ISO)) == 1
    assert n_objects(label_instances(mask, ISO, connectivity=6)) == 2
    assert n_objects(label_instances(mask, ISO, connectivity=6, watershed=True)) == 2


# --------------------------------------------------------------------------- sizes
def test_size_filter_removes_only_objects_below_the_volume():
    mask = np.zeros((8, 8, 20), dtype=bool)
    mask[0:2, 0:2, 0:2] = True  # 8 voxels
    mask[0:3, 0:3, 5:8] = True  # 27 voxels
    mask[0:4, 0:4, 12:16] = True  # 64 voxels
    for spacing in ((10.0, 10.0, 10.0), (40.0, 8.0, 8.0)):
        voxel = float(np.prod(spacing))
        labels = label_instances(mask, spacing, min_size_nm3=27 * voxel)
        assert labels.dtype == np.uint16
        assert sorted(np.unique(labels).tolist()) == [0, 1, 2]  # renumbered
        assert not labels[0:2, 0:2, 0:2].any()
        assert labels[0:3, 0:3, 5:8].all() and labels[0:4, 0:4, 12:16].all()
        assert n_objects(label_instances(mask, spacing, min_size_nm3=27 * voxel + 1)) == 1
    assert voxels_for_volume(27_000, (10, 10, 10)) == 27 and voxels_for_volume(27_001, (10, 10, 10)) == 28


def test_remove_small_objects_counts_ids_whole():
    labels = np.array([[5, 5, 0, 7], [0, 5, 0, 9], [9, 0, 0, 9]], dtype=np.uint32)
    out = remove_small_objects(labels, 3)
    assert out.tolist() == [[5, 5, 0, 0], [0, 5, 0, 9], [9, 0, 0, 9]]
    assert labels[0, 3] == 7  # not in place by default
    remove_small_objects(labels, 3, in_place=True)
    assert labels[0, 3] == 0


# --------------------------------------------------------------------------- ids
def test_ids_never_wrap_past_65535():
    mask = np.zeros((100, 100, 60), dtype=bool)
    mask[::2, ::2, ::2] = True  # 75,000 single voxels, no two touching even by a corner
    labels = label_instances(mask, ISO)
    assert labels.dtype == np.uint32
    assert int(labels.max()) == 75_000 == n_objects(labels)


@pytest.mark.parametrize("split_on", [False, True])
def test_ids_past_255_are_uint16_never_uint8(split_on: bool):
    mask = np.zeros((10, 10, 24), dtype=bool)
    mask[::2, ::2, ::2] = True  # 300 objects
    labels = label_instances(mask, ISO, watershed=split_on)
    assert labels.dtype == np.uint16
    assert int(labels.max()) == 300 == n_objects(labels)


def test_smallest_id_dtype():
    assert [smallest_id_dtype(n) for n in (0, 255, 256, 65_535)] == [np.dtype(np.uint16)] * 4
    assert smallest_id_dtype(65_536) == np.uint32 and smallest_id_dtype(2**32 - 1) == np.uint32
    assert smallest_id_dtype(2**32) == np.uint64
    with pytest.raises(ValueError):
        smallest_id_dtype(-1)


# --------------------------------------------------------------------------- semantic
def test_groups_are_the_union_of_their_parts_and_own_channel():
    prob = np.full((3, 1, 1, 5), 0.1, dtype=np.float32)
    prob[0, 0, 0, 0] = 0.9  # mito_mem
    prob[1, 0, 0, 1] = 0.9  # mito_lum
    prob[2, 0, 0, 2] = 0.9  # mito channel only
    masks = class_masks(prob, ["mito_mem", "mito_lum", "mito"], TABLE)
    assert masks["mito"][0, 0].tolist() == [True, True, True, False, False]
    assert masks["mito_mem"][0, 0].tolist() == [True, False, False, False, False]
    # a group with no channel of its own is still composed from its parts
    masks = class_masks(prob[:2], ["mito_mem", "mito_lum"], TABLE)
    assert masks["mito"][0, 0].tolist() == [True, True, False, False, False]


def test_nested_groups_compose_recursively():
    table = [{"id": 1, "name": "er_mem", "parts": []}, {"id": 2, "name": "ne_mem", "parts": []},
             {"id": 3, "name": "ne", "parts": [2]}, {"id": 4, "name": "er", "parts": [1, 3]}]
    prob = np.array([[0.9, 0.0, 0.0], [0.0, 0.9, 0.0]], dtype=np.float32)
    assert class_masks(prob, ["er_mem", "ne_mem"], table)["er"].tolist() == [True, True, False]


def test_thresholds_per_class_from_a_yaml_override(tmp_path):
    prob = np.full((3, 1, 1, 4), 0.4, dtype=np.float32)
    channels = ["mito_mem", "mito_lum", "mito"]
    out = postprocess_probabilities(prob, channels, TABLE, ISO, load_postprocess_params())
    assert not out["mito_mem"].any() and not out["mito"].any()
    path = tmp_path / "pp.yaml"
    path.write_text(yaml.safe_dump({"mito_mem": {"threshold": 0.3}, "mito": {"min_size_nm3": 0}}))
    params = load_postprocess_params(str(path))
    assert params_for(params, "mito_mem")["threshold"] == 0.3 and params_for(params, "mito_lum")["threshold"] == 0.5
    out = postprocess_probabilities(prob, channels, TABLE, ISO, params)
    assert out["mito_mem"].all() and not out["mito_lum"].any()
    assert out["mito"].all() and out["mito"].dtype == np.uint16  # the group takes its part


def test_softmax_input_uses_the_argmax():
    channels = ["background", "mito_mem", "mito_lum"]
    prob = np.array([[0.4, 0.2, 0.3, 0.6],
                     [0.35, 0.45, 0.2, 0.2],
                     [0.25, 0.35, 0.5, 0.2]], dtype=np.float32)[:, None, None, :]
    masks = class_masks(prob, channels, TABLE, thresholds=0.5)
    assert masks["mito_mem"][0, 0].tolist() == [False, True, False, False]  # 0.45 < 0.5 but the argmax
    assert masks["mito_lum"][0, 0].tolist() == [False, False, True, False]
    assert masks["mito"][0, 0].tolist() == [False, True, True, False]
    assert "background" not in masks


# --------------------------------------------------------------------------- parameters
def test_packaged_parameters_cover_every_instance_class():
    params = load_postprocess_params()
    assert set(INSTANCE_CLASSES) <= set(params)
    for name in ("mito", "ves", "lyso", "ld", "perox", "endo", "nuc"):
        assert params_for(params, name)["watershed"] is True
    for name in ("mt", "vim", "cell", "np"):
        assert params_for(params, name)["watershed"] is False
    assert params_for(params, "ves")["min_size_nm3"] < params_for(params, "mito")["min_size_nm3"] < params_for(
        params, "nuc")["min_size_nm3"]
    assert params_for(params, "er") == params["default"]


def test_params_merge_default_then_file_then_overrides(tmp_path):
    path = tmp_path / "pp.yaml"
    path.write_text("default:\n  threshold: 0.3\nmito:\n  h_nm: 10\n")
    params = load_postprocess_params(str(path), overrides={"mito": {"h_nm": 20}})
    assert params_for(params, "er")["threshold"] == 0.3  # the file's default reaches other classes
    assert params_for(params, "mito")["h_nm"] == 20  # overrides last
    assert params_for(params, "mito")["min_distance_nm"] == load_postprocess_params()["mito"]["min_distance_nm"]


def test_params_loader_rejects_unknown_keys_and_classes(tmp_path):
    path = tmp_path / "pp.yaml"
    path.write_text("mito:\n  treshold: 0.4\n")
    with pytest.raises(ValueError, match=r"pp\.yaml.*'treshold'"):
        load_postprocess_params(str(path))
    path.write_text("mitochondria:\n  threshold: 0.4\n")
    with pytest.raises(ValueError, match=r"pp\.yaml.*mitochondria"):
        load_postprocess_params(str(path))
    with pytest.raises(ValueError, match=r"overrides.*'min_size'"):
        load_postprocess_params(overrides={"ves": {"min_size": 1}})
    with pytest.raises(TypeError, match="wrong type"):
        load_postprocess_params(overrides={"ves": {"watershed": "yes"}})
    with pytest.raises(ValueError, match="connectivity"):
        load_postprocess_params(overrides={"ves": {"connectivity": 10}})
    path.write_text("mito:\n  threshold: [0.4\n")  # broken YAML: file, line and column, not a parser traceback
    with pytest.raises(ValueError, match=r"pp\.yaml:3:1: not valid YAML"):
        load_postprocess_params(str(path))
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml not found"):
        load_postprocess_params(str(tmp_path / "missing.yaml"))


def test_docstring_examples():
    for module in (pp, ids, instances, params, pipeline, semantic, split):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_only_the_requested_labels_are_produced():
    from auto3dseg.postprocess import postprocess_probabilities

    table = [{"id": 1, "name": "mito_mem", "cellmap_id": 3, "instance": False, "parts": []},
             {"id": 2, "name": "mito", "cellmap_id": 50, "instance": True, "parts": [1]}]
    prob = np.zeros((2, 2, 2, 6), dtype=np.float32)
    prob[0, :, :, 1:3] = 0.9
    params = pp.load_postprocess_params(overrides={"mito": {"min_size_nm3": 0, "watershed": False}})
    out = postprocess_probabilities(prob, ["mito_mem", "mito"], table, (8.0, 8.0, 8.0), params, labels=["mito"])
    assert list(out) == ["mito"] and out["mito"].max() == 1


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """The same objects, whatever their ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))
            and np.array_equal(a == 0, b == 0))


def test_splitting_object_by_object_gives_the_whole_volume_split():
    """Large masks are split one object at a time (bounded memory): the same objects."""
    rng = np.random.default_rng(4)
    centres = [tuple(rng.uniform(40, 440, 3)) for _ in range(40)]
    mask = balls((64, 64, 64), ISO, centres, 44) | balls((64, 64, 64), ISO, [(100, 100, 100), (100, 100, 190)], 50)
    whole = split_touching(mask, ISO, 40.0, h_nm=4.0)
    by_object = split_touching(mask, ISO, 40.0, h_nm=4.0, max_voxels=0)
    assert n_objects(whole) > n_objects(label_instances(mask, ISO))  # something was split
    assert _same_partition(whole, by_object)


def test_renumbering_dense_and_sparse_masks_agree():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 50, (30, 30, 30)).astype(np.uint32)  # dense: the lookup-table path
    dense = ids.renumber_by_size(labels, 530)
    sparse = labels.copy()
    sparse[5:] = 0  # 1/6 of the voxels: the foreground path
    for lab in (labels, sparse):
        counts = np.bincount(lab.ravel())
        out = ids.renumber_by_size(lab, 530 if lab is labels else 80)
        kept = [i for i in range(1, counts.size) if counts[i] >= (530 if lab is labels else 80)]
        assert out.max() == len(kept) and out.dtype == np.uint16
        for new, old in enumerate(kept, 1):  # ids in order of the old ones
            assert np.array_equal(out == new, lab == old)
    assert dense.max() > 0


def test_dense_maxima_are_thinned_per_cell_with_the_same_objects(monkeypatch):
    """Thinning through one maximum per cell (the bound for plateaus and noise) gives the same
    objects on real shapes, and a noise mask no longer needs a pair per two voxels in reach."""
    rng = np.random.default_rng(4)
    centres = [tuple(rng.uniform(40, 440, 3)) for _ in range(40)]
    mask = balls((64, 64, 64), ISO, centres, 44) | balls((64, 64, 64), ISO, [(100, 100, 100), (100, 100, 190)], 50)
    exact = split_touching(mask, ISO, 40.0, h_nm=4.0)
    monkeypatch.setattr(split, "DENSE_MAXIMA", 0)
    assert _same_partition(exact, split_touching(mask, ISO, 40.0, h_nm=4.0))
    noise = np.random.default_rng(0).random((48, 48, 48)) < 0.5  # nearly every voxel a maximum
    assert split_touching(noise, ISO, 100.0, h_nm=40.0).max() >= 1


def test_an_object_too_large_to_split_is_kept_whole_and_said(monkeypatch):
    mask = two_touching_balls()
    assert n_objects(split_touching(mask, ISO, 24.0, max_voxels=0)) == 2
    monkeypatch.setattr(split, "MAX_SPLIT_VOXELS", 100)
    with pytest.warns(UserWarning, match="voxels is kept whole"):
        assert n_objects(split_touching(mask, ISO, 24.0, max_voxels=0)) == 1


def test_a_plateau_of_maxima_within_reach_is_thinned_in_bounded_memory():
    """A flat slab makes every voxel of its middle layer a distance maximum (40,000 here), each
    within reach of thousands of others: comparing all those pairs took GBs; cells bound it."""
    import tracemalloc

    from auto3dseg.postprocess.split import distance_maxima

    mask = np.zeros((5, 200, 200), dtype=bool)
    mask[1:4] = True
    dist = np.minimum(np.arange(5)[:, None, None], 4 - np.arange(5)[:, None, None]).astype(np.float32) * mask
    labels = mask.astype(np.uint8)
    tracemalloc.start()
    seeds = distance_maxima(dist, labels, (8.0, 8.0, 8.0), 100.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"  # all pairs: 307 MiB
    # as the exact rule has it: every plateau voxel but the first in C order has an earlier one within reach
    assert seeds.tolist() == [int(np.ravel_multi_index((2, 0, 0), mask.shape))]


def test_postprocess_params_given_while_a_tuned_file_exists_is_said(tmp_path):
    from auto3dseg.postprocess.tune import TUNED_YAML, postprocess_params_for

    (tmp_path / TUNED_YAML).write_text("mito:\n  threshold: 0.3\n")
    explicit = tmp_path / "mine.yaml"
    explicit.write_text("mito:\n  threshold: 0.6\n")
    said = []
    assert postprocess_params_for(tmp_path, None, False, log=said.append)["mito"]["threshold"] == 0.3
    assert str(tmp_path / TUNED_YAML) in said[-1]
    assert postprocess_params_for(tmp_path, explicit, False, log=said.append)["mito"]["threshold"] == 0.6
    assert "not used" in said[-1] and str(tmp_path / TUNED_YAML) in said[-1] and str(explicit) in said[-1]


def test_a_spelt_out_class_name_in_a_parameter_file_gets_the_class_it_means(tmp_path):
    """`mitochondria:` in a post-processing file was refused with no "did you mean"."""
    from auto3dseg.postprocess import load_postprocess_params

    f = tmp_path / "pp.yaml"
    f.write_text("mitochondria:\n  threshold: 0.4\n")
    with pytest.raises(ValueError, match=r"unknown CellMap class 'mitochondria'\. Did you mean mito\b"):
        load_postprocess_params(f)


def test_parameters_for_a_class_the_model_does_not_predict_are_named(tmp_path):
    """`nuc:` in --postprocess_params of a model without nuc was accepted without a word."""
    import json

    import yaml

    from auto3dseg.postprocess.tune import postprocess_params_for

    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"class_table": [{"id": 1, "name": "mito", "kind": "instance"},
                                                    {"id": 2, "name": "er", "kind": "semantic"}]}))
    (tmp_path / "input.yaml").write_text(yaml.safe_dump({"datalist": str(datalist)}))
    mine = tmp_path / "mine.yaml"
    mine.write_text("default:\n  threshold: 0.5\nmito:\n  threshold: 0.6\nnuc:\n  threshold: 0.4\n")
    said = []
    assert postprocess_params_for(tmp_path, mine, False, log=said.append)["mito"]["threshold"] == 0.6
    assert len(said) == 1 and "sets parameters for nuc, which the model does not predict" in said[0], said
    mine.write_text("mito:\n  threshold: 0.6\n")
    said.clear()
    postprocess_params_for(tmp_path, mine, False, log=said.append)
    assert said == []


@pytest.mark.parametrize("text", ["", "# the values for mito, to do\n"])
@pytest.mark.parametrize("cells", [False, True])
def test_a_parameter_file_that_sets_nothing_is_refused(tmp_path, text, cells):
    """An empty --postprocess_params file ran with the packaged defaults, as if it set values."""
    from auto3dseg.postprocess.tune import TUNED_YAML, postprocess_params_for

    (tmp_path / TUNED_YAML).write_text("mito:\n  threshold: 0.3\n" if not cells else "min_cell_px: 4\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text(text)
    with pytest.raises(ValueError, match=rf"--postprocess_params {mine} holds no setting .*or write {{}} "
                                         r"to mean the packaged defaults"):
        postprocess_params_for(tmp_path, mine, cells, log=print)
    mine.write_text("{}\n")  # the packaged defaults on purpose (over the tuned file): accepted
    assert postprocess_params_for(tmp_path, mine, cells, log=print) == postprocess_params_for(tmp_path / "no", None,
                                                                                            cells, log=print)


def test_an_empty_start_file_for_tuning_is_refused_before_any_search(tmp_path):
    from auto3dseg.postprocess.tune import tune_postprocess

    (tmp_path / "oof").mkdir()
    (tmp_path / "oof" / "oof.json").write_text("{}")
    start = tmp_path / "start.yaml"
    start.write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="holds no setting"):
        tune_postprocess(tmp_path, base=start, log=print)
    assert not (tmp_path / "tuning" / "report.json").exists()
