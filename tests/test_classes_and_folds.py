"""Class table facts, the label lookup, per-crop annotated ids, and fold assignment."""

from converters.cellmap.zarr_tree import ClassStatus
from converters.cellmap.class_mapping import (
    annotated_ids,
    build_class_table,
    cellmap_lookup,
    default_classes,
    leaf_classes,
)
from converters.folds import FoldItem, assign_folds
from datalists.cellmap_classes import CELLMAP_CLASSES, INSTANCE_CLASSES, atomic_ids


def _st(annotated, unknown=()):
    d = {n: ClassStatus(n, True, "annotated") for n in annotated}
    d.update({n: ClassStatus(n, False, "all unknown") for n in unknown})
    return d


def test_class_table_has_challenge_facts():
    assert CELLMAP_CLASSES["mito"].cellmap_id == 50
    assert set(CELLMAP_CLASSES["mito"].parts) == {3, 4, 5}
    assert INSTANCE_CLASSES == {"nuc", "vim", "ves", "endo", "lyso", "ld", "perox", "mito", "np", "mt", "cell"}
    assert atomic_ids(["ves"]) == {8, 9}


def test_default_classes_mixes_leaves_and_groups_across_crops():
    crops = [
        _st(["mito", "mito_mem", "mito_lum", "er_mem"]),  # parts annotated: mito is a group here
        _st(["mito"], unknown=["er"]),                     # only the group: mito is a leaf here
    ]
    assert leaf_classes(crops[1]) == {"mito"}
    assert default_classes(crops) == ["mito_mem", "mito_lum", "er_mem", "mito"]


def test_lookup_maps_to_most_specific_selected_class():
    table = build_class_table(["mito_mem", "mito_lum", "mito", "er"])
    lut = cellmap_lookup(table)
    # atomic parts keep their ids; mito_ribo (not selected) falls back to the mito group;
    # the mito group id itself maps to mito; ne_mem is part of er in CellMap's table
    assert lut[[3, 4, 5, 50, 16, 20, 35]].tolist() == [1, 2, 3, 3, 4, 4, 0]


def test_annotated_ids_derive_groups_only_from_all_parts():
    table = build_class_table(["mito_mem", "mito_lum", "mito", "ves"])
    assert annotated_ids(_st(["mito_mem", "mito_lum"]), table) == [1, 2]  # mito_ribo missing
    assert annotated_ids(_st(["mito_mem", "mito_lum", "mito_ribo"]), table) == [1, 2, 3]
    assert annotated_ids(_st(["ves_mem", "ves_lum"]), table) == [4]
    assert annotated_ids(_st(["mito"], unknown=["mito_mem"]), table) == [3]


def test_folds_keep_datasets_together_when_enough():
    items = [FoldItem(f"{d}_c{i}", d, frozenset({1})) for d in "abc" for i in range(3)]
    folds, k, how = assign_folds(items, 3)
    assert (k, how) == (3, "dataset")
    for d in "abc":
        assert len({folds[f"{d}_c{i}"] for i in range(3)}) == 1
    assert sorted(set(folds.values())) == [0, 1, 2]


def test_folds_spread_rare_class_and_never_leave_a_fold_empty():
    items = [FoldItem(f"c{i}", "one_dataset", frozenset({1, 7} if i < 3 else {1})) for i in range(10)]
    folds, k, how = assign_folds(items, 3)
    assert (k, how) == (3, "crop")
    assert {folds[f"c{i}"] for i in range(3)} == {0, 1, 2}  # the rare class 7 lands in every fold
    assert sorted(set(folds.values())) == [0, 1, 2]


def test_folds_reduced_when_too_few_crops():
    folds, k, _ = assign_folds([FoldItem("a", "d", frozenset()), FoldItem("b", "d", frozenset())], 5)
    assert k == 2 and sorted(folds.values()) == [0, 1]
