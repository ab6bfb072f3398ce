"""Bad input of a work_dir: one of another datalist or a moved one, a datalist converted again in place,
hand-edited bundle configs and input.yaml, generate --force while a run uses the bundles. Each is
refused with one line naming the file and the fix, and the work_dir is left as it was."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

import run_auto3dseg
from auto3dseg.orchestration.workdir import check_input_datalist
from pipeline_work import TINY_NET, bundle_hp, file_times


# ----------------------------------------------------------------------------- 4. a work_dir of another datalist
def test_a_work_dir_of_another_datalist_is_refused_and_left_alone(generated, converted, converted_cells, tmp_path,
                                                                  capsys):
    cells = converted_cells[0] / "datalist.json"
    cellmap = converted[0] / "datalist.json"
    before = file_times(generated)
    rc = run_auto3dseg.main(["--mode", "full", "--datalist", str(cells), "--work_dir", str(generated), "--workers", "0",
                             "--force_new_datalist"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert str(cellmap.resolve()) in err and str(cells.resolve()) in err and "use another --work_dir" in err
    assert file_times(generated) == before  # input.yaml still names the CellMap datalist; nothing moved
    assert yaml.safe_load((generated / "input.yaml").read_text())["datalist"] == str(cellmap.resolve())

    # another datalist of the same kind: refused unless --force_new_datalist says it is the same data
    other = tmp_path / "nifti" / "datalist.json"
    other.parent.mkdir()
    dl = json.loads(cellmap.read_text())
    other.write_text(json.dumps(dict(dl, training=dl["training"][:-1])))
    for mode in ("submit", "analyze"):
        rc = run_auto3dseg.main(["--mode", mode, "--datalist", str(other), "--work_dir", str(generated)])
        err = capsys.readouterr().err
        assert rc == 2 and "--force_new_datalist" in err and str(other) in err and str(cellmap.resolve()) in err
    assert file_times(generated) == before
    note = check_input_datalist(generated, other, other.parent, allow_other=True)
    assert note and "--force_new_datalist" in note
    # the same file by another path, or a copy next to it, is no other datalist
    assert check_input_datalist(generated, cellmap.parent / ".." / cellmap.parent.name / "datalist.json",
                                cellmap.parent) is None
    copy = cellmap.parent / "datalist_copy.json"
    copy.write_text(cellmap.read_text())
    try:
        assert "same content" in check_input_datalist(generated, copy, cellmap.parent)
    finally:
        copy.unlink()


def test_an_analysis_only_work_dir_refuses_another_datalist(converted, tmp_path, capsys):
    cellmap = converted[0] / "datalist.json"
    work = tmp_path / "work"
    assert run_auto3dseg.main(["--mode", "analyze", "--datalist", str(cellmap), "--work_dir", str(work),
                               "--workers", "0"]) == 0
    assert yaml.safe_load((work / "input.yaml").read_text())["datalist"] == str(cellmap.resolve())
    other = tmp_path / "nifti" / "datalist.json"
    other.parent.mkdir()
    dl = json.loads(cellmap.read_text())
    other.write_text(json.dumps(dict(dl, training=dl["training"][:-1])))
    capsys.readouterr()
    rc = run_auto3dseg.main(["--mode", "generate", "--datalist", str(other), "--work_dir", str(work),
                             "--algos", "segresnet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--force_new_datalist" in err and str(other) in err, err
    assert not list(work.glob("segresnet_*"))


def test_a_datalist_reconverted_in_place_is_warned(converted, tmp_path, capsys):
    data = tmp_path / "nifti"
    shutil.copytree(converted[0], data)
    work = tmp_path / "work"
    assert run_auto3dseg.main(["--mode", "analyze", "--datalist", str(data / "datalist.json"), "--work_dir",
                               str(work), "--workers", "0"]) == 0
    assert "changed since" not in capsys.readouterr().err
    dl = json.loads((data / "datalist.json").read_text())
    (data / "datalist.json").write_text(json.dumps(dict(dl, training=dl["training"][::-1])))  # same path, new content
    rc = run_auto3dseg.main(["--mode", "generate", "--datalist", str(data / "datalist.json"), "--work_dir",
                             str(work), "--algos", "segresnet", "--num_fold", "1", "--patch_size", "16"])
    err = capsys.readouterr().err
    assert rc == 0 and f"{data / 'datalist.json'} changed since" in err and "not its training items" in err, err
    assert "--force" not in err  # the bundles stand: no advice to throw them away
    from auto3dseg.orchestration.workdir import datalist_changed

    (data / "datalist.json").write_text(json.dumps(dl))  # the items in their first order: content changed again
    assert datalist_changed(work).startswith("note:")
    image = data / dl["training"][1]["image"]  # and re-converted in place: the same items, other files
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert datalist_changed(work).startswith("warning:") and "--force" in datalist_changed(work)
    dl["training"][0]["fold"] = 1 - int(dl["training"][0]["fold"])  # the training items themselves changed
    (data / "datalist.json").write_text(json.dumps(dl))
    rc = run_auto3dseg.main(["--mode", "generate", "--datalist", str(data / "datalist.json"), "--work_dir",
                             str(work), "--algos", "segresnet", "--num_fold", "1", "--patch_size", "16"])
    err = capsys.readouterr().err
    assert rc == 2 and f"warning: {data / 'datalist.json'} changed since" in err and "--force" in err, err


def test_a_moved_datalist_is_named_and_force_new_datalist_repoints_the_work_dir(generated, converted, tmp_path,
                                                                               capsys):
    import shutil

    data, work = tmp_path / "a", tmp_path / "work"
    shutil.copytree(converted[0], data)
    shutil.copytree(generated, work, symlinks=True)
    src = yaml.safe_load((work / "input.yaml").read_text())
    (work / "input.yaml").write_text(yaml.safe_dump({**src, "datalist": str(data / "datalist.json"),
                                                     "dataroot": str(data)}))
    moved = tmp_path / "b"
    data.rename(moved)
    rc = run_auto3dseg.main(["--mode", "oof", "--work_dir", str(work)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Errno" not in err
    assert str(work / "input.yaml") in err and str(data / "datalist.json") in err and "--force_new_datalist" in err
    # the same data at its new place: accepted, and input.yaml names it for every later step
    rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(work), "--datalist", str(moved / "datalist.json"),
                             "--force_new_datalist"])
    err = capsys.readouterr().err
    assert "now works on" in err
    new = yaml.safe_load((work / "input.yaml").read_text())
    assert new["datalist"] == str((moved / "datalist.json").resolve()) and new["dataroot"] == str(moved.resolve())
    assert {k: v for k, v in new.items() if k not in ("datalist", "dataroot")} == {
        k: v for k, v in src.items() if k not in ("datalist", "dataroot")}


# ----------------------------------------------------------------------------- hand-edited work_dir files
@pytest.mark.parametrize("edit, words", [
    (lambda t: t + "  bad: [unclosed\n", [":{end}:1: not valid YAML", "--mode generate --force"]),
    (lambda t: re.sub(r"(?m)^num_epochs: .*$", "num_epochs: abc", t),
     ["num_epochs: abc: expected a whole number >= 1", "--override segresnet:num_epochs="]),
    (lambda t: re.sub(r"(?m)^learning_rate: .*$", "learning_rate: -1", t), ["learning_rate: -1: expected a number > 0"]),
    (lambda t: re.sub(r"(?m)^sw_memory_gb: .*$", "sw_memory_gb: 0", t), ["sw_memory_gb: 0: expected a number > 0 or auto"]),
    # what only building the run would meet: a MONAI expression (our engine evaluates none), a network
    # value of the wrong type, a patch or voxel size of the wrong length, an emptied file
    (lambda t: re.sub(r"(?m)^learning_rate: .*$", 'learning_rate: "$@weight_decay"', t),
     ["cannot be trained as configured: learning_rate '$@weight_decay': expected a number"]),
    (lambda t: re.sub(r"(?m)^  norm: .*$", "  norm: bogus", t),
     ["cannot be trained as configured", "Unsupported option 'BOGUS'"]),
    (lambda t: re.sub(r"(?m)^patch_size: .*$", "patch_size: [16, 16]", t),
     ["patch_size [16, 16]: expected 3 whole numbers"]),
    # a patch the network shrinks to one voxel: its normalisation's traceback in every rank (probe C3)
    (lambda t: re.sub(r"(?m)^patch_size: .*$", "patch_size: [8, 8, 8]", t),
     ["patch_size [8, 8, 8]: segresnet downsamples it by [8, 8, 8] to a single voxel", "smallest patch is [16, 16, 16]"]),
    (lambda t: re.sub(r"(?m)^  resolution: .*$", "  resolution: [8, 8]", t),
     ["network#resolution [8, 8]: expected null or 3 voxel sizes"]),
    (lambda t: "", ["no settings (an emptied file?)"]),
    # a network value the constructor fails on deep inside, naming no key
    (lambda t: re.sub(r"(?m)^  blocks_down: .*$", "  blocks_down: abc", t),
     ["network#blocks_down: abc: expected a list of whole numbers >= 1"]),
    (lambda t: re.sub(r"(?m)^  blocks_down: .*$", '  blocks_down: "$@foo"', t),
     ["network#blocks_down '$@foo': a MONAI expression or reference"]),
])
def test_a_hand_edited_bundle_config_is_named_before_training(generated, tmp_path, capsys, edit, words):
    """The README invites editing a bundle's YAML: a value training would fail on is one message
    naming the file and key before anything is trained or moved (was a traceback of the training
    process, after --force had moved the weights aside)."""
    work = tmp_path / "work"
    shutil.copytree(generated, work, ignore=shutil.ignore_patterns("segresnet_1"))
    hp = work / "segresnet_0" / "configs" / "hyper_parameters.yaml"
    text = hp.read_text()
    hp.write_text(edit(text))
    end = len(text.splitlines()) + 2  # the line after the unclosed list: where the parser stops
    before = file_times(work)
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--force", *TINY_NET])
    said = capsys.readouterr()
    err = said.out + said.err  # found by the preflight: that bundle is reported failed (the others would train)
    assert rc in (1, 2) and "Traceback" not in err and str(hp.parent) in err, err
    for w in words:
        assert w.format(end=end) in err
    assert file_times(work) == before and not (work / "segresnet_0" / "training.log").exists()
    # an override of the key wins over the file's value: then it trains
    if "num_epochs: abc" in hp.read_text():
        rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--override", "num_epochs=1", *TINY_NET])
        assert rc == 0, capsys.readouterr()


def test_an_emptied_bundle_config_is_named_before_the_overrides_are_checked(generated, tmp_path, capsys):
    """Without --force an emptied hyper_parameters.yaml was reported as "no key 'num_workers'"
    for the first override given."""
    work = tmp_path / "work"
    shutil.copytree(generated, work, ignore=shutil.ignore_patterns("segresnet_1"))
    hp = work / "segresnet_0" / "configs" / "hyper_parameters.yaml"
    hp.write_text("")
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), *TINY_NET])
    err = capsys.readouterr().err
    assert rc == 2 and f"{hp}: no settings (an emptied file?)" in err and "no key" not in err, err


@pytest.mark.parametrize("text, words", [("{{{\n", "input.yaml:2:1: not valid YAML"),
                                         ("name: x\n", "input.yaml records no datalist")])
def test_a_damaged_input_yaml_is_one_line(generated, tmp_path, capsys, text, words):
    work = tmp_path / "work"
    shutil.copytree(generated, work, ignore=shutil.ignore_patterns("segresnet_1"))
    (work / "input.yaml").write_text(text)
    rc = run_auto3dseg.main(["--mode", "submit", "--work_dir", str(work)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and words in err and "--datalist" in err


def test_generate_force_waits_for_no_run_that_uses_the_bundles(generated, tmp_path, capsys):
    """generate --force moved the bundles away while --mode oof predicted with them."""
    from auto3dseg.orchestration.locks import LockBusy, step_lock

    work = tmp_path / "work"
    shutil.copytree(generated, work)
    (work / "oof").mkdir()
    before = file_times(work)
    with step_lock(work / "oof", "oof"):
        with pytest.raises(LockBusy, match="--mode oof of .* is running in another process"):
            from auto3dseg.bundles.generate import generate

            src = yaml.safe_load((work / "input.yaml").read_text())
            generate(work, src["datalist"], src["dataroot"], algos=["segresnet"], force=True)
    assert (work / "segresnet_0" / "algo_object.json").is_file() and not (work / "replaced").exists()
    def bundles(files):  # input.yaml is rewritten with the same record; the bundles must not move
        return {k: v for k, v in files.items() if "/segresnet_" in k and not k.endswith(".lock")}

    assert bundles(file_times(work)) == bundles(before) and bundles(before)


def test_force_new_datalist_repoints_the_bundles_configs_too(converted, tmp_path, capsys):
    """input.yaml was re-pointed but each bundle's hyper_parameters.yaml still named the old
    datalist: training read the old data (or failed once it was gone, after --force moved the model)."""
    import shutil

    data, work, moved = tmp_path / "a", tmp_path / "work", tmp_path / "b"
    shutil.copytree(converted[0], data)
    common = ["--datalist", str(data / "datalist.json"), "--work_dir", str(work)]
    assert run_auto3dseg.main(["--mode", "analyze", *common, "--workers", "0"]) == 0
    assert run_auto3dseg.main(["--mode", "generate", *common, "--algos", "segresnet", "--num_fold", "1"]) == 0
    config = work / "segresnet_0" / "configs" / "hyper_parameters.yaml"
    config.write_text("# a comment the user wrote\n" + config.read_text())
    data.rename(moved)
    capsys.readouterr()
    assert run_auto3dseg.main(["--mode", "generate", "--work_dir", str(work), "--datalist",
                               str(moved / "datalist.json"), "--force_new_datalist", "--algos", "segresnet",
                               "--num_fold", "1"]) == 0
    assert "the bundles' configs name the new datalist" in capsys.readouterr().err
    hp = yaml.safe_load(config.read_text())
    assert hp["data_list_file_path"] == str((moved / "datalist.json").resolve())
    assert hp["dataroot"] == str(moved.resolve())
    assert config.read_text().startswith("# a comment the user wrote\n")
    assert not [line for line in config.read_text().splitlines() if str(data) in line and not line.startswith("#")]


def test_force_new_datalist_with_another_class_table_changes_nothing(generated, converted, tmp_path, capsys):
    """It re-pointed input.yaml, then refused: the work_dir stayed pointed at the wrong data."""
    work, other = tmp_path / "work", tmp_path / "other"
    shutil.copytree(generated, work)
    shutil.copytree(converted[0], other)
    dl = json.loads((other / "datalist.json").read_text())
    dl["class_table"] = dl["class_table"][::-1]  # the classes in another order
    (other / "datalist.json").write_text(json.dumps(dl))
    before = (work / "input.yaml").read_text()
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--datalist", str(other / "datalist.json"),
                             "--force_new_datalist"])
    err = capsys.readouterr().err
    assert rc == 2 and "has another class table than the bundles" in err and "nothing was changed" in err, err
    assert (work / "input.yaml").read_text() == before


# ----------------------------------------------------------------------------- training files rewritten after analyze
@pytest.fixture()
def own_data(converted, tmp_path) -> tuple[Path, Path, dict]:
    """A copy of the converted data, analysed and generated (untrained), and its first training item."""
    from pipeline_work import generate_work

    data = tmp_path / "nifti"
    shutil.copytree(converted[0], data)
    work = generate_work(data / "datalist.json", tmp_path / "work")
    return data, work, json.loads((data / "datalist.json").read_text())["training"][0]


def _rewrite(path: Path, change) -> None:
    img = nib.load(path)
    nib.save(nib.Nifti1Image(change(np.asarray(img.dataobj).copy()), img.affine, img.header), path)


def _label_40(a: np.ndarray) -> np.ndarray:
    a[0, 0, :4] = 40  # no class of the class table
    return a


@pytest.mark.parametrize("key, change, says", [
    ("label", _label_40, "values [40] (training item 0)"),
    ("image", lambda a: np.stack([a, a], axis=-1), "is 4-D"),
], ids=["label_value_not_in_class_table", "image_made_4d"])
def test_training_files_rewritten_after_the_analysis_are_checked_at_train(own_data, capsys, key, change, says):
    """`--mode train --force` trained on a label holding 40 (as background) and on a 4-D image (a conv
    traceback naming no file): analyze refuses both, train never looked again."""
    data, work, item = own_data
    _rewrite(data / item[key], change)
    rc = run_auto3dseg.main(["--mode", "train", "--work_dir", str(work), "--fold", "0", "--force", *TINY_NET])
    err = capsys.readouterr().err
    assert rc == 2 and "were rewritten since the analysis" in err and says in err, err
    assert str(data / item[key]) in err and "run --mode analyze" in err and "Traceback" not in err
    assert not (work / "segresnet_0" / "training_done.json").exists() and not (work / "segresnet_0" / "model").exists()


def test_a_rewritten_training_file_the_analysis_accepts_is_a_note_at_train(own_data):
    from auto3dseg.analysis.recheck import recheck_rewritten
    from auto3dseg.orchestration.training_checks import recheck_training_files

    data, work, item = own_data
    assert recheck_rewritten(work, data / "datalist.json", data) == ([], [])
    _rewrite(data / item["label"], lambda a: a)  # saved again: the same values
    assert recheck_rewritten(work, data / "datalist.json", data) == ([item["label"]], [])
    said: list[str] = []
    recheck_training_files(work, said.append)
    assert len(said) == 1 and f"1 training file(s) were rewritten since the analysis ({item['label']})" in said[0]
    assert "--mode analyze, then --mode generate --force" in said[0]


def test_label_values_example_holds():
    import doctest

    from auto3dseg.analysis import recheck

    result = doctest.testmod(recheck)
    assert result.attempted >= 3 and result.failed == 0


def test_datastats_of_another_work_dir_is_refused_by_generate(converted, converted_cells, tmp_path, capsys):
    """The cells work_dir's datastats.yaml copied into a CellMap one: generate wrote 2-D, 3-channel
    bundles for 3-D EM (exit 0), and training failed in a transform traceback."""
    from auto3dseg.analysis.source_record import DATASTATS_SOURCE

    datalist = converted[0] / "datalist.json"
    work, cells_work = tmp_path / "work", tmp_path / "cells_work"
    for dl, w in ((datalist, work), (converted_cells[0] / "datalist.json", cells_work)):
        assert run_auto3dseg.main(["--mode", "analyze", "--datalist", str(dl), "--work_dir", str(w),
                                   "--workers", "0"]) == 0
    shutil.copy(cells_work / "datastats.yaml", work / "datastats.yaml")
    capsys.readouterr()
    generate = ["--mode", "generate", "--work_dir", str(work), "--datalist", str(datalist), "--algos", "segresnet",
                "--num_fold", "1", "--patch_size", "16", "--force"]
    assert run_auto3dseg.main(generate) == 2
    err = capsys.readouterr().err
    assert f"{work / 'datastats.yaml'} is not the file the analysis of" in err and "copied from another" in err, err
    assert "run --mode analyze" in err and not list(work.glob("segresnet_*"))
    record = json.loads((work / DATASTATS_SOURCE).read_text())  # a work_dir analysed before digests were kept
    (work / DATASTATS_SOURCE).write_text(json.dumps({k: v for k, v in record.items() if k != "datastats_sha1"}))
    assert run_auto3dseg.main(generate) == 2
    assert re.search(r"describes \d+ case\(s\), but .* has \d+ training item\(s\)", capsys.readouterr().err)
    assert run_auto3dseg.main(["--mode", "analyze", "--datalist", str(datalist), "--work_dir", str(work),
                               "--workers", "0"]) == 0  # analyses again, as the error says
    assert run_auto3dseg.main(generate) == 0
    assert bundle_hp(work, "segresnet_0")["input_channels"] == 1


def test_a_template_whose_algo_py_does_not_import_is_one_line(generated, tmp_path, capsys):
    """A syntax error in a custom template's scripts/algo.py ended generate in a pydoc traceback."""
    from auto3dseg.bundles.bundle_algo import TEMPLATES_DIR

    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR / "segresnet", templates / "segresnet")
    algo = templates / "segresnet" / "scripts" / "algo.py"
    good = algo.read_text()
    algo.write_text(good + "\ndef broken(:\n")
    work = tmp_path / "work"
    shutil.copytree(generated, work, ignore=shutil.ignore_patterns("segresnet_*"))
    generate = ["--mode", "generate", "--work_dir", str(work), "--algos", "segresnet", "--num_fold", "1",
                "--patch_size", "16", "--templates", str(templates)]
    assert run_auto3dseg.main(generate) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "segresnet/scripts/algo.py does not import (SyntaxError:" in err and "fix it in the template" in err
    algo.write_text(good)  # fixed: the next run copies the template again
    assert run_auto3dseg.main(generate) == 0 and (work / "segresnet_0" / "configs").is_dir()


def test_templates_at_an_unreachable_url_say_what_to_do_offline(generated, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(generated, work, ignore=shutil.ignore_patterns("segresnet_*"))
    rc = run_auto3dseg.main(["--mode", "generate", "--work_dir", str(work), "--algos", "segresnet", "--num_fold", "1",
                             "--templates", "http://127.0.0.1:9/templates.tar.gz"])
    err = capsys.readouterr().err
    assert rc == 2 and "no templates could be fetched (is this machine offline?)" in err, err
    assert "give their folder as --templates" in err and "check --algos" not in err
