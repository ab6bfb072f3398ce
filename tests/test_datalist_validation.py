"""Tests for datalists/validate.py and datalists/datalist.schema.json."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from datalists.validate import (
    SCHEMA_PATH,
    DatalistError,
    load_datalist,
    main,
    validate_datalist,
)

REPO = Path(__file__).resolve().parents[1]
SHAPE = (4, 5, 6)
CLASS_TABLE = [
    {"id": 1, "name": "mito_mem", "cellmap_id": 3, "instance": False, "parts": []},
    {"id": 2, "name": "mito_lum", "cellmap_id": 4, "instance": False, "parts": []},
    {"id": 3, "name": "mito", "cellmap_id": 50, "instance": True, "parts": [1, 2]},
]
LABELS = {"0": "background", "1": "mito_mem", "2": "mito_lum", "3": "mito"}


def _write_nifti(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def _crop(root: Path, name: str, shape: tuple[int, ...] = SHAPE, label: bool = True, max_value: int = 3) -> None:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    _write_nifti(root / "images" / f"{name}.nii.gz", rng.integers(0, 255, shape).astype(np.uint8))
    if label:
        lab = (np.arange(np.prod(shape)) % (max_value + 1)).reshape(shape).astype(np.uint8)
        _write_nifti(root / "labels" / f"{name}.nii.gz", lab)


def _item(name: str, fold: int, **extra) -> dict:
    return {"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz", "fold": fold, **extra}


@pytest.fixture()
def dataset(tmp_path: Path) -> tuple[Path, dict]:
    """A valid CellMap datalist with 4 training crops in 2 folds and 1 testing crop."""
    names = ["synth-1_crop1", "synth-1_crop2", "synth-2_crop3", "synth-2_crop4"]
    for n in names:
        _crop(tmp_path, n)
    _crop(tmp_path, "synth-1_crop101", label=False)
    # annotated_mask 0b111 is the MONAI-safe form of "annotated": [1, 2, 3]; the converter writes it for every item
    training = [_item(n, i % 2, annotated_mask=0b111) for i, n in enumerate(names)]
    side = {
        it["image"]: {"dataset": n.split("_")[0], "crop": n.split("_")[1], "annotated": [1, 2, 3]}
        for it, n in zip(training, names)
    }
    (tmp_path / "datalist_items.json").write_text(json.dumps(side))
    datalist = {
        "format": "cellmap-auto3dseg-datalist/1",
        "name": "cellmap",
        "modality": "em",
        "spacing": [8.0, 8.0, 8.0],
        "num_folds": 2,
        "labels": dict(LABELS),
        "class_table": copy.deepcopy(CLASS_TABLE),
        "items_file": "datalist_items.json",
        "training": training,
        "testing": [{"image": "images/synth-1_crop101.nii.gz"}],
    }
    return tmp_path, datalist


def _save(root: Path, datalist: dict, name: str = "datalist.json") -> Path:
    path = root / name
    path.write_text(json.dumps(datalist, indent=2))
    return path


def _problems(datalist, dataroot=None, **kwargs) -> list[str]:
    with pytest.raises(DatalistError) as info:
        validate_datalist(datalist, dataroot, **kwargs)
    err = info.value
    for p in err.problems:  # the message lists every problem
        assert p in str(err)
    return err.problems


def _one(problems: list[str], *needles: str) -> str:
    """The single problem containing every needle."""
    hits = [p for p in problems if all(n in p for n in needles)]
    assert len(hits) == 1, f"expected one problem with {needles}, got {hits} in {problems}"
    return hits[0]


# --------------------------------------------------------------------------- valid input


def test_schema_is_a_valid_json_schema():
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


def test_valid_datalist_passes_with_summary(dataset):
    root, datalist = dataset
    path = _save(root, datalist)
    summary = validate_datalist(path, check_label_values=True)
    assert summary["n_training"] == 4
    assert summary["n_testing"] == 1
    assert summary["num_folds"] == 2
    assert summary["folds"] == {0: 2, 1: 2}
    assert summary["classes"] == {1: "mito_mem", 2: "mito_lum", 3: "mito"}
    assert summary["checked"] == {"files": True, "shapes": True, "label_values": True}
    assert summary["warnings"] == []
    # same result from the dict with an explicit data root
    assert validate_datalist(datalist, root)["folds"] == {0: 2, 1: 2}


def test_plain_monai_datalist_passes(dataset):
    root, _ = dataset
    plain = {
        "training": [_item("synth-1_crop1", 0), _item("synth-1_crop2", 1)],
        "testing": [{"image": "images/synth-1_crop101.nii.gz"}],
    }
    summary = validate_datalist(_save(root, plain, "plain.json"))
    assert summary["num_folds"] == 2 and summary["folds"] == {0: 1, 1: 1}
    assert summary["classes"] == {}


def test_multichannel_image_list_passes(dataset):
    root, datalist = dataset
    datalist["training"][1]["image"] = ["images/synth-1_crop2.nii.gz", "images/synth-2_crop3.nii.gz"]
    datalist["training"][2]["image"] = ["images/synth-2_crop3.nii.gz", "images/synth-1_crop2.nii.gz"]
    validate_datalist(datalist, root)


def test_datalist_fits_monai_datafold_read(dataset):
    from monai.auto3dseg.utils import datafold_read

    root, datalist = dataset
    path = _save(root, datalist)
    validate_datalist(path)
    train, val = datafold_read(str(path), basedir=str(root), fold=0)
    assert [d["image"] for d in val] == [
        os.path.join(str(root), "images/synth-1_crop1.nii.gz"),
        os.path.join(str(root), "images/synth-2_crop3.nii.gz"),
    ]
    assert [d["label"] for d in train] == [
        os.path.join(str(root), "labels/synth-1_crop2.nii.gz"),
        os.path.join(str(root), "labels/synth-2_crop4.nii.gz"),
    ]
    assert val[0]["annotated_mask"] == 7 and all(os.path.isfile(d["image"]) for d in train + val)
    test, _ = datafold_read(str(path), basedir=str(root), fold=-1, key="testing")
    assert test == [{"image": os.path.join(str(root), "images/synth-1_crop101.nii.gz")}]


def test_list_of_numbers_in_items_breaks_datafold_read(dataset):
    """MONAI joins every list element with the data root: 'annotated': [1, 2] crashes it."""
    from monai.auto3dseg.utils import datafold_read

    root, datalist = dataset
    datalist["training"][1]["annotated"] = [1, 2, 3]  # agrees with its annotated_mask 0b111
    with pytest.raises(TypeError):
        datafold_read(datalist, basedir=str(root), fold=0)
    msg = _one(_problems(datalist, root), "training[1]", "synth-1_crop2", "'annotated' is a list of numbers")
    assert "datafold_read" in msg and "items_file" in msg and "annotated_mask" in msg
    # accepted on request (for callers that strip the key before MONAI reads the datalist)
    validate_datalist(datalist, root, allow_number_lists=True)


def test_tiff_2d_cellseg_shapes(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "images/a.tif", np.zeros((7, 9, 3), np.uint8))
    tifffile.imwrite(tmp_path / "labels/a.tif", np.zeros((7, 9), np.uint16))
    tifffile.imwrite(tmp_path / "images/b.tif", np.zeros((3, 7, 9), np.uint8), photometric="minisblack")
    tifffile.imwrite(tmp_path / "labels/b.tif", np.zeros((7, 8), np.uint16))
    datalist = {
        "modality": "light_microscopy", "spacing": [0.5, 0.5], "labels": {"0": "background", "1": "cell"},
        "training": [
            {"image": "images/a.tif", "label": "labels/a.tif", "fold": 0},
            {"image": "images/b.tif", "label": "labels/b.tif", "fold": 1},
        ],
    }
    msg = _one(_problems(datalist, tmp_path, check_label_values=True), "training[1]", "images/b.tif")
    assert "(7, 8)" in msg and "(3, 7, 9)" in msg
    tifffile.imwrite(tmp_path / "labels/b.tif", np.ones((7, 9), np.uint16))
    assert validate_datalist(datalist, tmp_path, check_label_values=True)["n_training"] == 2


# --------------------------------------------------------------------------- folds


def test_no_folds(dataset):
    root, datalist = dataset
    for it in datalist["training"]:
        del it["fold"]
    del datalist["num_folds"]
    msg = _one(_problems(datalist, root), "no folds")
    assert "add a 'fold' to every training item" in msg and "--num_folds 5" in msg
    assert "no validation set" in msg


def test_some_items_without_fold(dataset):
    root, datalist = dataset
    del datalist["training"][2]["fold"]
    msg = _one(_problems(datalist, root), "training[2]", "images/synth-2_crop3.nii.gz", "has no 'fold'")
    assert "0..1" in msg


def test_fold_out_of_range_and_empty_fold(dataset):
    root, datalist = dataset
    datalist["training"][3]["fold"] = 4
    problems = _problems(datalist, root)
    msg = _one(problems, "training[3]", "synth-2_crop4", "fold 4")
    assert "0..1" in msg and "num_folds" in msg
    # with num_folds 5 from the argument, fold 4 is fine but folds 2 and 3 are empty
    problems = _problems(datalist, root, num_folds=5)
    _one(problems, "fold 2 has no training item")
    _one(problems, "fold 3 has no training item")
    assert not [p for p in problems if "outside" in p]


def test_one_fold_cannot_be_cross_validated(dataset):
    root, datalist = dataset
    datalist["num_folds"] = 1
    for it in datalist["training"]:
        it["fold"] = 0
    msg = _one(_problems(datalist, root), "cannot be cross-validated", "every training item is in fold 0")
    # the fix that works for a converted CellMap datalist: re-convert with 2+ folds (crops are cut into folds)
    assert "python -m converters.cellmap.convert" in msg and "--num_folds 2" in msg
    assert "--allow-single-fold" in msg and "more crops" not in msg
    # analysis only: accepted with a warning
    summary = validate_datalist(datalist, root, allow_single_fold=True)
    assert any("cannot be cross-validated" in w and "analysis only" in w for w in summary["warnings"])


def test_all_items_in_one_of_two_folds_is_one_problem(dataset):
    root, datalist = dataset
    for it in datalist["training"]:
        it["fold"] = 1
    problems = _problems(datalist, root)
    _one(problems, "cannot be cross-validated", "every training item is in fold 1")
    assert len(problems) == 1  # no "fold 0 has no training item ... lower num_folds" advice on top


def test_single_fold_advice_fits_the_datalist(dataset):
    root, datalist = dataset
    for it in datalist["training"]:
        it["fold"] = 0
    datalist["num_folds"] = 1
    plain = {k: v for k, v in datalist.items() if k in ("training", "testing")}
    msg = _one(_problems(plain, root, check_files=False), "cannot be cross-validated")
    assert "at least 2 different folds" in msg and "converters.cellmap" not in msg
    cells = dict(datalist, kind="cells2d")
    msg = _one(_problems(cells, root, check_files=False), "cannot be cross-validated")
    assert "converters.cells.convert --num_folds 2" in msg and "2 labelled images" in msg


def test_empty_middle_fold_advice_renumbers(dataset):
    root, datalist = dataset
    for it, f in zip(datalist["training"], (0, 2, 0, 2)):
        it["fold"] = f
    datalist["num_folds"] = 3
    msg = _one(_problems(datalist, root), "fold 1 has no training item")
    assert "number the 2 folds that have items 0..1 and set num_folds to 2" in msg


def test_cli_single_fold_fails_unless_allowed(dataset, capsys):
    root, datalist = dataset
    for it in datalist["training"]:
        it["fold"] = 0
    datalist["num_folds"] = 1
    path = _save(root, datalist)
    assert main([str(path)]) == 1
    assert "cannot be cross-validated" in capsys.readouterr().err
    for flag in ("--allow-single-fold", "--allow_single_fold"):
        assert main([str(path), flag]) == 0
        out, err = capsys.readouterr()
        assert out.startswith("OK: ") and "analysis only" in err


def test_fold_must_be_integer(dataset):
    root, datalist = dataset
    datalist["training"][0]["fold"] = "0"
    msg = _one(_problems(datalist, root), "training[0]", "'fold' must be an integer")
    assert "got a string" in msg


# --------------------------------------------------------------------------- items


def test_testing_as_list_of_strings(dataset):
    root, datalist = dataset
    datalist["testing"] = ["images/synth-1_crop101.nii.gz", "images/synth-1_crop1.nii.gz"]
    msg = _one(_problems(datalist, root), "testing must be a list of objects")
    assert '{"image": "images/x.nii.gz"}' in msg and "got a list of strings" in msg


def test_testing_item_without_image(dataset):
    root, datalist = dataset
    datalist["testing"] = [{"path": 3}]
    _one(_problems(datalist, root), "testing[0]", "has no 'image' key")


def test_training_item_without_label(dataset):
    root, datalist = dataset
    del datalist["training"][1]["label"]
    _one(_problems(datalist, root), "training[1]", "synth-1_crop2", "has no 'label' key")


def test_string_metadata_in_items(dataset):
    root, datalist = dataset
    datalist["training"][2]["dataset"] = "jrc_x"
    msg = _one(_problems(datalist, root), "training[2]", "synth-2_crop3", "'dataset'")
    assert "datafold_read" in msg and os.path.join(str(root), "jrc_x") in msg
    assert "side file" in msg


def test_duplicate_images(dataset):
    root, datalist = dataset
    datalist["testing"].append({"image": "images/synth-1_crop1.nii.gz"})
    msg = _one(_problems(datalist, root), "testing[1]", "synth-1_crop1", "already listed")
    assert "training[0]" in msg


def _symlink(root, p):
    alias = root / "alias"
    if not alias.exists():
        alias.symlink_to(root / "images", target_is_directory=True)
        (root / "alias_labels").symlink_to(root / "labels", target_is_directory=True)
    return p.replace("images/", "alias/").replace("labels/", "alias_labels/")


@pytest.mark.parametrize("spell", [lambda root, p: "./" + p, lambda root, p: str(root / p),
                                   lambda root, p: p.replace("/", "//"), _symlink])
def test_one_image_spelt_two_ways_is_a_duplicate(dataset, spell):
    """The same crop in two folds, once as ``./images/x`` or an absolute path: a leak that
    string comparison let through."""
    import copy

    root, datalist = dataset
    twin = copy.deepcopy(datalist["training"][0])
    twin["fold"] = 1 - int(twin["fold"])
    twin["image"], twin["label"] = spell(root, twin["image"]), spell(root, twin["label"])
    datalist["training"].append(twin)
    problems = _problems(datalist, root)
    assert any("already listed as training[0]" in p for p in problems), problems
    assert any("is already used by training[0]" in p for p in problems), problems



def _twin(root: Path, datalist: dict, make) -> dict:
    """Item ``training[0]`` again under the name ``h``, in the other fold; ``make(src, dst)`` makes the files."""
    twin = copy.deepcopy(datalist["training"][0])
    for key in ("image", "label"):
        make(root / twin[key], root / twin[key].replace("synth-1_crop1", "h"))
        twin[key] = twin[key].replace("synth-1_crop1", "h")
    twin["fold"] = 1 - int(twin["fold"])
    datalist["training"].append(twin)
    return twin


def test_hard_link_of_an_image_in_another_fold_is_a_duplicate(dataset):
    """A hard link is the same file (same inode) under another name: realpath alone let it through."""
    root, datalist = dataset
    _twin(root, datalist, lambda src, dst: os.link(src, dst))
    problems = _problems(datalist, root)
    msg = _one(problems, "training[4]", "images/h.nii.gz", "already listed as training[0]", "hard link")
    assert "synth-1_crop1" in msg and "fold 0" in msg and "fold 1" in msg
    assert "leaks between training and validation" in msg and "remove one of the two entries" in msg
    _one(problems, "training[4]", "labels/h.nii.gz", "is already used by training[0]", "same file")


def test_byte_copy_of_an_image_is_a_duplicate(dataset):
    """A byte-for-byte copy is the same crop: found by size, then content."""
    import shutil

    root, datalist = dataset
    _twin(root, datalist, shutil.copyfile)
    msg = _one(_problems(datalist, root), "training[4]", "images/h.nii.gz", "already listed as training[0]")
    assert "byte-for-byte copy" in msg and "fold 0" in msg and "fold 1" in msg
    assert "remove one of the two entries" in msg
    datalist["training"].pop()  # the copy as a testing item: the test score would include a training crop
    datalist["testing"].append({"image": "images/h.nii.gz"})
    msg = _one(_problems(datalist, root), "testing[1]", "already listed as training[0]", "byte-for-byte")
    assert "fold 0" in msg and "testing" in msg and "test score" in msg


def test_equal_labels_and_files_of_equal_size_are_not_duplicates(tmp_path):
    """Only equal bytes are a copy: files of one size that differ (also past the first MiB) are not;
    crops with identical labels (all background, say) are fine (the fixture's labels are identical)."""
    from datalists.same_files import same_content

    big = np.random.default_rng(0).integers(0, 255, 3 << 20, dtype=np.uint8)
    paths = []
    for j, tail in enumerate([0, 1, 0]):
        data = big.copy()
        data[-1] = tail
        paths.append(tmp_path / f"f{j}.bin")
        paths[-1].write_bytes(data.tobytes())
    (tmp_path / "small.bin").write_bytes(b"x" * 10)
    found = same_content([str(p) for p in paths] + [str(tmp_path / "small.bin")])
    assert set(found) == {str(paths[0]), str(paths[2])} and found[str(paths[0])] == found[str(paths[2])]


def test_item_without_annotated_mask_among_items_with_one(dataset):
    """Training reads a missing annotated_mask as 'annotates every class': unannotated classes become background."""
    root, datalist = dataset
    del datalist["training"][2]["annotated_mask"]
    msg = _one(_problems(datalist, root), "1 of 4 labelled items have no 'annotated_mask'")
    assert "training[2]" in msg and "synth-2_crop3" in msg and "training[1]" not in msg
    assert "annotating every class" in msg and "re-convert" in msg
    for item in datalist["training"]:  # no item has one: a plain datalist, every item annotates every class
        item.pop("annotated_mask", None)
    validate_datalist(datalist, root)


def test_many_items_without_annotated_mask_are_counted(dataset):
    root, datalist = dataset
    for item in datalist["training"][1:]:
        del item["annotated_mask"]
    msg = _one(_problems(datalist, root), "3 of 4 labelled items have no 'annotated_mask'")
    assert all(f"training[{j}]" in msg for j in (1, 2, 3))


def test_whole_float_fold_is_counted_in_its_fold(dataset):
    """"fold": 1.0 passes the schema (an integer in JSON Schema) and training reads int(1.0) = 1."""
    from datalists.validate import format_summary

    root, datalist = dataset
    datalist["training"][1]["fold"] = 1.0
    datalist["num_folds"] = 2.0
    summary = validate_datalist(datalist, root)
    assert summary["folds"] == {0: 2, 1: 2} and summary["num_folds"] == 2
    assert "4 training items in 2 folds (0:2 1:2)" in format_summary(summary)
    # "checked: files, shapes" passed a truncated image without saying voxels were not read (probe F8)
    assert format_summary(summary).endswith("(images: headers only; the analysis reads every voxel)")
    datalist["training"][1]["fold"] = 1.5
    _one(_problems(datalist, root), "training[1]", "'fold' must be an integer")

def test_missing_files(dataset):
    root, datalist = dataset
    (root / "labels/synth-2_crop4.nii.gz").unlink()
    msg = _one(_problems(datalist, root), "training[3]", "label file not found")
    assert str(root / "labels/synth-2_crop4.nii.gz") in msg
    # not checked on request
    validate_datalist(datalist, root, check_files=False)
    datalist["training"][0]["image"] = "images"  # a folder: said as such, not "not found"
    _one(_problems(datalist, root), "training[0]", f"image is a folder, not a file: {root / 'images'}")


def test_wrong_dataroot_hint(dataset, tmp_path_factory):
    _, datalist = dataset
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    problems = _problems(datalist, elsewhere)
    _one(problems, "none of the 9 files exist", "data root")


def test_shape_mismatch(dataset):
    root, datalist = dataset
    _write_nifti(root / "labels/synth-1_crop2.nii.gz", np.zeros((4, 5, 7), np.uint8))
    msg = _one(_problems(datalist, root), "training[1]", "synth-1_crop2", "label shape")
    assert "(4, 5, 7)" in msg and "(4, 5, 6)" in msg
    validate_datalist(datalist, root, check_shapes=False)


def test_unreadable_nifti(dataset):
    root, datalist = dataset
    (root / "images/synth-1_crop2.nii.gz").write_bytes(b"not a nifti")
    _one(_problems(datalist, root), "training[1]", "cannot read the header")


def test_dict_without_dataroot_needs_one(dataset):
    _, datalist = dataset
    with pytest.raises(ValueError, match="dataroot is required"):
        validate_datalist(datalist)
    assert validate_datalist(datalist, check_files=False)["n_training"] == 4


# --------------------------------------------------------------------------- classes


def test_annotated_unknown_ids_and_cellmap_hint(dataset):
    root, datalist = dataset
    datalist["training"][1]["annotated_mask"] = 1 << 49  # class id 50
    msg = _one(_problems(datalist, root), "training[1]", "synth-1_crop2", "[50]", "class_table does not define")
    assert "CellMap's id of 'mito'" in msg


def test_annotated_in_items_file_checked(dataset):
    root, datalist = dataset
    side = json.loads((root / "datalist_items.json").read_text())
    side["images/synth-2_crop3.nii.gz"]["annotated"] = [1, 9]
    (root / "datalist_items.json").write_text(json.dumps(side))
    _one(_problems(datalist, root), "datalist_items.json", "synth-2_crop3", "[9]")
    side["images/synth-2_crop3.nii.gz"]["annotated"] = [1, 2]  # item 0's mask says [1, 2, 3]
    side["images/synth-1_crop1.nii.gz"]["annotated"] = [1, 2]
    (root / "datalist_items.json").write_text(json.dumps(side))
    msg = _one(_problems(datalist, root), "datalist_items.json", "synth-1_crop1", "disagrees")
    assert "training[0]" in msg
    (root / "datalist_items.json").unlink()
    _one(_problems(datalist, root), "items_file", "not found")


def test_a_float_annotated_mask_is_checked_as_the_integer_training_reads(dataset):
    """annotated_mask 4.0 (a hand edit) skipped both checks that 4 meets, while training read it as 4:
    crop1 taught one class of its three (probe round 24, J13)."""
    root, datalist = dataset
    datalist["training"][0]["annotated_mask"] = 4.0
    msg = _one(_problems(datalist, root), "datalist_items.json", "synth-1_crop1", "disagrees with annotated_mask 4")
    assert "training[0]" in msg
    datalist["training"][0]["annotated_mask"] = 7.0  # the same classes: as 7, valid
    validate_datalist(datalist, root)
    datalist["training"][0]["annotated_mask"] = 2.0 ** 40  # a class id past the table: named as for an integer
    assert any("annotated_mask" in p for p in _problems(datalist, root))


def test_annotated_not_a_list_of_ints(dataset):
    root, datalist = dataset
    datalist["training"][0]["annotated"] = [1, "2"]
    msg = _one(_problems(datalist, root, allow_number_lists=True), "training[0]", "annotated[1]")
    assert "list of integer class ids" in msg
    datalist["training"][0]["annotated"] = 3
    _one(_problems(datalist, root), "training[0]", "'annotated' must be a list")


def test_annotated_and_mask_disagree(dataset):
    root, datalist = dataset
    datalist["training"][0]["annotated"] = [1]
    _one(_problems(datalist, root, allow_number_lists=True), "training[0]", "disagree")


def test_class_table_problems(dataset):
    root, datalist = dataset
    table = datalist["class_table"]
    table[1]["id"] = 4          # ids 1, 4, 3: gap at 2
    table[2]["parts"] = [1, 7]  # unknown part
    datalist["labels"]["3"] = "mitochondria"
    problems = _problems(datalist, root, check_files=False)
    _one(problems, "ids must be 1..3", "missing [2]")
    _one(problems, "class_table[2]", "'mito'", "[7]")
    _one(problems, "labels[\"3\"] is 'mitochondria'", "'mito'")
    _one(problems, "labels[\"2\"]", "not a class_table id")


def test_duplicate_class_ids(dataset):
    root, datalist = dataset
    datalist["class_table"][2]["id"] = 2
    _one(_problems(datalist, root, check_files=False), "id 2 is used by rows [1, 2]")


def test_label_values_out_of_range(dataset):
    root, datalist = dataset
    _crop(root, "synth-2_crop4", max_value=5)
    msg = _one(_problems(datalist, root, check_label_values=True), "training[3]", "values [4, 5]")
    assert "0..3" in msg
    validate_datalist(datalist, root)  # not read unless asked


def test_label_value_255_is_not_annotated_not_an_error(dataset):
    root, datalist = dataset
    _crop(root, "synth-2_crop4", max_value=3)
    path = root / "labels" / "synth-2_crop4.nii.gz"
    img = nib.load(str(path))
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 255
    nib.save(nib.Nifti1Image(arr, img.affine), str(path))
    assert validate_datalist(datalist, root, check_label_values=True)["n_training"] == len(datalist["training"])
    arr[0, 0, 0] = 254
    nib.save(nib.Nifti1Image(arr, img.affine), str(path))
    _one(_problems(datalist, root, check_label_values=True), "training[3]", "values [254]")


# --------------------------------------------------------------------------- together, loading, CLI


def test_several_problems_reported_together(dataset):
    root, datalist = dataset
    datalist["training"][0]["dataset"] = "jrc_x"
    datalist["training"][1]["fold"] = 9
    datalist["testing"] = ["images/synth-1_crop101.nii.gz"]
    (root / "images/synth-2_crop3.nii.gz").unlink()
    path = _save(root, datalist)
    with pytest.raises(DatalistError) as info:
        validate_datalist(path)
    err = info.value
    assert len(err.problems) == 4
    assert str(err).startswith(f"4 datalist problems in {path}:")
    for needle in ("'dataset'", "fold 9", "testing must be a list of objects", "image file not found"):
        _one(err.problems, needle)
    assert all(p.startswith(str(path)) for p in err.problems)


def test_load_datalist_errors(tmp_path):
    with pytest.raises(DatalistError, match="not found"):
        load_datalist(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "training": [\n    {"image": "a.nii.gz",}\n  ]\n}\n')
    with pytest.raises(DatalistError, match="line 3"):
        load_datalist(bad)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DatalistError, match="top level must be a JSON object"):
        validate_datalist(tmp_path / "list.json")


def test_a_key_given_twice_is_refused_naming_it(dataset, tmp_path):
    """A second "training" list (or an item's "fold" given twice) was read as the last one: validate
    said "2 training items" for a file holding 7, exit 0."""
    root, datalist = dataset
    text = json.dumps(datalist)
    twice = root / "twice.json"
    twice.write_text(text[:-1] + ', "training": ' + json.dumps(datalist["training"][:2]) + "}")
    with pytest.raises(DatalistError, match=r"key 'training' given twice in the top level \(values a list of \d+ and "
                                            r"a list of 2\): JSON keeps the last one"):
        validate_datalist(twice, root)
    item = datalist["training"][0]
    fold = json.dumps(item)[:-1] + f', "fold": {1 - int(item["fold"])}' + "}"
    (root / "fold.json").write_text(text.replace(json.dumps(item), fold, 1))
    with pytest.raises(DatalistError, match=f"key 'fold' given twice in the item of image '{item['image']}'"):
        load_datalist(root / "fold.json")


def test_cli_num_folds_below_one_is_a_usage_error(dataset, capsys):
    root, datalist = dataset
    path = _save(root, datalist)
    for n in ("0", "-2"):
        with pytest.raises(SystemExit) as exit_:
            main([str(path), "--num-folds", n])
        assert exit_.value.code == 2 and "--num-folds" in capsys.readouterr().err


def test_cli_exit_codes(dataset, capsys):
    root, datalist = dataset
    path = _save(root, datalist)
    assert main([str(path), "--label-values"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: ") and "4 training items in 2 folds" in out
    datalist["training"][0]["fold"] = 7
    _save(root, datalist, "bad.json")
    assert main([str(root / "bad.json"), "--dataroot", str(root)]) == 1
    assert "fold 7" in capsys.readouterr().err


def test_cli_module_runs(dataset):
    root, datalist = dataset
    datalist["testing"] = ["images/synth-1_crop101.nii.gz"]
    path = _save(root, datalist)
    proc = subprocess.run(
        [sys.executable, "-m", "datalists.validate", str(path), "--no-files"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "testing must be a list of objects" in proc.stderr
    assert "RuntimeWarning" not in proc.stderr


@pytest.mark.parametrize("affine, words", [
    (np.diag([2.0, 2.0, 2.0, 1.0]), "spacing [2.0, 2.0, 2.0] vs the image's [1.0, 1.0, 1.0]"),
    (np.array([[1.0, 0, 0, 5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "origin [5.0, 0.0, 0.0]"),
])
def test_label_on_another_grid_than_its_image_is_a_problem(dataset, affine, words):
    root, datalist = dataset
    path = root / "labels" / "synth-1_crop2.nii.gz"
    arr = np.asarray(nib.load(str(path)).dataobj)
    nib.save(nib.Nifti1Image(arr, affine), str(path))  # same shape, another grid: MONAI would pair them anyway
    msg = _one(_problems(datalist, root), "training[1]", words)
    assert "on another grid than image" in msg and "re-convert this crop" in msg
    nib.save(nib.Nifti1Image(arr, np.eye(4) + 1e-7), str(path))  # float noise in a header is the same grid
    validate_datalist(datalist, root)


def test_label_value_helper_example_holds():
    import doctest

    from datalists import checks_files

    result = doctest.testmod(checks_files)
    assert result.attempted >= 1 and result.failed == 0


@pytest.mark.parametrize("rules, classes, warned", [
    (None, ["nuc", "er", "mito"], True),  # converted before the rules changed, classes overlap
    (1, ["nuc", "er", "mito"], True),
    (2, ["nuc", "er", "mito"], False),  # converted now
    (None, ["nuc", "er", "ne"], False),  # what nuc and er share is a class of its own: labelled the same then
    (None, ["mito_mem", "mito_lum", "mito"], False),  # nested only
])
def test_a_datalist_of_overlapping_classes_converted_before_the_label_rules_changed_is_named(dataset, rules, classes,
                                                                                              warned):
    """Before label_rules 2 a voxel of both nuc and er was labelled as one of them, the other
    trained as absent there; the datalist carried no sign of it."""
    from converters.cellmap.class_mapping import build_class_table

    root, datalist = dataset
    datalist["class_table"] = build_class_table(classes)
    datalist["labels"] = {"0": "background", **{str(r["id"]): r["name"] for r in datalist["class_table"]}}
    if rules is not None:
        datalist["label_rules"] = rules
    said = [w for w in validate_datalist(datalist, root)["warnings"] if "label_rules" in w]
    assert bool(said) == warned, said
    if warned:
        assert "nuc and er" in said[0] and "Run the converter's command again" in said[0], said


def test_a_file_that_is_no_image_by_its_name_is_a_problem(dataset, tmp_path):
    """/etc/passwd as a training image passed validate ("checked: files, shapes"); the analysis
    then failed inside MONAI's LoadImaged and sent the user back to validate (probe D16)."""
    root, datalist = dataset
    other = tmp_path / "notes.txt"
    other.write_text("not an image")
    datalist["training"][0]["image"] = str(other)
    _one(_problems(datalist, root), "training[0]", f"image {other} is not an image file by its name")


def test_training_says_again_that_its_datalist_predates_the_label_rules(dataset, tmp_path):
    """Training new bundles on such a datalist was silent: only validate, analyze and generate
    warned (probe N21)."""
    import yaml

    from auto3dseg.orchestration.training_checks import label_rules_note
    from converters.cellmap.class_mapping import build_class_table

    root, datalist = dataset
    datalist["class_table"] = build_class_table(["nuc", "er", "mito"])
    datalist["labels"] = {"0": "background", **{str(r["id"]): r["name"] for r in datalist["class_table"]}}
    path = _save(root, datalist)
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.yaml").write_text(yaml.safe_dump({"datalist": str(path), "dataroot": str(root)}))
    said: list[str] = []
    label_rules_note(work, said.append)
    assert len(said) == 1 and said[0].startswith("warning: ") and "label_rules 1, now 2" in said[0], said
    path.write_text(json.dumps({**datalist, "label_rules": 2}))
    said.clear()
    label_rules_note(work, said.append)
    assert said == []
